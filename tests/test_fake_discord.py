"""The fake Discord against a real discord.py bot: login, command sync, commands, messages, RESUME, shutdown."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
from discord import app_commands
from discord.ext import commands

from hxhbot.discord.api import pointed_at
from tests.fake_discord import GUILD_READY_TIMEOUT, FakeDiscord, bot_ready

pytestmark = pytest.mark.timeout(120)  # a hang guard, generous for a loaded machine

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
CHANNEL_MESSAGES = "/channels/{channel_id}/messages"


@app_commands.command(name="identify", description="Who is in this picture?")
async def identify(interaction: discord.Interaction, image: discord.Attachment) -> None:
    await interaction.response.defer(thinking=True)
    data = await image.read()
    embed = discord.Embed(title="Gon Freecss", description=f"{len(data)} bytes of {image.content_type}")
    await interaction.followup.send(embed=embed, file=discord.File(io.BytesIO(data[::-1]), "result.png"))


@app_commands.context_menu(name="Identify character")
async def identify_message(interaction: discord.Interaction, message: discord.Message) -> None:
    names = ", ".join(a.filename for a in message.attachments)
    await interaction.response.send_message(f"{message.author.name} posted {names}", ephemeral=True)


class _Again(discord.ui.View):
    """A button under the bot's replies; no timeout, since Client.close() leaves view timeout tasks pending."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Again", custom_id="again")
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button[_Again]) -> None:
        await interaction.response.edit_message(content=f"clicked by {interaction.user.name}", view=None)


class _Bot(commands.Bot):
    """A minimal bot: the two commands above, and an on_message that reacts and replies."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents, guild_ready_timeout=GUILD_READY_TIMEOUT
        )

    async def setup_hook(self) -> None:
        self.tree.add_command(identify)
        self.tree.add_command(identify_message)
        await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        await message.add_reaction("\N{EYES}")
        await message.reply(f"seen: {message.content}", view=_Again())


@pytest.fixture
async def server() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    with pointed_at(fake.api_base):
        yield fake
    await fake.stop()


@pytest.fixture
async def bot(server: FakeDiscord) -> AsyncIterator[_Bot]:
    client = _Bot()
    await client.login(server.token)
    connection = asyncio.create_task(client.connect())
    await bot_ready(client, 10)
    yield client
    await client.close()
    await asyncio.wait_for(connection, 5)


def test_pointed_at_derives_the_gateway_and_the_assets_then_restores_them() -> None:
    def now() -> tuple:
        return discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.Asset.BASE

    saved = now()
    with pointed_at("https://discord.com/api/v10"):
        assert now() == saved
    with pointed_at("http://127.0.0.1:8123/api/v10/"):
        assert discord.http.Route.BASE == "http://127.0.0.1:8123/api/v10"
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:8123/gateway"
        assert discord.Asset.BASE == "http://127.0.0.1:8123"
    with pointed_at("https://example.test/api/v10"):
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "wss://example.test/gateway"
    with pytest.raises(ValueError):
        with pointed_at("ftp://example.test/api"):
            pass
    assert now() == saved


async def test_bot_logs_in_syncs_and_caches_the_guild(server: FakeDiscord, bot: _Bot) -> None:
    assert bot.user is not None and bot.user.id == server.bot_user_id
    assert bot.application_id == server.application_id
    assert (await bot.application_info()).owner.id == server.owner_id
    guild = bot.get_guild(server.guild_id)
    assert guild is not None and [c.id for c in guild.text_channels] == server.channel_ids
    assert {c["name"]: c["type"] for c in server.commands[None]} == {"identify": 1, "Identify character": 3}
    assert server.gateway_connections[0]["compress"] == "zlib-stream"
    assert server.gateway_received[0]["op"] in (1, 2)


async def test_slash_command_defers_then_follows_up_with_embed_and_file(server: FakeDiscord, bot: _Bot) -> None:
    attachment = server.add_attachment(PNG, "gon.png", "image/png")
    interaction = await server.send_slash_command("identify", {"image": attachment})

    callback = await server.wait_for_callback(interaction.token)
    assert callback.json == {"type": 5}
    followup = await server.wait_for_followup(interaction.token)
    assert followup.json["embeds"][0]["title"] == "Gon Freecss"
    assert followup.json["embeds"][0]["description"] == f"{len(PNG)} bytes of image/png"
    assert [(f.filename, f.data) for f in followup.files] == [("result.png", PNG[::-1])]
    answer = server.messages[interaction.original_message_id or 0]
    assert answer["flags"] == 0 and answer["attachments"][0]["filename"] == "result.png"
    assert any(r.path.startswith("/attachments/") for r in server.requests)


async def test_message_command_gets_the_target_message(server: FakeDiscord, bot: _Bot) -> None:
    attachment = server.add_attachment(PNG, "killua.png", "image/png")
    target = await server.post_message(server.channel_ids[1], "who?", attachments=[attachment], bot=True)
    interaction = await server.send_message_command("Identify character", target)

    callback = await server.wait_for_callback(interaction.token)
    assert callback.json["type"] == 4
    assert callback.json["data"]["content"] == "gon posted killua.png"
    assert callback.json["data"]["flags"] == 64


async def test_on_message_reacts_and_replies(server: FakeDiscord, bot: _Bot) -> None:
    message = await server.post_message(server.channel_ids[0], "hello")

    reaction = await server.wait_for(lambda r: r.method == "PUT" and "reactions" in r.route)
    assert reaction.params["message_id"] == message["id"] and reaction.params["emoji"] == "\N{EYES}"
    reply = await server.wait_for(lambda r: r.method == "POST" and r.route == CHANNEL_MESSAGES)
    assert reply.json["content"] == "seen: hello"
    assert str(reply.json["message_reference"]["message_id"]) == message["id"]
    assert reply.response["referenced_message"]["id"] == message["id"]


async def test_button_click_updates_the_message(server: FakeDiscord, bot: _Bot) -> None:
    await server.post_message(server.channel_ids[0], "click me")
    reply = (await server.wait_for(lambda r: r.method == "POST" and r.route == CHANNEL_MESSAGES)).response
    assert reply["components"][0]["components"][0]["custom_id"] == "again"

    interaction = await server.send_component("again", reply)
    callback = await server.wait_for_callback(interaction.token)
    assert callback.json["type"] == 7
    assert server.messages[int(reply["id"])]["content"] == "clicked by gon"
    assert server.messages[int(reply["id"])]["components"] == []


async def test_bot_resumes_after_a_dropped_connection(server: FakeDiscord, bot: _Bot) -> None:
    await server.drop_connection()
    missed = await server.post_message(server.channel_ids[0], "while you were away")

    resume = await server.wait_for_gateway_op(6)
    # READY and GUILD_CREATE were seen; the message, dispatched while disconnected, is replayed after RESUME.
    assert resume["d"]["session_id"] == bot.ws.session_id and resume["d"]["seq"] == 2
    reply = await server.wait_for(lambda r: r.route == CHANNEL_MESSAGES and r.json["content"].endswith("away"))
    assert str(reply.json["message_reference"]["message_id"]) == missed["id"]
    image = server.add_attachment(PNG, "again.png", "image/png")
    interaction = await server.send_slash_command("identify", {"image": image})
    assert (await server.wait_for_followup(interaction.token)).files[0].data == PNG[::-1]
    assert [p["op"] for p in server.gateway_received].count(2) == 1  # resumed, never re-identified


async def test_late_answers_are_refused_like_discord_does(server: FakeDiscord, bot: _Bot) -> None:
    server.interaction_deadline = 0.0
    interaction = await server.send_slash_command(
        "identify", {"image": server.add_attachment(PNG, "b.png", "image/png")}
    )

    callback = await server.wait_for_callback(interaction.token)
    assert (callback.status, callback.response["code"]) == (404, 10062)
    assert interaction.response_type is None


async def test_bot_closes_cleanly(server: FakeDiscord) -> None:
    client = _Bot()
    await client.login(server.token)
    connection = asyncio.create_task(client.connect())
    await asyncio.wait_for(client.wait_until_ready(), 10)
    await client.close()
    await asyncio.wait_for(connection, 5)
    assert connection.exception() is None
    await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert leftovers == []


async def test_rest_errors_are_discord_shaped_json(server: FakeDiscord) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bot {server.token}"}) as session:
        async with session.get(server.api_base + "/guilds/1/bans") as response:
            assert response.status == 404
            assert response.headers["Content-Type"] == "application/json"
            assert (await response.json())["code"] == 0
        async with session.get(server.api_base + "/users/@me", headers={"Authorization": "Bot wrong"}) as response:
            assert response.status == 401


async def test_messages_over_discords_limits_are_refused_like_discord_does(server: FakeDiscord) -> None:
    url = server.api_base + f"/channels/{server.channel_ids[0]}/messages"
    menu = {"type": 1, "components": [{"type": 3, "custom_id": "who", "options": [{"label": "L" * 100, "value": "1"}]}]}
    too_long = {
        "embed title over 256": {"embeds": [{"title": "T" * 257}]},
        "embed field 0 value over 1024": {"embeds": [{"title": "ok", "fields": [{"name": "n", "value": "v" * 1025}]}]},
        "embeds over 6000 characters together (7003)": {
            "embeds": [{"description": "d" * 4000, "fields": [{"name": "n", "value": "v" * 1000}] * 3}]
        },
        "embeds over 6000 characters together (6002)": {"embeds": [{"title": "t", "description": "d" * 3000}] * 2},
        "embed over 25 fields": {"embeds": [{"fields": [{"name": "n", "value": "v"}] * 26}]},
        "select option label not 1 to 100": {
            "components": [
                {
                    **menu,
                    "components": [{"type": 3, "custom_id": "who", "options": [{"label": "L" * 101, "value": "1"}]}],
                }
            ]
        },
        "content over 2000": {"content": "c" * 2001},
    }
    async with aiohttp.ClientSession(headers={"Authorization": f"Bot {server.token}"}) as session:
        for problem, body in too_long.items():
            async with session.post(url, json=body) as response:
                assert response.status == 400, problem
                assert await response.json() == {"code": 50035, "message": f"Invalid Form Body: {problem}"}
        async with session.post(
            url, json={"content": "c" * 2000, "embeds": [{"title": "T" * 256}], "components": [menu]}
        ) as response:
            assert response.status == 200


async def test_attachment_downloads_can_lie_and_stall(server: FakeDiscord) -> None:
    honest = server.add_attachment(PNG, "gon.png", "image/png", declared_size=1)
    short = server.add_attachment(PNG, "short.png", "image/png", content_length=10)
    slow = server.add_attachment(PNG, "slow.png", "image/png", body_delay=60.0)
    assert honest["size"] == 1
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=2.0)) as session:
        async with session.get(honest["url"]) as response:
            assert response.content_type == "image/png" and await response.read() == PNG
        async with session.get(short["url"]) as response:
            assert response.content_length == 10 and await response.read() == PNG[:10]
        async with session.get(slow["url"]) as response:
            with pytest.raises(asyncio.TimeoutError):
                await response.read()
