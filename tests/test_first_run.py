"""First start with an empty gallery: collect (fake Jikan), index and serve, telling members meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from hxhbot.config import Settings
from hxhbot.discord.api import pointed_at
from hxhbot.discord.bot import assembled
from hxhbot.engine.first_run import MARKER, needs_collection
from tests.conftest import COLOURS, character_image, encode, write_gallery
from tests.fake_discord.server import EPHEMERAL, GUILD_READY_TIMEOUT, FakeDiscord, bot_ready
from tests.test_collect import FakeServer, fake  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(120)
CAST = {1: ("Freecss, Gon", "Gon Freecss"), 2: ("Zoldyck, Killua", "Killua Zoldyck"), 3: ("Kurapika", "Kurapika")}


def test_collects_only_into_an_empty_or_unfinished_gallery(tmp_path: Path) -> None:
    settings = Settings(gallery_dir=tmp_path / "gallery")
    assert needs_collection(settings)  # no gallery folder yet
    assert not needs_collection(dataclasses.replace(settings, collect_on_start=False))
    (tmp_path / "gallery").mkdir()
    assert needs_collection(settings)  # an empty folder
    write_gallery(tmp_path / "gallery", per_character=1)
    assert not needs_collection(settings)  # the owner's own gallery is left alone
    (tmp_path / "gallery" / MARKER).touch()
    assert needs_collection(settings)  # a first collection cut short resumes
    (tmp_path / "file").write_text("x")
    assert not needs_collection(dataclasses.replace(settings, gallery_dir=tmp_path / "file"))  # nothing to fill


async def test_first_start_collects_indexes_then_serves(
    fake: FakeServer,
    model_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    caplog.set_level(logging.INFO, logger="hxhbot.engine.first_run")
    for mal_id, (mal_name, name) in CAST.items():
        fake.add_character(
            mal_id, mal_name, "main", {f"{mal_id}-{n}.jpg": encode(character_image(COLOURS[name], n)) for n in range(3)}
        )
    fake.faults["/v4/characters/2/pictures"] = ["hold"]  # the collection waits here until released
    server = FakeDiscord(heartbeat_interval_ms=500)
    await server.start()
    gallery = tmp_path / "gallery"
    settings = Settings(
        discord_token=server.token,
        gallery_dir=gallery,
        model_dir=model_dir,
        index_dir=tmp_path / "index",
        feedback_db=tmp_path / "feedback.sqlite3",
        discord_api_base=server.api_base,
        confidence_threshold=0.0,
        cooldown_seconds=0,
        collect_base_url=fake.url("/v4"),
        collect_per_character=3,
    )
    with pointed_at(server.api_base):
        async with assembled(settings, guild_ready_timeout=GUILD_READY_TIMEOUT) as bot:
            await bot.login(server.token)
            runner = asyncio.create_task(bot.connect(reconnect=True))
            try:
                await bot_ready(bot, 20)
                await asyncio.wait_for(fake.entered_hang.wait(), 20)  # collecting: Gon done, Killua under way
                early = server.add_attachment(encode(character_image(COLOURS["Kurapika"], 1)), "k.jpg", "image/jpeg")
                asked = await server.send_slash_command("whois", {"image": early})
                told = (await server.wait_for_followup(asked.token, timeout=20)).json
                assert told["flags"] & EPHEMERAL and "still preparing" in told["content"]
                assert (gallery / MARKER).exists()

                fake.release.set()
                await asyncio.wait_for(bot.engine.preparing, 60)
                assert not (gallery / MARKER).exists()
                assert sorted(bot.engine.characters().items()) == [
                    ("Gon Freecss", 3),
                    ("Killua Zoldyck", 3),
                    ("Kurapika", 3),
                ]
                for name in ("Kurapika", "Killua Zoldyck"):
                    picture = server.add_attachment(encode(character_image(COLOURS[name], 2)), "q.jpg", "image/jpeg")
                    interaction = await server.send_slash_command("whois", {"image": picture})
                    answer = (await server.wait_for_followup(interaction.token, timeout=20)).json
                    assert answer["embeds"][0]["title"] == name
            finally:
                fake.release.set()
                await bot.close()
                await asyncio.wait_for(runner, 10)
                await server.stop()
    lines = [record.getMessage() for record in caplog.records if record.name == "hxhbot.engine.first_run"]
    assert lines[0].startswith("first start: collecting the default Hunter × Hunter gallery")
    assert "collecting the gallery: [2/3] Killua Zoldyck" in lines
    assert lines[-1].startswith("first start: ready to answer: 3 characters, 9 images")


async def test_bot_py_with_only_a_token_and_an_empty_gallery_reaches_a_serving_bot(
    fake: FakeServer,
    model_dir: Path,
    tmp_path: Path,  # noqa: F811
) -> None:
    """`make run` as an owner runs it, pointed at the local fakes: collect, index, answer, stop on SIGTERM."""
    import os
    import signal
    import sys

    for mal_id, (mal_name, name) in CAST.items():
        fake.add_character(
            mal_id, mal_name, "main", {f"{mal_id}-{n}.jpg": encode(character_image(COLOURS[name], n)) for n in range(2)}
        )
    server = FakeDiscord(heartbeat_interval_ms=500)
    await server.start()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DISCORD_", "COLLECT_"))}
    env.update(
        DISCORD_TOKEN=server.token,
        DISCORD_API_BASE=server.api_base,
        COLLECT_BASE_URL=fake.url("/v4"),
        GALLERY_DIR=str(tmp_path / "gallery"),
        INDEX_DIR=str(tmp_path / "index"),
        MODEL_DIR=str(model_dir),
        FEEDBACK_DB=str(tmp_path / "feedback.sqlite3"),
        CONFIDENCE_THRESHOLD="0",
    )
    root = Path(__file__).parent.parent
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "bot.py", cwd=root, env=env, stderr=asyncio.subprocess.PIPE
    )
    log: list[str] = []
    try:

        async def until(text: str) -> None:
            assert bot.stderr is not None
            while not any(text in line for line in log):
                line = await bot.stderr.readline()
                assert line, f"the bot exited before logging {text!r}:\n" + "".join(log[-20:])
                log.append(line.decode(errors="replace"))

        await asyncio.wait_for(until("first start: ready to answer"), 90)
        await server.wait_until_ready()
        picture = server.add_attachment(encode(character_image(COLOURS["Kurapika"], 1)), "k.jpg", "image/jpeg")
        interaction = await server.send_slash_command("whois", {"image": picture})
        assert (await server.wait_for_followup(interaction.token, timeout=20)).json["embeds"][0]["title"] == "Kurapika"
        bot.send_signal(signal.SIGTERM)
        await asyncio.wait_for(until("shut down cleanly"), 30)
        assert await asyncio.wait_for(bot.wait(), 30) == 0
    finally:
        if bot.returncode is None:
            bot.kill()
            await bot.wait()
        await server.stop()
    assert sorted(p.name for p in (tmp_path / "gallery").iterdir()) == [
        "Gon Freecss",
        "Killua Zoldyck",
        "Kurapika",
        "manifest.json",
    ]
    assert server.token not in "".join(log)
