"""A measurement's results file, docs/results/NAME.json, which `python -m docs.render` turns into a docs table."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path


def write_result(
    path: str | Path, title: str, command: str, protocol: str, columns: list[str], rows: list[list]
) -> None:
    """Write a result file for the docs (`python -m docs.render` turns it into a table), dated today."""
    result = {
        "title": title,
        "command": command,
        "protocol": protocol,
        "date": datetime.date.today().isoformat(),
        "columns": columns,
        "rows": rows,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


def publish(
    folder: Path,
    name: str,
    program: str,
    argv: list[str] | None,
    title: str,
    protocol: str,
    columns: list[str],
    rows: list[list],
) -> None:
    """Write `folder`/`name`.json with the command line of `program` (a module) that measured it, and say so."""
    command = f"python -m {program} " + " ".join(sys.argv[1:] if argv is None else argv)
    path = folder / f"{name}.json"
    write_result(path, title, command, protocol, columns, rows)
    print(f"wrote {path}")
