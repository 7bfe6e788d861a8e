"""Fill every `<!-- table: NAME -->` … `<!-- /table -->` block of the docs with docs/results/NAME.json as a table.

    python -m docs.render           # rewrite the blocks in place
    python -m docs.render --check   # exit 1, naming the files, if any block is stale (CI runs this)

A result file is what an evaluation or benchmark command writes:
`{"title", "command", "protocol", "date", "columns": [...], "rows": [[...], ...]}`; cells are strings or numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
PAGES = ("README.md", "training/README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


class RenderError(Exception):
    """A block names a result file that is missing or malformed."""


def cell(value: object) -> str:
    """One table cell: numbers as written, text with its pipes escaped."""
    if isinstance(value, float):  # shares with three decimals, other measures with one
        return f"{value:.3f}" if abs(value) < 1 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(result: dict, told: set[str] | None = None) -> str:
    """A result as a Markdown table with its provenance under it; a protocol already in `told` is not repeated."""
    columns = result["columns"]
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in result["rows"]:
        if len(row) != len(columns):
            raise RenderError(f"{result['title']!r}: a row has {len(row)} cells for {len(columns)} columns")
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    lines.append("")
    protocol = result["protocol"]
    if told is not None:
        protocol = "Protocol as for the first table of this page with it." if protocol in told else protocol
        told.add(result["protocol"])
    lines.append(f"*{result['title']}.* {protocol} Measured {result['date']} by `{result['command']}`.")
    return "\n".join(lines) + "\n"


def load(name: str) -> dict:
    """Read docs/results/NAME.json, checked for the keys a table needs."""
    path = RESULTS / f"{name}.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RenderError(f"{path.relative_to(ROOT)}: {exc}") from exc
    missing = {"title", "command", "protocol", "date", "columns", "rows"} - set(result)
    if missing:
        raise RenderError(f"{path.relative_to(ROOT)} lacks {', '.join(sorted(missing))}")
    return result


def render(text: str) -> str:
    """The page with every table block filled from its result file, each protocol written out once."""
    told: set[str] = set()
    return BLOCK.sub(lambda m: m.group(1) + table(load(m.group("name")), told) + m.group(4), text)


def pages() -> list[Path]:
    """Every Markdown page that may hold table blocks."""
    return sorted({path for pattern in PAGES for path in ROOT.glob(pattern)})


def main(argv: list[str] | None = None) -> int:
    """Render (or with --check, only compare) every page; 0 when all is current."""
    parser = argparse.ArgumentParser(prog="python -m docs.render", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    args = parser.parse_args(argv)
    stale = []
    try:
        for path in pages():
            text = path.read_text()
            new = render(text)
            if new != text:
                stale.append(str(path.relative_to(ROOT)))
                if not args.check:
                    path.write_text(new)
    except RenderError as exc:
        print(f"docs.render: {exc}", file=sys.stderr)
        return 2
    if args.check and stale:
        print("stale tables (run python -m docs.render): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
