"""/train end to end against the local Discord server: the owner starts it, members get answers meanwhile, /reindex
and a second /train are refused, the new model answers after; a failed run leaves the serving model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from hxhbot.discord.bot import HxhBot
from hxhbot.engine.model_dir import read_config, save_model_dir
from hxhbot.engine.owner_training import NICENESS
from tests.fake_discord.server import EPHEMERAL, FakeDiscord
from tests.test_bot_e2e import WEBHOOK_MESSAGE, _embed, _image, _settings, _whois, running, server  # noqa: F401
from training.model import build

pytestmark = pytest.mark.timeout(600)  # a hang guard: the bot starts, indexes twice, and a child runs


@pytest.fixture
def models(tmp_path: Path, imagenet_model_dir: Path) -> tuple[Path, Path]:
    """The serving model (a tiny tuned one, ImageNet's weights) and the one the stand-in training run produces."""
    serving, trained = tmp_path / "model", tmp_path / "trained"
    model = build("tuned", 32, weights="imagenet")
    save_model_dir(model, "tuned", serving)
    conv = model.get_layer("head").get_layer("Conv_1")
    conv.set_weights([w * 1.1 for w in conv.get_weights()])  # another top: another fingerprint
    save_model_dir(model, "tuned", trained, trained_on=["Kurapika"], trained_at="2026-12-06T21:30:00+00:00")
    return serving, trained


@pytest.fixture
async def bot(server: FakeDiscord, gallery: Path, models: tuple[Path, Path], tmp_path: Path):  # noqa: F811
    async with running(server, _settings(server, gallery, models[0], models[0] / "index")) as client:
        yield client


def _stand_in(bot: HxhBot, trained: Path, release: Path, *extra: str) -> None:
    """Make /train run tests/owner_training_child.py, which speaks the training command's protocol."""
    trainer = bot.get_cog("Train").trainer
    trainer.command = lambda out: [sys.executable, "-m", "tests.owner_training_child", "--out", str(out),
                                   "--model", str(trained), "--release", str(release), *extra]  # fmt: skip


async def _edit(server: FakeDiscord, token: str, text: str):
    return await server.wait_for(
        lambda r: (
            r.route == WEBHOOK_MESSAGE and r.params["token"] == token and text in (r.json or {}).get("content", "")
        ),
        timeout=120,
    )


async def test_train_serves_meanwhile_and_swaps_the_new_model_in(
    server: FakeDiscord,  # noqa: F811
    bot: HxhBot,
    gallery: Path,
    models: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    serving, trained = models
    release = tmp_path / "release"
    _stand_in(bot, trained, release)
    refused = await server.send_slash_command("train")
    answer = await server.wait_for_callback(refused.token)
    assert answer.json["data"]["flags"] & EPHEMERAL and "owner" in answer.json["data"]["content"]
    assert not bot.engine.search.training

    owner = await server.send_slash_command("train", user_id=server.owner_id)
    started = await server.wait_for_callback(owner.token)
    assert started.json["data"]["flags"] & EPHEMERAL and "Training the model" in started.json["data"]["content"]
    await _edit(server, owner.token, "Reading the pictures: 0/8 pictures")
    niceness = min(os.nice(0) + NICENESS, 19)  # 19 is the lowest priority: a test run at `nice -n 19` stays there
    assert bot.engine.search.training and int(release.with_suffix(".nice").read_text()) == niceness
    whois = await _whois(server, _image(gallery, "Kurapika", 2))  # a member meanwhile
    assert _embed(await server.wait_for_followup(whois.token, timeout=60))["title"] == "Kurapika"
    again = await server.send_slash_command("train", user_id=server.owner_id)
    assert "already going" in (await server.wait_for_callback(again.token)).json["data"]["content"]
    reindex = await server.send_slash_command("reindex", user_id=server.owner_id)
    told = await server.wait_for_callback(reindex.token)
    assert told.json["data"]["flags"] & EPHEMERAL and "The model is training" in told.json["data"]["content"]
    serving_print = bot.engine.search.embedder.fingerprint
    assert serving_print == read_config(serving).fingerprint != read_config(trained).fingerprint

    release.touch()
    done = await _edit(server, owner.token, "now serves")
    assert "+25.0 points" in done.json["content"] and "Index rebuilt: 4 characters" in done.json["content"]
    assert not bot.engine.search.training and bot.engine.search.embedder.fingerprint == read_config(trained).fingerprint
    assert read_config(serving).fingerprint == read_config(trained).fingerprint  # MODEL_DIR holds it now
    assert bot.engine.search.index.fingerprint == read_config(trained).fingerprint
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing staged left
    after = await _whois(server, _image(gallery, "Gon Freecss", 1))  # the new model answers
    assert _embed(await server.wait_for_followup(after.token, timeout=60))["title"] == "Gon Freecss"
    stats = await server.send_slash_command("stats", user_id=server.owner_id)
    shown = (await server.wait_for_callback(stats.token)).json["data"]["embeds"][0]["description"]
    assert "**Model:** trained on this gallery (1 character) on 2026-12-06 21:30 UTC" in shown


async def test_a_failed_run_leaves_the_serving_model_and_says_why(
    server: FakeDiscord,  # noqa: F811
    bot: HxhBot,
    models: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    serving, trained = models
    release = tmp_path / "release"
    release.touch()
    _stand_in(bot, trained, release, "--fail")
    before = {p.name: p.read_bytes() for p in serving.iterdir() if p.is_file()}
    owner = await server.send_slash_command("train", user_id=server.owner_id)
    failed = await _edit(server, owner.token, "Training failed")
    assert "training needs at least two" in failed.json["content"] and "serving model stays" in failed.json["content"]
    assert bot.engine.search.embedder.fingerprint == read_config(serving).fingerprint and not bot.engine.search.training
    assert {p.name: p.read_bytes() for p in serving.iterdir() if p.is_file()} == before
    assert bot.get_cog("Train").trainer.check_free() is None  # the next run may start
