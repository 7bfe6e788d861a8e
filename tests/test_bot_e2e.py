"""The real bot end to end against the local Discord-compatible server (REST + gateway on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from PIL import Image

from hxhbot.config import Settings
from hxhbot.discord.api import pointed_at
from hxhbot.discord.attachments import PARALLEL_DOWNLOADS
from hxhbot.discord.bot import STATUS, HxhBot, assembled
from hxhbot.engine.confidence import Calibration
from hxhbot.engine.index_lock import index_writer
from tests.conftest import SHAPES, encode, shape_image, write_shape_gallery
from tests.fake_discord.server import EPHEMERAL, GUILD_READY_TIMEOUT, FakeDiscord, RecordedRequest, bot_ready
from tests.hostile import png_bomb

pytestmark = pytest.mark.timeout(300)  # a hang guard: on a loaded 2-core machine a test can take minutes
CALLBACK = "/interactions/{interaction_id}/{token}/callback"
WEBHOOK_MESSAGE = "/webhooks/{app_id}/{token}/messages/{message_id}"
REACTION = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"


@pytest.fixture
async def server():
    # Discord allows 3 s to answer an interaction; a busy machine can stall this process's loop longer than
    # that, and the deadline is not what these tests check (tests/test_fake_discord.py does).
    fake = FakeDiscord(heartbeat_interval_ms=500, interaction_deadline=60.0)
    await fake.start()
    yield fake
    await fake.stop()


@contextlib.asynccontextmanager
async def running(server: FakeDiscord, settings: Settings) -> AsyncIterator[HxhBot]:
    """The bot connected to `server` with `settings`, closed on leaving."""
    with pointed_at(settings.discord_api_base):
        async with assembled(settings, guild_ready_timeout=GUILD_READY_TIMEOUT) as client:  # model, index loaded
            await client.login(server.token)  # runs setup_hook: cogs, command sync
            runner = asyncio.create_task(client.connect(reconnect=True))
            await server.wait_until_ready(timeout=60)
            await bot_ready(client)
            yield client
            await client.close()
            await asyncio.wait_for(runner, 60)


def _settings(server: FakeDiscord, gallery: Path, model_dir: Path, index_dir: Path) -> Settings:
    return Settings(
        discord_token=server.token,
        gallery_dir=gallery,
        model_dir=model_dir,
        index_dir=index_dir,
        feedback_db=index_dir.parent / "feedback.sqlite3",
        discord_api_base=server.api_base,
        watch_channel_ids=frozenset({server.channel_ids[1]}),
        confidence_threshold=0.0,
        cooldown_seconds=0,
        top_k=3,
    )


@pytest.fixture
async def bot(server: FakeDiscord, gallery: Path, model_dir: Path, tmp_path: Path):
    async with running(server, _settings(server, gallery, model_dir, tmp_path / "index")) as client:
        yield client


def _image(gallery: Path, character: str, number: int = 1) -> bytes:
    return (gallery / character / f"{number:02d}.jpg").read_bytes()


async def _whois(
    server: FakeDiscord, data: bytes, filename: str = "query.jpg", content_type: str = "image/jpeg", **options: object
):
    attachment = server.add_attachment(data, filename, content_type, **options)
    return await server.send_slash_command("whois", {"image": attachment})


def _embed(request) -> dict:
    return request.json["embeds"][0]


async def test_commands_are_synced(server: FakeDiscord, bot: HxhBot) -> None:
    identify = next(payload["d"] for payload in server.gateway_received if payload["op"] == 2)
    assert identify["presence"]["game"] == {"type": 4, "state": STATUS, "name": "Custom Status"}  # discord.py's key
    names = {(c["name"], c["type"]) for c in server.commands[None]}
    assert names == {
        ("whois", 1),
        ("Who is this?", 3),
        ("characters", 1),
        ("reindex", 1),
        ("review", 1),
        ("stats", 1),
        ("help", 1),
        ("train", 1),
    }
    permissions = {c["name"]: c.get("default_member_permissions") for c in server.commands[None]}
    assert int(permissions.pop("reindex")) == 1 << 5  # MANAGE_GUILD: Discord hides /reindex from members
    assert int(permissions.pop("train")) == 1 << 5
    assert {name for name, value in permissions.items() if value is not None and int(value) == 0} == {"review", "stats"}
    assert {permissions[name] for name in ("whois", "Who is this?", "characters", "help")} == {None}


async def test_whois_names_the_character_with_a_thumbnail(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    interaction = await _whois(server, _image(gallery, "Killua Zoldyck", 2))
    callback = await server.wait_for_callback(interaction.token)
    assert callback.json["type"] == 5  # deferred at once
    followup = await server.wait_for_followup(interaction.token, timeout=60)
    embed = _embed(followup)
    assert embed["title"] == "Killua Zoldyck" and embed["description"].endswith("%** sure")
    assert embed["thumbnail"]["url"] == "attachment://picture.jpg"  # the picture itself, boxes numbered
    assert Image.open(io.BytesIO(followup.files[0].data)).format == "JPEG"
    assert "Also possible" in [field["name"] for field in embed["fields"]]


async def test_a_spoiler_is_answered_privately_and_left_alone_in_watched_channels(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    interaction = await _whois(server, _image(gallery, "Gon Freecss"), "SPOILER_gon.jpg")
    deferred = (await server.wait_for_callback(interaction.token)).json
    answer = (await server.wait_for_followup(interaction.token, timeout=60)).json
    assert deferred["data"]["flags"] & EPHEMERAL and answer["flags"] & EPHEMERAL
    assert answer["embeds"][0]["title"] == "Gon Freecss"
    spoiler = server.add_attachment(_image(gallery, "Kurapika"), "SPOILER_k.jpg", "image/jpeg")
    message = await server.post_message(server.channel_ids[1], "guess who", attachments=[spoiler])
    await _processed(server, gallery)
    assert not [
        r
        for r in server.requests
        if r.params.get("message_id") == message["id"]
        or _replied_to(r) == message["id"]
        or r.route.endswith("/SPOILER_k.jpg")
    ]


async def test_unsure_answer_reveals_candidates_to_the_asker_only(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    bot.engine.settings = dataclasses.replace(bot.engine.settings, confidence_threshold=1.0, unknown_threshold=0.0)
    interaction = await _whois(server, _image(gallery, "Kurapika"))
    followup = await server.wait_for_followup(interaction.token, timeout=60)
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
    bot.engine.settings = dataclasses.replace(bot.engine.settings, confidence_threshold=1.0, unknown_threshold=1.0)
    interaction = await _whois(server, _image(gallery, "Kurapika"))
    embed = _embed(await server.wait_for_followup(interaction.token, timeout=60))
    assert embed["title"] == "No character I know" and "no character in my gallery" in embed["description"]


async def test_context_menu_on_a_message_with_an_image(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    attachment = server.add_attachment(_image(gallery, "Gon Freecss", 3), "gon.jpg", "image/jpeg")
    message = await server.post_message(server.channel_ids[0], "look", attachments=[attachment])
    interaction = await server.send_message_command("Who is this?", message)
    followup = await server.wait_for_followup(interaction.token, timeout=60)
    assert _embed(followup)["title"] == "Gon Freecss"
    forwarded = await server.post_message(server.channel_ids[0], forward=message)
    interaction = await server.send_message_command("Who is this?", forwarded)
    assert _embed(await server.wait_for_followup(interaction.token, timeout=60))["title"] == "Gon Freecss"
    sticker = server.add_sticker(encode(Image.open(io.BytesIO(_image(gallery, "Kurapika"))), "PNG"), "kurapika")
    posted = await server.post_message(server.channel_ids[0], stickers=[sticker])
    interaction = await server.send_message_command("Who is this?", posted)
    assert _embed(await server.wait_for_followup(interaction.token, timeout=60))["title"] == "Kurapika"
    assert [r.path for r in server.requests if r.route.startswith("/stickers/")] == [f"/stickers/{sticker['id']}.png"]
    lottie = await server.post_message(server.channel_ids[0], stickers=[server.add_sticker(b"{}", "wave", 3)])
    for unanswerable in (lottie, await server.post_message(server.channel_ids[0], "no picture here")):
        refused = await server.send_message_command("Who is this?", unanswerable)
        answer = await server.wait_for_callback(refused.token)
        assert answer.json["data"]["flags"] & EPHEMERAL and "no image" in answer.json["data"]["content"]


async def test_context_menu_answers_every_picture_of_a_message(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    images = [
        server.add_attachment(_image(gallery, "Gon Freecss", 3), "gon.jpg", "image/jpeg"),
        server.add_attachment(_image(gallery, "Kurapika")[:300], "broken.jpg", "image/jpeg"),
        server.add_attachment(_image(gallery, "Kurapika", 2), "kurapika.jpg", "image/jpeg"),
    ]
    message = await server.post_message(server.channel_ids[0], "three pictures", attachments=images)
    interaction = await server.send_message_command("Who is this?", message)
    answer = (await server.wait_for_followup(interaction.token, timeout=120)).json
    assert [(e["author"]["name"], e["title"]) for e in answer["embeds"]] == [
        ("Image 1", "Gon Freecss"),
        ("Image 3", "Kurapika"),
    ]
    assert {e["thumbnail"]["url"] for e in answer["embeds"]} == {
        "attachment://picture1.jpg",
        "attachment://picture3.jpg",
    }
    assert answer["content"].startswith("I couldn't read `broken.jpg`: ") and not answer.get("components")

    bot.engine.settings = dataclasses.replace(bot.engine.settings, confidence_threshold=1.0, unknown_threshold=0.0)
    interaction = await server.send_message_command("Who is this?", message)
    followup = await server.wait_for_followup(interaction.token, timeout=120)
    assert [e["title"] for e in followup.json["embeds"]] == ["Not sure who this is"] * 2
    buttons = [item for row in followup.json["components"] for item in row["components"]]
    assert [button["label"] for button in buttons] == ["Show candidates"]  # Right / Wrong: for one picture only
    click = await server.send_component(buttons[0]["custom_id"], server.messages[max(interaction.message_ids)])
    revealed = (await server.wait_for_callback(click.token)).json["data"]
    assert revealed["flags"] & EPHEMERAL and [e["author"]["name"] for e in revealed["embeds"]] == ["Image 1", "Image 3"]
    assert "Kurapika" in revealed["embeds"][1]["description"]

    spoiler = server.add_attachment(_image(gallery, "Gon Freecss"), "SPOILER_gon.jpg", "image/jpeg")
    hidden = await server.post_message(server.channel_ids[0], "one hidden", attachments=[images[2], spoiler])
    interaction = await server.send_message_command("Who is this?", hidden)
    deferred = (await server.wait_for_callback(interaction.token)).json
    answer = (await server.wait_for_followup(interaction.token, timeout=120)).json
    assert deferred["data"]["flags"] & EPHEMERAL and answer["flags"] & EPHEMERAL and len(answer["embeds"]) == 2

    bot.engine.search.settings = dataclasses.replace(bot.engine.search.settings, queue_size=0)  # every image: BusyError
    interaction = await server.send_message_command("Who is this?", message)
    busy = (await server.wait_for_followup(interaction.token, timeout=60)).json
    assert busy["flags"] & EPHEMERAL and busy["content"].startswith("The bot is busy with other images")


async def test_pictures_beyond_ten_are_counted_not_dropped(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    # ten attachments and two link previews: a reply holds ten embeds, so two are left, and the member is told
    broken = server.add_attachment(_image(gallery, "Kurapika")[:300], "broken.jpg", "image/jpeg")
    gon = server.add_attachment(_image(gallery, "Gon Freecss", 3), "gon.jpg", "image/jpeg")
    preview = {
        "type": "image",
        "url": "https://example.com/k.jpg",
        "thumbnail": {"url": "https://example.com/k.jpg", "proxy_url": gon["proxy_url"], "width": 96, "height": 96},
    }
    message = await server.post_message(
        server.channel_ids[0], "twelve", attachments=[gon] + [broken] * 9, embeds=[preview, preview]
    )
    interaction = await server.send_message_command("Who is this?", message)
    answer = (await server.wait_for_followup(interaction.token, timeout=120)).json
    assert [(e["author"]["name"], e["title"]) for e in answer["embeds"]] == [("Image 1", "Gon Freecss")]
    lines = answer["content"].splitlines()
    assert len(lines) == 10 and lines[-1] == "2 more pictures not looked at: I answer 10 pictures of a message at most."


async def test_a_picture_sent_in_a_direct_message_is_answered(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    dm = server.open_dm()
    picture = server.add_attachment(_image(gallery, "Kurapika"), "k.jpg", "image/jpeg")
    message = await server.post_message(dm, "who is this?", attachments=[picture])
    reply = await server.wait_for(lambda r: _replied_to(r) == message["id"], timeout=60)
    assert [e["title"] for e in reply.json["embeds"]] == ["Kurapika"] and len(reply.files) == 1
    assert [item["label"] for row in reply.json["components"] for item in row["components"]] == ["Right", "Wrong"]
    assert any(
        r.route == "/channels/{channel_id}/typing" and r.params["channel_id"] == str(dm) for r in server.requests
    )

    broken = server.add_attachment(_image(gallery, "Kurapika")[:300], "broken.jpg", "image/jpeg")
    message = await server.post_message(dm, "", attachments=[broken])
    reply = await server.wait_for(lambda r: _replied_to(r) == message["id"], timeout=60)
    assert reply.json["content"].startswith("I couldn't read `broken.jpg`: ") and not reply.json.get("embeds")

    await server.post_message(dm, "just words")  # no picture: no answer
    bot.settings = dataclasses.replace(bot.settings, cooldown_seconds=60)
    first, second = [await server.post_message(dm, "", attachments=[picture]) for _ in range(2)]
    replies = [await server.wait_for(lambda r, m=m: _replied_to(r) == m["id"], timeout=60) for m in (first, second)]
    assert replies[0].json["embeds"] and replies[1].json["content"].startswith("Slow down a little: try again in ")
    proxied = server.add_attachment(_image(gallery, "Kurapika", 2), "2.jpg", "image/jpeg")["proxy_url"]
    await server.unfurl(
        first,
        [
            {
                "type": "image",
                "url": "https://example.com/2.jpg",  # the same question, later
                "thumbnail": {"url": "https://example.com/2.jpg", "proxy_url": proxied},
            }
        ],
    )
    later = await server.wait_for(lambda r: _replied_to(r) == first["id"] and r is not replies[0], timeout=60)
    assert later.json["embeds"][0]["title"] == "Kurapika"  # not told to slow down
    assert sum(_replied_to(r) is not None for r in server.requests) == 5


async def test_an_avif_picture_is_answered(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    # browsers save much of the web's art as AVIF; Discord sends it as image/avif
    out = io.BytesIO()
    Image.open(io.BytesIO(_image(gallery, "Killua Zoldyck", 2))).save(out, "AVIF", quality=90)
    interaction = await _whois(server, out.getvalue(), "art.avif", "image/avif")
    assert _embed(await server.wait_for_followup(interaction.token, timeout=60))["title"] == "Killua Zoldyck"


async def test_user_install_lets_members_ask_where_the_bot_is_not(
    server: FakeDiscord, gallery: Path, model_dir: Path, tmp_path: Path
) -> None:
    elsewhere = server.add_foreign_channel()  # a server the bot was never invited to
    picture = server.add_attachment(_image(gallery, "Kurapika"), "k.jpg", "image/jpeg")
    settings = _settings(server, gallery, model_dir, tmp_path / "index")
    async with running(server, settings):  # by default the app is installed to servers only
        with pytest.raises(LookupError, match="member's account"):
            await server.send_slash_command("whois", {"image": picture}, channel_id=elsewhere)
    async with running(server, dataclasses.replace(settings, user_install=True)):
        installs = {command["name"]: command.get("integration_types") for command in server.commands[None]}
        assert installs == {
            "whois": [0, 1],
            "Who is this?": [0, 1],
            "characters": [0, 1],
            "help": [0, 1],
            "reindex": [0],
            "train": [0],
            "review": [0],
            "stats": [0],
        }  # the owner's commands: servers only
        interaction = await server.send_slash_command("whois", {"image": picture}, channel_id=elsewhere)
        assert _embed(await server.wait_for_followup(interaction.token, timeout=60))["title"] == "Kurapika"
        message = await server.post_message(elsewhere, "who is this?", attachments=[picture])
        asked = await server.send_message_command("Who is this?", message)
        followup = await server.wait_for_followup(asked.token, timeout=60)
        assert _embed(followup)["title"] == "Kurapika" and not any(_replied_to(r) for r in server.requests)


async def test_a_link_preview_is_answered(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    # a link to a picture whose address names no type (as Twitter's), previewed through Discord's proxy
    proxied = server.add_attachment(_image(gallery, "Kurapika"), "F3xYz", "image/jpeg")["proxy_url"]
    preview = {
        "type": "image",
        "url": "https://pbs.twimg.com/media/F3xYz",
        "thumbnail": {"url": "https://pbs.twimg.com/media/F3xYz", "proxy_url": proxied, "width": 96, "height": 96},
    }
    message = await server.post_message(server.channel_ids[1], "https://pbs.twimg.com/media/F3xYz", embeds=[preview])
    reply = await server.wait_for(lambda r: _replied_to(r) == message["id"], timeout=60)
    assert reply.json["embeds"][0]["title"] == "Kurapika"
    interaction = await server.send_message_command("Who is this?", message)
    assert _embed(await server.wait_for_followup(interaction.token, timeout=60))["title"] == "Kurapika"


async def test_a_spoilered_link_is_left_alone_in_watched_channels_and_answered_privately(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    proxied = server.add_attachment(_image(gallery, "Kurapika"), "hidden.jpg", "image/jpeg")["proxy_url"]
    link = "https://example.com/art/hidden.jpg"
    preview = {
        "type": "image",
        "url": link,
        "thumbnail": {"url": link, "proxy_url": proxied, "width": 96, "height": 96},
    }
    message = await server.post_message(server.channel_ids[1], f"who is it? ||{link}||", embeds=[preview])
    await _processed(server, gallery)
    assert not [
        r
        for r in server.requests
        if r.params.get("message_id") == message["id"]
        or _replied_to(r) == message["id"]
        or r.path.endswith("/hidden.jpg")
    ]  # no reaction, no reply, nothing downloaded
    interaction = await server.send_message_command("Who is this?", message)
    answer = (await server.wait_for_followup(interaction.token, timeout=60)).json
    assert answer["flags"] & EPHEMERAL and answer["embeds"][0]["title"] == "Kurapika"


async def test_a_link_preview_that_comes_later_is_answered(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    # a link Discord has not seen yet: the message comes without its preview, which an update adds a moment later
    proxied = server.add_attachment(_image(gallery, "Kurapika"), "1.jpg", "image/jpeg")["proxy_url"]
    preview = {
        "type": "image",
        "url": "https://example.com/art/1.jpg",
        "thumbnail": {"url": "https://example.com/art/1.jpg", "proxy_url": proxied, "width": 96, "height": 96},
    }

    async def handled(channel: int) -> None:  # the bot takes events in order: it has read every one before this
        interaction = await server.send_slash_command("help", channel_id=channel)
        await server.wait_for_callback(interaction.token)

    for channel in (server.channel_ids[1], server.open_dm()):  # a watched channel, a direct message
        message = await server.post_message(channel, "https://example.com/art/1.jpg")
        await handled(channel)
        await server.unfurl(message, [preview])
        reply = await server.wait_for(lambda r, m=message: _replied_to(r) == m["id"], timeout=60)
        assert reply.json["embeds"][0]["title"] == "Kurapika"
        await server.unfurl(message, [])  # an update adding no picture is no new question
        await handled(channel)
    # the preview may also come before the bot has read the message, which discord.py then shows updated: one answer
    message = await server.post_message(server.channel_ids[1], "https://example.com/art/1.jpg")
    await server.unfurl(message, [preview])
    await handled(server.channel_ids[1])
    await asyncio.wait_for(_idle(bot), 60)
    assert sum(_replied_to(r) is not None for r in server.requests) == 3


async def test_watched_channel_reacts_and_replies(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    watched = server.channel_ids[1]
    images = [
        server.add_attachment(_image(gallery, name), f"{n}.jpg", "image/jpeg")
        for n, name in enumerate(["Leorio Paradinight", "Kurapika"])
    ]
    message = await server.post_message(watched, "who are they", attachments=images)
    reaction = await server.wait_for(lambda r: r.route == REACTION and r.params["message_id"] == message["id"])
    assert reaction.params["emoji"] == "🔍"
    reply = await server.wait_for(lambda r: _replied_to(r) == message["id"], timeout=60)
    assert [e["title"] for e in reply.json["embeds"]] == ["Leorio Paradinight", "Kurapika"]
    assert len(reply.files) == 2 and not reply.json.get("content")

    forwarded = await server.post_message(
        watched, forward=await server.post_message(server.channel_ids[0], "elsewhere", attachments=[images[0]])
    )
    reply = await server.wait_for(lambda r: _replied_to(r) == forwarded["id"], timeout=60)
    assert reply.json["embeds"][0]["title"] == "Leorio Paradinight"

    thread = await server.add_thread(watched, "fan art")
    in_thread = await server.post_message(thread, "and this one", attachments=[images[1]])
    reply = await server.wait_for(lambda r: _replied_to(r) == in_thread["id"], timeout=60)
    assert reply.params["channel_id"] == str(thread) and reply.json["embeds"][0]["title"] == "Kurapika"

    elsewhere = await server.add_thread(server.channel_ids[0], "off topic")
    ignored = [
        await server.post_message(watched, "bot art", attachments=[images[0]], bot=True),
        await server.post_message(server.channel_ids[0], "unwatched", attachments=[images[0]]),
        await server.post_message(elsewhere, "unwatched thread", attachments=[images[0]]),
    ]
    await _processed(server, gallery)
    ignored_ids = {m["id"] for m in ignored}
    assert not [
        r for r in server.requests if r.params.get("message_id") in ignored_ids or _replied_to(r) in ignored_ids
    ]


async def test_watched_channels_are_checked_once_connected(
    server: FakeDiscord, gallery: Path, model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hxhbot.discord.cogs.watch")
    general, hunters = server.channel_ids
    server.deny(hunters, 1 << 6)  # Add Reactions
    settings = dataclasses.replace(
        _settings(server, gallery, model_dir, tmp_path / "index"), watch_channel_ids=frozenset({general, hunters, 1234})
    )

    async def logged() -> list[str]:
        while len(found := [r.getMessage() for r in caplog.records if r.name == "hxhbot.discord.cogs.watch"]) < 3:
            await asyncio.sleep(0.01)
        return found

    async with running(server, settings):
        found = await asyncio.wait_for(logged(), 60)
    assert sorted(found) == sorted(
        [
            "watching #general in Hunter Association",
            "watching #hunters in Hunter Association, but I lack Add Reactions there: give me them, or I cannot answer",
            "WATCH_CHANNEL_IDS: I see no channel 1234 in my servers; copy a channel's id "
            "(right-click it → Copy Channel ID) and invite me to its server",
        ]
    )


async def test_a_mention_is_no_command_error(
    server: FakeDiscord, bot: HxhBot, gallery: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await server.post_message(server.channel_ids[0], f"<@{server.bot_user_id}> hi")
    await server.post_message(server.channel_ids[1], f"<@{server.bot_user_id}> hello")
    await _processed(server, gallery)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_watched_channels_answer_a_member_once_every_cooldown(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    bot.settings = dataclasses.replace(bot.settings, cooldown_seconds=3600)
    watched, other = server.channel_ids[1], server.member_id + 1

    def picture(name: str) -> list[dict]:
        return [server.add_attachment(_image(gallery, name), f"{name}.jpg", "image/jpeg")]

    first = await server.post_message(watched, "who", attachments=picture("Kurapika"))
    await server.wait_for(lambda r: _replied_to(r) == first["id"], timeout=60)
    fetched = len([r for r in server.requests if r.route.startswith("/attachments/")])
    flood = [await server.post_message(watched, "and?", attachments=picture("Gon Freecss")) for _ in range(3)]
    link = await server.post_message(watched, "https://example.com/1.jpg")  # its preview comes later
    await server.unfurl(
        link,
        [
            {
                "type": "image",
                "url": "https://example.com/1.jpg",
                "thumbnail": {"url": "https://example.com/1.jpg", "proxy_url": picture("Gon Freecss")[0]["proxy_url"]},
            }
        ],
    )
    someone_else = await server.post_message(watched, "who", attachments=picture("Killua Zoldyck"), author_id=other)
    reply = await server.wait_for(lambda r: _replied_to(r) == someone_else["id"], timeout=60)  # every other handled
    assert reply.json["embeds"][0]["title"] == "Killua Zoldyck"
    slowed = {m["id"] for m in (*flood, link)}
    for message_id in slowed:
        await server.wait_for(lambda r, i=message_id: r.route == REACTION and r.params["message_id"] == i, timeout=60)
    reactions = [r for r in server.requests if r.route == REACTION and r.params["message_id"] in slowed]
    assert sorted((r.params["message_id"], r.params["emoji"]) for r in reactions) == sorted((i, "🐢") for i in slowed)
    assert not [r for r in server.requests if _replied_to(r) in slowed]
    assert len([r for r in server.requests if r.route.startswith("/attachments/")]) == fetched + 1  # Killua's only


async def test_watched_channel_says_busy(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    bot.engine.search.settings = dataclasses.replace(bot.engine.search.settings, queue_size=0)  # every image: BusyError
    image = server.add_attachment(_image(gallery, "Kurapika"), "k.jpg", "image/jpeg")
    message = await server.post_message(server.channel_ids[1], "who", attachments=[image])

    def reacted(emoji: str) -> Callable[[RecordedRequest], bool]:
        return lambda r: r.route == REACTION and r.params["message_id"] == message["id"] and r.params["emoji"] == emoji

    reactions = [await server.wait_for(reacted(emoji), timeout=60) for emoji in ("🔍", "⏳")]
    assert len(reactions) == 2
    assert not [r for r in server.requests if r.route == REACTION and r.params["emoji"] == "🤷"]
    assert not [r for r in server.requests if r.route.startswith("/attachments/")], "busy: nothing downloaded"


async def test_images_download_a_few_at_a_time(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    asked = [await _whois(server, _image(gallery, "Kurapika"), body_delay=2.0) for _ in range(3 * PARALLEL_DOWNLOADS)]
    for interaction in asked:
        assert _embed(await server.wait_for_followup(interaction.token, timeout=120))["title"] == "Kurapika"
    assert 1 <= server.most_downloading <= PARALLEL_DOWNLOADS


async def _processed(server: FakeDiscord, gallery: Path) -> None:
    """Post an image in the watched channel and wait for the bot's reply to it.

    Handling a message that needs no answer takes no I/O: by the time this later message is answered
    (a download, a decoding thread and a model call later), every earlier message has been handled.
    """
    image = server.add_attachment(_image(gallery, "Gon Freecss"), "sentinel.jpg", "image/jpeg")
    sentinel = await server.post_message(server.channel_ids[1], "sentinel", attachments=[image])
    await server.wait_for(lambda r: _replied_to(r) == sentinel["id"], timeout=60)


async def _idle(bot: HxhBot) -> None:
    """Until no request the bot has taken is still being answered."""
    while bot.in_flight:
        await asyncio.sleep(0.05)


def _replied_to(request) -> str | None:
    """The id of the message a recorded request replies to, if it posts a reply."""
    if request.method != "POST" or request.route != "/channels/{channel_id}/messages":
        return None
    reference = (request.json or {}).get("message_reference") or {}
    return str(reference["message_id"]) if "message_id" in reference else None


async def test_watched_channel_answers_each_picture_and_shrugs_at_the_unsure(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    bot.engine.settings = dataclasses.replace(bot.engine.settings, confidence_threshold=0.5, unknown_threshold=0.0)
    only_a_copy = Calibration((-1e4 * 0.9999, 1e4, 0.0, 0.0, 0.0), background=-1.0)  # only a copy is sure
    bot.engine.search.calibration = only_a_copy
    stripes = Image.new("RGB", (96, 96), "white")
    stripes.paste((0, 0, 0), (0, 0, 48, 96))
    watched = server.channel_ids[1]
    images = [
        server.add_attachment(_image(gallery, "Gon Freecss"), "gon.jpg", "image/jpeg"),
        server.add_attachment(encode(stripes), "stripes.jpg", "image/jpeg"),
    ]
    message = await server.post_message(watched, "two pictures", attachments=images)
    reply = await server.wait_for(
        lambda r: (
            r.method == "POST"
            and r.route == "/channels/{channel_id}/messages"
            and str((r.json or {}).get("message_reference", {}).get("message_id")) == message["id"]
        ),
        timeout=60,
    )
    assert [e["title"] for e in reply.json["embeds"]] == ["Gon Freecss"]
    assert reply.json["content"] == "Image 2: 🤷 not sure who this is."
    await server.wait_for(
        lambda r: r.route == REACTION and r.params["message_id"] == message["id"] and r.params["emoji"] == "🤷",
        timeout=60,
    )
    alone = await server.post_message(watched, "just stripes", attachments=[images[1]])
    await server.wait_for(
        lambda r: r.route == REACTION and r.params["message_id"] == alone["id"] and r.params["emoji"] == "🤷",
        timeout=60,
    )
    assert not [
        r
        for r in server.requests
        if r.route == "/channels/{channel_id}/messages"
        and r.method == "POST"
        and str((r.json or {}).get("message_reference", {}).get("message_id")) == alone["id"]
    ]


async def test_file_names_members_choose_neither_ping_nor_overflow_the_reply(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    name = "@everyone `look` " + "x" * 300 + ".jpg"
    broken = _image(gallery, "Kurapika")[:300]
    images = [server.add_attachment(_image(gallery, "Gon Freecss"), "gon.jpg", "image/jpeg")]
    images += [server.add_attachment(broken, f"{n} {name}", "image/jpeg") for n in range(9)]
    message = await server.post_message(server.channel_ids[1], "ten pictures", attachments=images)
    reply = await server.wait_for(lambda r: _replied_to(r) == message["id"], timeout=120)
    assert reply.status == 200, reply.response  # within Discord's 2000 characters of content
    assert reply.json["allowed_mentions"] == {"parse": []}  # no one, nor the member replied to
    lines = reply.json["content"].splitlines()
    assert len(lines) == 9 and all(line.count("`") == 2 and len(line) < 150 for line in lines), lines
    assert [e["title"] for e in reply.json["embeds"]] == ["Gon Freecss"]


async def test_reindex_is_owner_only_and_serves_meanwhile(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    refused = await server.send_slash_command("reindex")
    answer = await server.wait_for_callback(refused.token)
    assert answer.json["data"]["flags"] & EPHEMERAL and "owner" in answer.json["data"]["content"]
    assert not bot.engine.reindexing

    from tests.conftest import write_gallery

    write_gallery(gallery, per_character=3, characters={"Zushi": (250, 120, 0)})
    release = threading.Event()
    build = bot.engine.search._build
    bot.engine.search._build = lambda progress: (release.wait(30), build(progress))[1]  # hold the rebuild open
    owner = await server.send_slash_command("reindex", user_id=server.owner_id)
    started = await server.wait_for_callback(owner.token)
    assert started.json["data"]["flags"] & EPHEMERAL and bot.engine.reindexing
    whois = await _whois(server, _image(gallery, "Kurapika", 2))
    assert _embed(await server.wait_for_followup(whois.token, timeout=60))["title"] == "Kurapika"
    second = await server.send_slash_command("reindex", user_id=server.owner_id)
    busy = await server.wait_for_callback(second.token)
    assert busy.json["data"]["flags"] & EPHEMERAL and "already running" in busy.json["data"]["content"]
    release.set()
    done = await server.wait_for(
        lambda r: (
            r.route == WEBHOOK_MESSAGE
            and r.params["token"] == owner.token
            and "Index rebuilt" in (r.json or {}).get("content", "")
        ),
        timeout=60,
    )
    assert "5 characters, 19 images" in done.json["content"] and "gallery check" in done.json["content"]
    assert "confidence names from 0%, CONFIDENCE_THRESHOLD set by the owner" in done.json["content"]
    after = await _whois(server, _image(gallery, "Zushi", 2))
    assert _embed(await server.wait_for_followup(after.token, timeout=60))["title"] == "Zushi"


async def test_reindex_while_another_build_runs_is_refused(server: FakeDiscord, bot: HxhBot) -> None:
    with index_writer(bot.settings.index_dir):  # as `python -m hxhbot index` would hold it
        owner = await server.send_slash_command("reindex", user_id=server.owner_id)
        refusal = await server.wait_for_followup(owner.token, timeout=60)
    assert refusal.json["flags"] & EPHEMERAL
    assert f"Another index build is running (pid {os.getpid()})" in refusal.json["content"]
    assert "old index is still in use" in refusal.json["content"]


async def test_shutdown_abandons_a_rebuild_and_keeps_the_index(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    from tests.conftest import write_gallery

    index_dir = Path(bot.settings.index_dir)
    before = {path.name: path.read_bytes() for path in index_dir.iterdir() if path.name != ".lock"}
    write_gallery(gallery, per_character=3, characters={"Zushi": (250, 120, 0)})
    started, carry_on = threading.Event(), threading.Event()
    build = bot.engine.search._build

    def held(report):
        def first_image_then_wait(done: int, total: int) -> None:
            report(done, total)
            started.set()
            carry_on.wait(60)

        return build(first_image_then_wait)

    bot.engine.search._build = held
    owner = await server.send_slash_command("reindex", user_id=server.owner_id)
    await server.wait_for_callback(owner.token)
    assert await asyncio.to_thread(started.wait, 60)
    shutdown = asyncio.create_task(bot.shutdown())
    while not bot.draining:
        await asyncio.sleep(0)
    carry_on.set()
    told = await server.wait_for_followup(owner.token, timeout=60)
    assert "rebuild was abandoned, the old index kept" in told.json["content"]
    await asyncio.wait_for(shutdown, 30)
    assert {path.name: path.read_bytes() for path in index_dir.iterdir() if path.name != ".lock"} == before
    with index_writer(index_dir):  # the abandoned build let go of the lock
        pass


@pytest.mark.parametrize("case", ["not-an-image", "declared-too-big", "bomb", "truncated"])
async def test_bad_input_gets_a_private_message_and_the_bot_keeps_serving(
    server: FakeDiscord, bot: HxhBot, gallery: Path, case: str
) -> None:
    if case == "not-an-image":
        interaction = await _whois(server, b"just text", "notes.txt", "text/plain")
        expected = "is not an image"
    elif case == "declared-too-big":
        interaction = await _whois(server, _image(gallery, "Kurapika"), declared_size=50 * 1024 * 1024)
        expected = "the limit is 10.0 MB"
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
        message = (await server.wait_for_followup(interaction.token, timeout=60)).json
        await server.wait_for(
            lambda r: (
                r.method == "DELETE"
                and r.route == WEBHOOK_MESSAGE
                and r.params == {**r.params, "token": interaction.token, "message_id": "@original"}
            )
        )
    assert message["flags"] & EPHEMERAL and expected in message["content"], message
    good = await _whois(server, _image(gallery, "Gon Freecss"))
    assert _embed(await server.wait_for_followup(good.token, timeout=60))["title"] == "Gon Freecss"


async def test_resumes_after_the_gateway_drops(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    await server.drop_connection()
    resume = await server.wait_for_gateway_op(6, timeout=60)
    assert resume["d"]["session_id"]  # an interaction sent before the RESUME completes is replayed with it
    interaction = await _whois(server, _image(gallery, "Leorio Paradinight"))
    assert _embed(await server.wait_for_followup(interaction.token, timeout=60))["title"] == "Leorio Paradinight"


async def test_characters_lists_the_gallery(server: FakeDiscord, bot: HxhBot) -> None:
    interaction = await server.send_slash_command("characters")
    data = (await server.wait_for_callback(interaction.token)).json["data"]
    assert data["flags"] & EPHEMERAL
    assert data["embeds"][0]["title"] == "4 characters, 16 gallery images"
    assert "Gon Freecss — 4" in data["embeds"][0]["description"]


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_whois_recognises_new_pictures_with_a_pretrained_model(
    server: FakeDiscord, imagenet_model_dir: Path, tmp_path: Path
) -> None:
    """Real recognition: pictures the gallery does not hold, told apart by shape while colours are random.

    With untrained features (weights=None) the bot named 4 of these 8 right; with ImageNet's, nearly all.
    """
    gallery = write_shape_gallery(tmp_path / "gallery")
    settings = dataclasses.replace(_settings(server, gallery, imagenet_model_dir, tmp_path / "index"), batch_size=8)
    right = []
    async with running(server, settings):
        for kind, character in enumerate(SHAPES):
            for seed in (1000, 1001):
                interaction = await _whois(server, encode(shape_image(kind, seed)), f"{seed}.jpg")
                title = _embed(await server.wait_for_followup(interaction.token, timeout=60))["title"]
                right.append(title == character)
    assert sum(right) >= len(right) - 1, right


async def test_debug_logs_hold_no_interaction_token(
    server: FakeDiscord, bot: HxhBot, gallery: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    interaction = await _whois(server, _image(gallery, "Kurapika"))
    await server.wait_for_followup(interaction.token, timeout=60)
    ours = [record for record in caplog.records if not record.name.startswith("tests.")]  # not the fake's own log
    logged = "\n".join(record.getMessage() for record in ours)
    assert "INTERACTION_CREATE" in logged and f"/interactions/{interaction.id}/" in logged  # discord.py at DEBUG
    leaks = [line for line in logged.splitlines() if interaction.token in line or server.token in line]
    assert not leaks, leaks[:3]
