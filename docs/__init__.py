"""The project's documentation; `python -m docs.render` fills its tables from docs/results/*.json."""
