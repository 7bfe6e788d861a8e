"""The real bot end to end against the local Discord-compatible server (REST + gateway on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
from pathlib import Path

import discord.gateway
import discord.http
import pytest
from PIL import Image

from hxhbot.bot import HxhBot
from hxhbot.confidence import Calibration
from hxhbot.config import Settings
from hxhbot.discord_api import point_discord_at
from tests.fake_discord.server import EPHEMERAL, FakeDiscord
from tests.conftest import encode
from tests.hostile import png_bomb

pytestmark = pytest.mark.timeout(120)
CALLBACK = "/interactions/{interaction_id}/{token}/callback"
WEBHOOK_MESSAGE = "/webhooks/{app_id}/{token}/messages/{message_id}"
REACTION = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"


@pytest.fixture
async def server():
    fake = FakeDiscord(heartbeat_interval_ms=500)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bot(server: FakeDiscord, gallery: Path, model_dir: Path, tmp_path: Path):
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    settings = Settings(
        discord_token=server.token, gallery_dir=gallery, model_dir=model_dir, index_dir=tmp_path / "index",
        feedback_db=tmp_path / "feedback.sqlite3", discord_api_base=server.api_base, watch_channel_ids=frozenset({server.channel_ids[1]}),
        confidence_threshold=0.0, cooldown_seconds=0, top_k=3,
    )
    point_discord_at(settings.discord_api_base)
    client = HxhBot(settings)
    await client.login(server.token)  # runs setup_hook: model, index, cogs, command sync
    runner = asyncio.create_task(client.connect(reconnect=True))
    await server.wait_until_ready()
    await asyncio.wait_for(client.wait_until_ready(), 10)
    yield client
    await client.close()
    await asyncio.wait_for(runner, 10)
    discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


def _image(gallery: Path, character: str, number: int = 1) -> bytes:
    return (gallery / character / f"{number:02d}.jpg").read_bytes()


async def _whois(server: FakeDiscord, data: bytes, filename: str = "query.jpg", content_type: str = "image/jpeg",
                 **options: object):
    attachment = server.add_attachment(data, filename, content_type, **options)
    return await server.send_slash_command("whois", {"image": attachment})


def _embed(request) -> dict:
    return request.json["embeds"][0]


async def test_commands_are_synced(server: FakeDiscord, bot: HxhBot) -> None:
    names = {(c["name"], c["type"]) for c in server.commands[None]}
    assert names == {("whois", 1), ("Who is this?", 3), ("characters", 1), ("reindex", 1), ("review", 1),
                     ("stats", 1), ("help", 1)}
    owner_only = {c["name"] for c in server.commands[None] if str(c["default_member_permissions"]) == "0"}
    assert owner_only == {"review", "stats"}  # hidden from members by default


async def test_whois_names_the_character_with_a_thumbnail(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    interaction = await _whois(server, _image(gallery, "Killua Zoldyck", 2))
    callback = await server.wait_for_callback(interaction.token)
    assert callback.json["type"] == 5  # deferred at once
    followup = await server.wait_for_followup(interaction.token, timeout=20)
    embed = _embed(followup)
    assert embed["title"] == "Killua Zoldyck" and embed["description"].endswith("%** sure")
    assert embed["thumbnail"]["url"] == "attachment://picture.jpg"  # the picture itself, boxes numbered
    assert Image.open(io.BytesIO(followup.files[0].data)).format == "JPEG"
    assert "Also possible" in [field["name"] for field in embed["fields"]]


async def test_unsure_answer_reveals_candidates_to_the_asker_only(server: FakeDiscord, bot: HxhBot,
                                                                  gallery: Path) -> None:
    bot.settings = dataclasses.replace(bot.settings, confidence_threshold=1.0, unknown_threshold=0.0)
    interaction = await _whois(server, _image(gallery, "Kurapika"))
    followup = await server.wait_for_followup(interaction.token, timeout=20)
    assert _embed(followup)["title"] == "Not sure who this is" and len(followup.files) == 1  # its preview
    button = followup.json["components"][0]["components"][0]
    assert button["label"] == "Show candidates"
    message = server.messages[max(interaction.message_ids)]
    other = await server.send_component(button["custom_id"], message, user_id=server.owner_id)
    refused = await server.wait_for_callback(other.token)
    assert refused.json["data"]["flags"] & EPHEMERAL and "Only the member who asked" in refused.json["data"]["content"]
    click = await server.send_component(button["custom_id"], message)
    reply = await server.wait_for_callback(click.token)
    assert reply.json["type"] == 4 and reply.json["data"]["flags"] & EPHEMERAL
    assert "Kurapika" in reply.json["data"]["embeds"][0]["description"]


async def test_no_character_i_know(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    bot.settings = dataclasses.replace(bot.settings, confidence_threshold=1.0, unknown_threshold=1.0)
    interaction = await _whois(server, _image(gallery, "Kurapika"))
    embed = _embed(await server.wait_for_followup(interaction.token, timeout=20))
    assert embed["title"] == "No character I know" and "no character in my gallery" in embed["description"]


async def test_context_menu_on_a_message_with_an_image(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    attachment = server.add_attachment(_image(gallery, "Gon Freecss", 3), "gon.jpg", "image/jpeg")
    message = await server.post_message(server.channel_ids[0], "look", attachments=[attachment])
    interaction = await server.send_message_command("Who is this?", message)
    followup = await server.wait_for_followup(interaction.token, timeout=20)
    assert _embed(followup)["title"] == "Gon Freecss"
    text_only = await server.post_message(server.channel_ids[0], "no picture here")
    refused = await server.send_message_command("Who is this?", text_only)
    answer = await server.wait_for_callback(refused.token)
    assert answer.json["data"]["flags"] & EPHEMERAL and "no image" in answer.json["data"]["content"]


async def test_watched_channel_reacts_and_replies(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    watched = server.channel_ids[1]
    images = [server.add_attachment(_image(gallery, name), f"{n}.jpg", "image/jpeg")
              for n, name in enumerate(["Leorio Paradinight", "Kurapika"])]
    message = await server.post_message(watched, "who are they", attachments=images)
    reaction = await server.wait_for(lambda r: r.route == REACTION and r.params["message_id"] == message["id"])
    assert reaction.params["emoji"] == "🔍"
    reply = await server.wait_for(
        lambda r: r.method == "POST" and r.route == "/channels/{channel_id}/messages"
        and str((r.json or {}).get("message_reference", {}).get("message_id")) == message["id"], timeout=20)
    assert [e["title"] for e in reply.json["embeds"]] == ["Leorio Paradinight", "Kurapika"]
    assert len(reply.files) == 2 and not reply.json.get("content")

    before = len(server.requests)
    await server.post_message(watched, "bot art", attachments=[images[0]], bot=True)
    await server.post_message(server.channel_ids[0], "unwatched", attachments=[images[0]])
    await asyncio.sleep(1.0)
    assert not [r for r in server.requests[before:] if r.route in (REACTION, "/channels/{channel_id}/messages")]


async def test_watched_channel_answers_each_picture_and_shrugs_at_the_unsure(
        server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    bot.settings = dataclasses.replace(bot.settings, confidence_threshold=0.5, unknown_threshold=0.0)
    bot.search.calibration = Calibration((-1e4 * 0.9999, 1e4, 0.0, 0.0, 0.0), background=-1.0)  # only a copy is sure
    stripes = Image.new("RGB", (96, 96), "white")
    stripes.paste((0, 0, 0), (0, 0, 48, 96))
    watched = server.channel_ids[1]
    images = [server.add_attachment(_image(gallery, "Gon Freecss"), "gon.jpg", "image/jpeg"),
              server.add_attachment(encode(stripes), "stripes.jpg", "image/jpeg")]
    message = await server.post_message(watched, "two pictures", attachments=images)
    reply = await server.wait_for(
        lambda r: r.method == "POST" and r.route == "/channels/{channel_id}/messages"
        and str((r.json or {}).get("message_reference", {}).get("message_id")) == message["id"], timeout=20)
    assert [e["title"] for e in reply.json["embeds"]] == ["Gon Freecss"]
    assert reply.json["content"] == "Image 2: 🤷 not sure who this is."
    await server.wait_for(lambda r: r.route == REACTION and r.params["message_id"] == message["id"]
                          and r.params["emoji"] == "🤷", timeout=20)
    alone = await server.post_message(watched, "just stripes", attachments=[images[1]])
    await server.wait_for(lambda r: r.route == REACTION and r.params["message_id"] == alone["id"]
                          and r.params["emoji"] == "🤷", timeout=20)
    assert not [r for r in server.requests if r.route == "/channels/{channel_id}/messages" and r.method == "POST"
                and str((r.json or {}).get("message_reference", {}).get("message_id")) == alone["id"]]


async def test_reindex_is_owner_only_and_serves_meanwhile(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    refused = await server.send_slash_command("reindex")
    answer = await server.wait_for_callback(refused.token)
    assert answer.json["data"]["flags"] & EPHEMERAL and "owner" in answer.json["data"]["content"]
    assert not bot.search.reindexing

    from tests.conftest import write_gallery

    write_gallery(gallery, per_character=3, characters={"Zushi": (250, 120, 0)})
    release = threading.Event()
    build = bot.search._build
    bot.search._build = lambda progress: (release.wait(30), build(progress))[1]  # hold the rebuild open
    owner = await server.send_slash_command("reindex", user_id=server.owner_id)
    started = await server.wait_for_callback(owner.token)
    assert started.json["data"]["flags"] & EPHEMERAL and bot.search.reindexing
    whois = await _whois(server, _image(gallery, "Kurapika", 2))
    assert _embed(await server.wait_for_followup(whois.token, timeout=20))["title"] == "Kurapika"
    second = await server.send_slash_command("reindex", user_id=server.owner_id)
    busy = await server.wait_for_callback(second.token)
    assert busy.json["data"]["flags"] & EPHEMERAL and "already running" in busy.json["data"]["content"]
    release.set()
    done = await server.wait_for(
        lambda r: r.route == WEBHOOK_MESSAGE and r.params["token"] == owner.token
        and "Index rebuilt" in (r.json or {}).get("content", ""), timeout=30)
    assert "5 characters, 19 images" in done.json["content"] and "gallery check" in done.json["content"]
    after = await _whois(server, _image(gallery, "Zushi", 2))
    assert _embed(await server.wait_for_followup(after.token, timeout=20))["title"] == "Zushi"


@pytest.mark.parametrize("case", ["not-an-image", "declared-too-big", "bomb", "truncated"])
async def test_bad_input_gets_a_private_message_and_the_bot_keeps_serving(
    server: FakeDiscord, bot: HxhBot, gallery: Path, case: str
) -> None:
    if case == "not-an-image":
        interaction = await _whois(server, b"just text", "notes.txt", "text/plain")
        expected = "is not an image"
    elif case == "declared-too-big":
        interaction = await _whois(server, _image(gallery, "Kurapika"), declared_size=50 * 1024 * 1024)
        expected = "the limit is 8.0 MB"
    elif case == "bomb":
        interaction = await _whois(server, png_bomb(), "bomb.png", "image/png")
        expected = "too many pixels"
    else:
        interaction = await _whois(server, _image(gallery, "Kurapika")[:300])
        expected = "damaged or cut short"
    callback = await server.wait_for_callback(interaction.token)
    if callback.json["type"] == 4:  # refused before deferring
        message = callback.json["data"]
    else:  # refused after download: the public placeholder goes, a private follow-up comes
        message = (await server.wait_for_followup(interaction.token, timeout=20)).json
        await server.wait_for(lambda r: r.method == "DELETE" and r.route == WEBHOOK_MESSAGE
                              and r.params == {**r.params, "token": interaction.token, "message_id": "@original"})
    assert message["flags"] & EPHEMERAL and expected in message["content"], message
    good = await _whois(server, _image(gallery, "Gon Freecss"))
    assert _embed(await server.wait_for_followup(good.token, timeout=20))["title"] == "Gon Freecss"


async def test_resumes_after_the_gateway_drops(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    await server.drop_connection()
    resume = await server.wait_for_gateway_op(6, timeout=20)
    assert resume["d"]["session_id"]
    await asyncio.sleep(0.2)
    interaction = await _whois(server, _image(gallery, "Leorio Paradinight"))
    assert _embed(await server.wait_for_followup(interaction.token, timeout=20))["title"] == "Leorio Paradinight"


async def test_characters_lists_the_gallery(server: FakeDiscord, bot: HxhBot) -> None:
    interaction = await server.send_slash_command("characters")
    data = (await server.wait_for_callback(interaction.token)).json["data"]
    assert data["flags"] & EPHEMERAL
    assert data["embeds"][0]["title"] == "4 characters, 16 gallery images"
    assert "Gon Freecss — 4" in data["embeds"][0]["description"]
