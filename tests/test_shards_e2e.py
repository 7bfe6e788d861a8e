"""Two shards end to end against the local Discord: one process running both, or two bots with one shard each."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hxhbot.config import Settings
from hxhbot.discord.api import pointed_at
from hxhbot.discord.bot import HxhBot, assembled
from tests.fake_discord.server import GUILD_READY_TIMEOUT, FakeDiscord, bot_ready

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def server() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord(heartbeat_interval_ms=500, shard_count=2)
    await fake.start()
    with pointed_at(fake.api_base):
        yield fake
    await fake.stop()


@pytest.fixture
def settings(server: FakeDiscord, gallery: Path, model_dir: Path, tmp_path: Path) -> Settings:
    return Settings(
        discord_token=server.token,
        gallery_dir=gallery,
        model_dir=model_dir,
        index_dir=tmp_path / "index",
        feedback_db=tmp_path / "feedback.sqlite3",
        discord_api_base=server.api_base,
        confidence_threshold=0.0,
        cooldown_seconds=0,
    )


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[HxhBot]:
    """A connected bot, closed on exit."""
    async with assembled(settings, guild_ready_timeout=GUILD_READY_TIMEOUT) as client:
        await client.login(settings.discord_token)
        runner = asyncio.create_task(client.connect(reconnect=True))
        try:
            await bot_ready(client, 20)
            yield client
        finally:
            await client.close()
            await asyncio.wait_for(runner, 10)


async def _answer_in(server: FakeDiscord, guild_id: int, picture: bytes) -> str:
    """Ask /whois in a guild's channel; the character answered."""
    attachment = server.add_attachment(picture, "query.jpg", "image/jpeg")
    interaction = await server.send_slash_command(
        "whois", {"image": attachment}, channel_id=server.guild_channel_ids[guild_id][0]
    )
    followup = await server.wait_for_followup(interaction.token, timeout=20)
    return followup.json["embeds"][0]["title"]


def _identified_shards(server: FakeDiscord) -> list[list[int]]:
    return sorted(payload["d"]["shard"] for payload in server.gateway_received if payload.get("op") == 2)


async def test_one_process_runs_the_shards_discord_recommends(
    server: FakeDiscord, settings: Settings, gallery: Path
) -> None:
    async with running(settings) as bot:
        await server.wait_until_ready()
        assert any(r.route == "/gateway/bot" for r in server.requests)  # asked how many shards to run
        assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1] and _identified_shards(server) == [[0, 2], [1, 2]]
        assert {bot.get_guild(guild).shard_id for guild in server.guild_ids} == {0, 1}
        for guild, name in zip(server.guild_ids, ["Kurapika", "Gon Freecss"]):
            assert await _answer_in(server, guild, (gallery / name / "01.jpg").read_bytes()) == name
        assert bot.engine.stats.answers == 2


async def test_two_bots_each_run_their_shard_ids(server: FakeDiscord, settings: Settings, gallery: Path) -> None:
    first = dataclasses.replace(settings, shard_count=2, shard_ids=(0,))
    second = dataclasses.replace(settings, shard_count=2, shard_ids=(1,))
    async with running(first) as one, running(second) as two:  # the second loads the index the first built
        await server.wait_until_ready()
        assert not any(r.route == "/gateway/bot" for r in server.requests)  # SHARD_COUNT given: not asked
        assert _identified_shards(server) == [[0, 2], [1, 2]]
        assert [guild.id for guild in one.guilds] == [server.guild_ids[0]]
        assert [guild.id for guild in two.guilds] == [server.guild_ids[1]]
        picture = (gallery / "Leorio Paradinight" / "02.jpg").read_bytes()
        assert await _answer_in(server, server.guild_ids[1], picture) == "Leorio Paradinight"
        assert (one.engine.stats.answers, two.engine.stats.answers) == (0, 1)  # only the shard's own process answered
        assert await _answer_in(server, server.guild_ids[0], picture) == "Leorio Paradinight"
        assert (one.engine.stats.answers, two.engine.stats.answers) == (1, 1)
