"""The one façade between engine and Discord: the engine opened, used and closed alone; no module calls back into the
bot for what the engine, the downloader or the open views do."""

from __future__ import annotations

import ast
from pathlib import Path

from hxhbot.config import Settings
from hxhbot.engine.facade import open_engine
from tests.conftest import COLOURS

DISCORD_SIDE = Path(__file__).resolve().parents[1] / "hxhbot" / "discord"


async def test_the_engine_is_opened_used_and_closed_without_discord(
    gallery: Path, model_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(
        gallery_dir=gallery, model_dir=model_dir, index_dir=tmp_path / "index", feedback_db=tmp_path / "f.sqlite3",
        confidence_threshold=0.0, top_k=3,
    )  # fmt: skip
    async with open_engine(settings) as engine:
        assert engine.preparing is None and engine.index_size() == (16, 4)
        assert engine.characters() == dict.fromkeys(sorted(COLOURS), 4)
        engine.check_ready()
        engine.check_room()
        result = await engine.identify((gallery / "Kurapika" / "01.jpg").read_bytes())
        assert result.best.character == "Kurapika" and len(result.matches) == 3
        engine.count_answer(result, 0.25)
        assert (engine.stats.answers, engine.stats.confident, engine.stats.latency(50)) == (1, 1, 0.25)
        assert await engine.feedback.call(engine.feedback.pending_count) == 0
    assert engine.search._batcher is None  # closed on leaving


def _runtime_imports(path: Path) -> set[str]:
    """The modules a file imports from when it runs (not those imported only for type checking)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    return {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and id(node) not in typing_only
    }


def test_only_the_cogs_entry_points_know_the_bot() -> None:
    importers = sorted(
        str(path.relative_to(DISCORD_SIDE))
        for path in DISCORD_SIDE.rglob("*.py")
        if path.name != "bot.py" and "hxhbot.discord.bot" in _runtime_imports(path)
    )
    assert importers == [
        "cogs/admin.py",
        "cogs/feedback.py",
        "cogs/help.py",
        "cogs/train.py",
        "cogs/watch.py",
        "cogs/whois.py",
    ]
