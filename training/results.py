"""A measurement's results file, docs/results/NAME.json, which `python -m docs.render` turns into a docs table."""

from __future__ import annotations

import datetime
import json
from pathlib import Path


def write_result(
    out: Path, name: str, title: str, command: str, protocol: str, columns: list[str], rows: list[list]
) -> Path:
    """Write `out`/`name`.json, dated today, and return its path."""
    result = {
        "title": title,
        "command": command,
        "protocol": protocol,
        "date": datetime.date.today().isoformat(),
        "columns": columns,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return path
