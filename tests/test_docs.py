"""The docs' tables are rendered from docs/results, and every relative link in them leads somewhere."""

import json
import re
from pathlib import Path

import pytest

from docs import render

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_tables_are_current() -> None:
    assert render.main(["--check"]) == 0, "run python -m docs.render"


def test_a_block_is_filled_from_its_result_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = {
        "title": "T",
        "command": "python -m x",
        "protocol": "P.",
        "date": "2026-12-06",
        "columns": ["model", "top-1"],
        "rows": [["a|b", 0.5], ["c", 12.25]],
    }
    (tmp_path / "t.json").write_text(json.dumps(result))
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    page = "before\n<!-- table: t -->\nstale\n<!-- /table -->\nafter\n"
    assert render.render(page) == (
        "before\n<!-- table: t -->\n| model | top-1 |\n|---|---|\n| a\\|b | 0.500 |\n| c | 12.2 |\n\n"
        "*T.* P. Measured 2026-12-06 by `python -m x`.\n<!-- /table -->\nafter\n"
    )
    twice = render.render(page + page)
    assert twice.count("P. Measured") == 1 and "*T.* Protocol as for the first table of this page with it." in twice
    (tmp_path / "t.json").write_text(json.dumps(result | {"rows": [["only one cell"]]}))
    with pytest.raises(render.RenderError, match="1 cells for 2 columns"):
        render.render(page)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", render.pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target, anchor in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        path = page.parent / target
        if not path.exists() or (anchor and path.suffix == ".md" and anchor[1:] not in anchors(path)):
            broken.append(target + anchor)
    for anchor in re.findall(r"\]\((#[^)\s]+)\)", page.read_text()):
        if anchor[1:] not in anchors(page):
            broken.append(anchor)
    assert not broken, f"{page.relative_to(ROOT)} links to missing {broken}"


def test_readme_diagram_names_every_module() -> None:
    diagram = (ROOT / "README.md").read_text().split("## How it works", 1)[1].split("```")[1]
    modules = [p for p in (ROOT / "hxhbot").rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    missing = [str(p.relative_to(ROOT)) for p in modules if p.name not in diagram]
    assert not missing, f"README's diagram leaves out {missing}"
