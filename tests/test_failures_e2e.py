"""What a member is told when something fails, end to end against the local Discord: a command, a button."""

from __future__ import annotations

import logging

import pytest

from hxhbot.discord.bot import HxhBot
from hxhbot.discord.tree import APOLOGY
from tests.conftest import COLOURS, character_image, encode
from tests.fake_discord.server import EPHEMERAL, FakeDiscord
from tests.test_bot_e2e import WEBHOOK_MESSAGE, _settings, bot, running, server  # noqa: F401 (fixtures)
from tests.test_feedback_e2e import SELECT, _answer, _components, _picked

pytestmark = pytest.mark.timeout(120)


def _failure(caplog: pytest.LogCaptureFixture, what: str) -> BaseException:
    """The exception of the one error line logged for `what`, with its traceback."""
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR and r.getMessage() == f"{what} failed"]
    assert record.exc_info and record.exc_info[2] is not None
    return record.exc_info[1]


def _broken(message: str):
    """A stand-in that fails as a bug would."""

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError(message)

    return fail


async def test_a_failing_command_is_logged_with_its_traceback_and_answered_with_the_apology(
    server: FakeDiscord, bot: HxhBot, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.engine, "characters", _broken("the index caught fire"))
    interaction = await server.send_slash_command("characters")
    told = (await server.wait_for_callback(interaction.token)).json["data"]
    assert told["flags"] & EPHEMERAL and told["content"] == APOLOGY
    assert str(_failure(caplog, "command characters")) == "the index caught fire"


async def test_a_failing_button_is_answered_with_the_same_apology_and_keeps_the_review_page(
    server: FakeDiscord, bot: HxhBot, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, message = await _answer(server, encode(character_image(COLOURS["Gon Freecss"], 99)))
    monkeypatch.setattr(bot.engine.feedback, "record", _broken("the database caught fire"))
    right = await server.send_component(_components(message)["Right"]["custom_id"], message)
    told = (await server.wait_for_callback(right.token)).json["data"]
    assert told["flags"] & EPHEMERAL and told["content"] == APOLOGY
    assert str(_failure(caplog, "FeedbackView")) == "the database caught fire"
    monkeypatch.undo()

    wrong = await server.send_component(_components(message)["Wrong"]["custom_id"], message)
    menu = _components((await server.wait_for_followup(wrong.token, timeout=20)).json)["Who is it?"]
    options = {option["label"]: option["value"] for option in menu["options"]}
    pick = await server.send_component(
        menu["custom_id"],
        server.messages[wrong.original_message_id],
        component_type=SELECT,
        values=[options["Kurapika"]],
    )
    await _picked(server, pick)  # the correction is stored
    review = await server.send_slash_command("review", user_id=server.owner_id)
    page = (await server.wait_for_callback(review.token)).json["data"]
    monkeypatch.setattr(bot.engine.feedback, "resolve", _broken("the review caught fire"))
    click = await server.send_component(
        _components(page)["Reject"]["custom_id"], server.messages[review.original_message_id], user_id=server.owner_id
    )
    told = (await server.wait_for_followup(click.token, timeout=20)).json
    assert told["flags"] & EPHEMERAL and told["content"] == APOLOGY
    assert str(_failure(caplog, "ReviewView")) == "the review caught fire"
    assert not [
        r
        for r in server.requests
        if r.method == "DELETE" and r.route == WEBHOOK_MESSAGE and r.params["token"] == click.token
    ]  # the review page stays
