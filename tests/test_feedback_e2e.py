"""Members teach the bot, end to end against the local Discord: Right/Wrong, a correction, /review, /stats, /help."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

from hxhbot.discord.bot import EXPIRED, HxhBot
from hxhbot.engine.feedback import FeedbackStore, Verdict
from hxhbot.engine.gallery import MAX_NAME
from hxhbot.engine.index_lock import index_writer
from tests.conftest import COLOURS, character_image, encode, write_gallery
from tests.fake_discord.server import EPHEMERAL, FakeDiscord, FakeInteraction
from tests.test_bot_e2e import WEBHOOK_MESSAGE, _replied_to, _settings, _whois, bot, running, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(120)
BUTTON, SELECT = 2, 3


def _components(data: dict) -> dict[str, dict]:
    """A message's buttons and menus by label (menus by placeholder)."""
    return {
        item.get("label") or item.get("placeholder"): item for row in data["components"] for item in row["components"]
    }


async def _answer(server: FakeDiscord, picture: bytes) -> tuple[FakeInteraction, dict, dict]:
    """Ask /whois; the interaction, the answer's embed and the answer message."""
    interaction = await _whois(server, picture)
    followup = await server.wait_for_followup(interaction.token, timeout=20)
    return interaction, followup.json["embeds"][0], server.messages[max(interaction.message_ids)]


async def _correct(server: FakeDiscord, picture: bytes, label: str | None) -> str:
    """Ask /whois about `picture`, press Wrong and pick `label` (None: the first other character); the thanks."""
    _, embed, message = await _answer(server, picture)
    wrong = await server.send_component(_components(message)["Wrong"]["custom_id"], message)
    menu = _components((await server.wait_for_followup(wrong.token, timeout=20)).json)["Who is it?"]
    options = {option["label"]: option["value"] for option in menu["options"]}
    label = label or next(name for name in sorted(options) if name != "Someone else")
    pick = await server.send_component(
        menu["custom_id"],
        server.messages[wrong.original_message_id],
        component_type=SELECT,
        values=[options[label]],
    )
    return (await _picked(server, pick))["content"]


async def _picked(server: FakeDiscord, pick: FakeInteraction) -> dict:
    """The correction menu's message once a pick is stored: the bot defers the pick, then edits its message."""
    edit = await server.wait_for(
        lambda r: r.route == WEBHOOK_MESSAGE and r.method == "PATCH" and r.params["token"] == pick.token, timeout=60
    )
    return edit.json


async def test_wrong_correction_review_approve_then_answered_right(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    picture = encode(character_image(COLOURS["Gon Freecss"], 99))
    _, embed, message = await _answer(server, picture)
    first = embed["title"]
    buttons = _components(message)
    assert set(buttons) == {"Right", "Wrong"}  # confident: no "Show candidates"

    wrong = await server.send_component(buttons["Wrong"]["custom_id"], message)
    deferred = (await server.wait_for_callback(wrong.token)).json
    assert deferred["type"] == 5 and deferred["data"]["flags"] & EPHEMERAL  # ranks the picture again, privately
    menu_reply = (await server.wait_for_followup(wrong.token, timeout=20)).json
    assert menu_reply["content"] == f"Who is it, if not {first}?"
    menu = _components(menu_reply)["Who is it?"]
    options = {option["label"]: option["value"] for option in menu["options"]}
    assert first not in options and "Someone else" in options and len(options) == 4  # 3 others + someone else
    chosen = next(name for name in sorted(options) if name != "Someone else")
    pick = await server.send_component(
        menu["custom_id"], server.messages[wrong.original_message_id], component_type=SELECT, values=[options[chosen]]
    )
    assert (await server.wait_for_callback(pick.token)).json["type"] == 6  # deferred: the picture is fetched again
    thanks = await _picked(server, pick)
    assert chosen in thanks["content"] and not thanks["components"]

    refused = await server.send_slash_command("review")
    assert "owner" in (await server.wait_for_callback(refused.token)).json["data"]["content"]
    review = await server.send_slash_command("review", user_id=server.owner_id)
    page = await server.wait_for_callback(review.token)
    assert page.json["data"]["flags"] & EPHEMERAL
    assert page.json["data"]["embeds"][0]["title"] == f"Is this {chosen}?"
    assert page.files[0].data == picture  # the member's picture, as they posted it
    approve = _components(page.json["data"])["Approve"]
    click = await server.send_component(
        approve["custom_id"], server.messages[review.original_message_id], user_id=server.owner_id
    )
    assert (await server.wait_for_callback(click.token)).json["type"] == 6
    done = await server.wait_for(
        lambda r: r.route == WEBHOOK_MESSAGE and r.method == "PATCH" and r.params["token"] == click.token, timeout=20
    )
    assert "No more corrections" in done.json["content"] and not done.json["components"]

    _, embed, _ = await _answer(server, picture)
    assert embed["title"] == chosen  # learnt, without a rebuild
    assert len(list((gallery / chosen).glob("*.jpg"))) == 5 and (gallery / "manifest.json").is_file()


async def test_direct_messages_answer_and_take_a_correction(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    # global commands are offered in the bot's DMs: no guild, no member, the user alone
    dm = server.open_dm()
    picture = encode(character_image(COLOURS["Gon Freecss"], 98))
    interaction = await server.send_slash_command(
        "whois", {"image": server.add_attachment(picture, "q.png", "image/png")}, channel_id=dm
    )
    first = (await server.wait_for_followup(interaction.token, timeout=20)).json["embeds"][0]["title"]
    message = server.messages[max(interaction.message_ids)]
    assert "guild_id" not in message and set(_components(message)) == {"Right", "Wrong"}
    wrong = await server.send_component(_components(message)["Wrong"]["custom_id"], message)
    menu = _components((await server.wait_for_followup(wrong.token, timeout=20)).json)["Who is it?"]
    chosen = next(option for option in menu["options"] if option["label"] not in (first, "Someone else"))
    pick = await server.send_component(
        menu["custom_id"], server.messages[wrong.original_message_id], component_type=SELECT, values=[chosen["value"]]
    )
    assert chosen["label"] in (await _picked(server, pick))["content"]
    review = await server.send_slash_command("review", user_id=server.owner_id)  # in the server
    page = (await server.wait_for_callback(review.token)).json["data"]
    embed = page["embeds"][0]
    assert embed["title"] == f"Is this {chosen['label']}?" and "server DM" in embed["footer"]["text"]

    posted = await server.post_message(
        dm,
        "and this one?",
        attachments=[server.add_attachment((gallery / "Kurapika" / "01.jpg").read_bytes(), "k.jpg", "image/jpeg")],
    )
    asked = await server.send_message_command("Who is this?", posted)
    assert (await server.wait_for_followup(asked.token, timeout=20)).json["embeds"][0]["title"] == "Kurapika"


async def test_names_as_long_as_a_gallery_takes_fit_every_reply(
    server: FakeDiscord, model_dir: Path, tmp_path: Path
) -> None:
    # the longest names a gallery takes; the fake refuses what Discord would
    names = {name.ljust(MAX_NAME, "!"): colour for name, colour in COLOURS.items()}
    gallery = write_gallery(tmp_path / "gallery", characters=names)
    async with running(server, _settings(server, gallery, model_dir, tmp_path / "index")):
        gon = next(name for name in names if name.startswith("Gon"))
        interaction, embed, message = await _answer(server, encode(character_image(COLOURS["Gon Freecss"], 99)))
        assert embed["title"] == gon
        wrong = await server.send_component(_components(message)["Wrong"]["custom_id"], message)
        menu_reply = await server.wait_for_followup(wrong.token, timeout=20)
        assert menu_reply.status == 200
        assert {option["label"] for option in _components(menu_reply.json)["Who is it?"]["options"]} == (
            set(names) - {gon}
        ) | {"Someone else"}
        listed = await server.send_slash_command("characters")
        assert (await server.wait_for_callback(listed.token)).status == 200
    assert all(request.status < 400 for request in server.requests), [
        (request.route, request.response) for request in server.requests if request.status >= 400
    ]


async def test_ten_pictures_of_long_names_fit_one_reply(server: FakeDiscord, model_dir: Path, tmp_path: Path) -> None:
    # twelve characters of the longest names, TOP_K at its most: ten answers' candidates exceed what one message holds
    colours = {f"{n:02d} ".ljust(MAX_NAME, "x"): (20 * n, 255 - 20 * n, 97 * n % 256) for n in range(12)}
    gallery = write_gallery(tmp_path / "gallery", characters=colours)
    settings = dataclasses.replace(_settings(server, gallery, model_dir, tmp_path / "index"), top_k=25)
    async with running(server, settings) as bot:
        images = [
            server.add_attachment(encode(character_image(colour, 99)), f"{n}.jpg", "image/jpeg")
            for n, colour in enumerate(list(colours.values())[:10])
        ]
        message = await server.post_message(server.channel_ids[1], "ten pictures", attachments=images)
        reply = await server.wait_for(lambda r: _replied_to(r) == message["id"], timeout=120)
        assert reply.status == 200 and len(reply.json["embeds"]) == 10, reply.response
        bot.engine.settings = dataclasses.replace(bot.engine.settings, confidence_threshold=1.0, unknown_threshold=0.0)
        interaction = await server.send_message_command("Who is this?", message)
        answer = await server.wait_for_followup(interaction.token, timeout=120)
        assert answer.status == 200 and len(answer.json["embeds"]) == 10
        click = await server.send_component(
            _components(answer.json)["Show candidates"]["custom_id"], server.messages[max(interaction.message_ids)]
        )
        revealed = await server.wait_for_callback(click.token)
        assert revealed.status == 200 and len(revealed.json["data"]["embeds"]) == 10, revealed.response


async def test_buttons_from_before_a_restart_say_they_no_longer_work(
    server: FakeDiscord, gallery: Path, model_dir: Path, tmp_path: Path
) -> None:
    settings = _settings(server, gallery, model_dir, tmp_path / "index")
    async with running(server, settings):
        _, _, message = await _answer(server, (gallery / "Kurapika" / "01.jpg").read_bytes())
    async with running(server, settings):
        click = await server.send_component(_components(message)["Right"]["custom_id"], message)
        data = (await server.wait_for_callback(click.token)).json["data"]
    assert data["flags"] & EPHEMERAL and data["content"] == EXPIRED


async def test_right_is_counted_once_and_stats_show_it(server: FakeDiscord, bot: HxhBot, gallery: Path) -> None:
    _, embed, message = await _answer(server, (gallery / "Kurapika" / "01.jpg").read_bytes())
    right = _components(message)["Right"]["custom_id"]
    for expected in ("Thanks, noted!", "already told me"):
        click = await server.send_component(right, message)
        data = (await server.wait_for_callback(click.token)).json["data"]
        assert data["flags"] & EPHEMERAL and expected in data["content"]

    stats = await server.send_slash_command("stats", user_id=server.owner_id)
    data = (await server.wait_for_callback(stats.token)).json["data"]
    text = data["embeds"][0]["description"]
    assert data["flags"] & EPHEMERAL and "**Answers:** 1 (100% confident)" in text and "p95" in text
    assert "16 images, 4 characters" in text
    assert "**Confidence:** names from 0%, CONFIDENCE_THRESHOLD set by the owner (the fit: names from 99%" in text
    assert f"{embed['title']} — 1 answers · ✅ 1 (100%) · ✖️ 0 (0%)" in data["embeds"][0]["fields"][0]["value"]
    refused = await server.send_slash_command("stats")
    assert "owner" in (await server.wait_for_callback(refused.token)).json["data"]["content"]


async def test_help_and_one_log_line_per_answer(
    server: FakeDiscord, bot: HxhBot, gallery: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="hxhbot.discord.messages")
    interaction = await server.send_slash_command("help")
    data = (await server.wait_for_callback(interaction.token)).json["data"]
    page = str(data["embeds"][0])
    assert data["flags"] & EPHEMERAL and "/whois" in page and "/review" in page and "**0%**" in page
    assert f"<#{server.channel_ids[1]}>" in page  # this server's watched channel
    elsewhere = await server.send_slash_command("help", channel_id=server.open_dm())
    assert "Watched channels" not in str((await server.wait_for_callback(elsewhere.token)).json["data"]["embeds"])

    picture = (gallery / "Gon Freecss" / "02.jpg").read_bytes()
    await _answer(server, picture)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("answer ")]
    assert len(lines) == 1
    assert f"server={server.guild_id} command=whois latency_ms=" in lines[0] and "top='Gon Freecss' score=" in lines[0]
    assert server.token not in caplog.text and "attachments/" not in lines[0]


async def test_someone_else_is_not_reviewed_and_reject_leaves_the_gallery_alone(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    assert "don't know that character" in await _correct(server, encode(character_image((9, 9, 9), 1)), "Someone else")
    review = await server.send_slash_command("review", user_id=server.owner_id)
    assert "No corrections" in (await server.wait_for_callback(review.token)).json["data"]["content"]

    await _correct(server, encode(character_image(COLOURS["Kurapika"], 50)), None)
    review = await server.send_slash_command("review", user_id=server.owner_id)
    page = (await server.wait_for_callback(review.token)).json["data"]
    click = await server.send_component(
        _components(page)["Reject"]["custom_id"], server.messages[review.original_message_id], user_id=server.owner_id
    )
    done = await server.wait_for(
        lambda r: r.route == WEBHOOK_MESSAGE and r.method == "PATCH" and r.params["token"] == click.token, timeout=20
    )
    assert done.json["content"].startswith("Rejected.") and len(bot.engine.search.index) == 16
    assert not (gallery / "manifest.json").exists()
    assert [review for *_, review in bot.engine.feedback.corrections()] == ["none", "rejected"]


async def test_watched_channel_reply_to_one_picture_has_the_buttons(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    watched = server.channel_ids[1]

    async def reply_to(*names: str) -> dict:
        images = [
            server.add_attachment((gallery / name / "03.jpg").read_bytes(), "p.jpg", "image/jpeg") for name in names
        ]
        message = await server.post_message(watched, "who", attachments=images)
        request = await server.wait_for(
            lambda r: (
                r.method == "POST"
                and r.route == "/channels/{channel_id}/messages"
                and str((r.json or {}).get("message_reference", {}).get("message_id")) == message["id"]
            ),
            timeout=20,
        )
        return request.response

    assert not (await reply_to("Gon Freecss", "Kurapika"))["components"]  # two answers: which one? no buttons
    reply = await reply_to("Killua Zoldyck")
    click = await server.send_component(_components(reply)["Right"]["custom_id"], reply)
    assert "Thanks" in (await server.wait_for_callback(click.token)).json["data"]["content"]
    assert bot.engine.feedback.verdicts() == {"Killua Zoldyck": (1, 0)}


async def test_wrong_fetches_the_picture_again_and_refuses_a_changed_one(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    attachment = server.add_attachment((gallery / "Gon Freecss" / "01.jpg").read_bytes(), "g.jpg", "image/jpeg")
    interaction = await server.send_slash_command("whois", {"image": attachment})
    await server.wait_for_followup(interaction.token, timeout=20)
    message = server.messages[max(interaction.message_ids)]
    server._files[int(attachment["id"])].data = (gallery / "Kurapika" / "01.jpg").read_bytes()  # swapped behind us
    wrong = await server.send_component(_components(message)["Wrong"]["custom_id"], message)
    told = (await server.wait_for_followup(wrong.token, timeout=20)).json
    assert told["flags"] & EPHEMERAL and "has changed since I answered" in told["content"]


async def test_review_buttons_answer_owners_only_and_wait_for_another_index_build(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    await _correct(server, encode(character_image(COLOURS["Kurapika"], 51)), None)
    review = await server.send_slash_command("review", user_id=server.owner_id)
    page = (await server.wait_for_callback(review.token)).json["data"]
    buttons, message = _components(page), server.messages[review.original_message_id]
    for label in ("Approve", "Reject"):  # a member who is not an owner clicks
        click = await server.send_component(buttons[label]["custom_id"], message)
        told = (await server.wait_for_callback(click.token)).json["data"]
        assert told["flags"] & EPHEMERAL and told["content"] == "Only the bot's owner can do that."
    assert [review for *_, review in bot.engine.feedback.corrections()] == ["pending"]

    with index_writer(bot.settings.index_dir):  # `python -m hxhbot index` is building
        click = await server.send_component(buttons["Approve"]["custom_id"], message, user_id=server.owner_id)
        told = (await server.wait_for_followup(click.token, timeout=20)).json
    assert told["flags"] & EPHEMERAL and "Another index build is running" in told["content"]
    assert [review for *_, review in bot.engine.feedback.corrections()] == ["pending"] and len(
        bot.engine.search.index
    ) == 16
    assert not (gallery / "manifest.json").exists()


async def test_a_correction_left_unreviewed_expires_with_its_picture(
    server: FakeDiscord, gallery: Path, model_dir: Path, tmp_path: Path
) -> None:
    settings = _settings(server, gallery, model_dir, tmp_path / "index")
    store = FeedbackStore.open(settings.feedback_db)
    old = Verdict(server.guild_id, 1, 2, 3, "a" * 64, "https://cdn/p.png", "Gon Freecss", 0.9, False, "Kurapika")
    store.record(old, b"picture")
    store.close()
    sqlite3.connect(settings.feedback_db).execute(
        "UPDATE feedback SET created_at = '2020-01-01T00:00:00Z'"
    ).connection.commit()
    async with running(server, settings) as bot:
        async with asyncio.timeout(60):  # expired as the bot starts
            while [review for *_, review in await bot.engine.feedback.call(bot.engine.feedback.corrections)] != [
                "expired"
            ]:
                await asyncio.sleep(0.1)
        assert await bot.engine.feedback.call(bot.engine.feedback.next_pending) is None


async def test_wrong_pressed_by_many_at_once_fetches_and_ranks_the_picture_once(
    server: FakeDiscord, bot: HxhBot, gallery: Path
) -> None:
    picture = encode(character_image(COLOURS["Gon Freecss"], 96))
    _, embed, message = await _answer(server, picture)
    wrong = _components(message)["Wrong"]["custom_id"]

    def fetched() -> int:
        return len([r for r in server.requests if r.route.startswith("/attachments/")])

    downloads = fetched()
    ranked = []
    rank = bot.engine.search.rank

    async def counted(data: bytes, top_k: int | None = None):
        ranked.append(top_k)
        return await rank(data, top_k)

    bot.engine.search.rank = counted  # type: ignore[method-assign]
    bot.settings = dataclasses.replace(bot.settings, cooldown_seconds=3600)
    members = [server.member_id, *(server.member_id + n for n in range(1, 8))]
    presses = await asyncio.gather(*(server.send_component(wrong, message, user_id=member) for member in members))
    menus = [(await server.wait_for_followup(press.token, timeout=60)).json for press in presses]
    assert {menu["content"] for menu in menus} == {f"Who is it, if not {embed['title']}?"}
    assert (
        len(ranked) == 1 and len([r for r in server.requests if r.route.startswith("/attachments/")]) == downloads + 1
    )
    assert not [view for view in bot.views for value in vars(view).values() if isinstance(value, bytes)]

    again = await server.send_component(wrong, message)  # the same member, within COOLDOWN_SECONDS
    told = (await server.wait_for_callback(again.token)).json["data"]
    assert told["flags"] & EPHEMERAL and told["content"].startswith("Slow down a little")
    assert len(ranked) == 1

    menu = _components(menus[0])["Who is it?"]
    chosen = menu["options"][0]
    pick = await server.send_component(
        menu["custom_id"],
        server.messages[presses[0].original_message_id],
        component_type=SELECT,
        values=[chosen["value"]],
    )
    assert chosen["label"] in (await _picked(server, pick))["content"]
    pending = bot.engine.feedback.next_pending()
    assert pending is not None and pending.data == picture  # fetched again for the correction, not kept meanwhile
