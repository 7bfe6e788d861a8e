"""Two Hunter × Hunter characters side by side in one picture, answered with both by the shipped model:
through the local Discord server (slash command and watched channel) and through the command line.

Real pictures from ../shared (never copied into the repository): the composite is made at test time.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hxhbot.config import Settings
from hxhbot.discord.bot import HxhBot
from tests.fake_discord.server import EPHEMERAL, FakeDiscord
from tests.test_bot_e2e import _whois, bot, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).parent.parent
LEFT = ("Gon Freecss", "DiThaNel__HunterxHunterCards__Gon.png")
RIGHT = ("Kurapika", "Augusto-Felipe__HunterXHunter__kurapika.png")
CHARACTERS = ("Chrollo Lucilfer", "Gon Freecss", "Kurapika")
PER_CHARACTER = 8


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The shipped model, with its calibration."""
    assert (ROOT / "model" / "calibration.json").is_file()
    return ROOT / "model"


@pytest.fixture
def gallery(hxh_dev: Path, tmp_path: Path) -> Path:
    """Eight other pictures of each of three characters, linked from ../shared."""
    root = tmp_path / "gallery"
    for character in CHARACTERS:
        (root / character).mkdir(parents=True)
        pictures = [p for p in sorted((hxh_dev / character).iterdir()) if p.name not in (LEFT[1], RIGHT[1])]
        for picture in pictures[:PER_CHARACTER]:
            (root / character / picture.name).symlink_to(picture)
    return root


@pytest.fixture
def composite(hxh_dev: Path) -> tuple[bytes, float]:
    """Gon and Kurapika pasted side by side at one height, as a JPEG, and where the two meet (share of the width)."""
    pictures = [Image.open(hxh_dev / character / name).convert("RGB") for character, name in (LEFT, RIGHT)]
    pictures = [p.resize((round(p.width * 400 / p.height), 400)) for p in pictures]
    canvas = Image.new("RGB", (sum(p.width for p in pictures), 400), "white")
    canvas.paste(pictures[0], (0, 0))
    canvas.paste(pictures[1], (pictures[0].width, 0))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=90)
    return out.getvalue(), pictures[0].width / canvas.width


async def test_both_characters_through_discord(
    server: FakeDiscord, bot: HxhBot, composite: tuple[bytes, float]
) -> None:
    bot.engine.settings = dataclasses.replace(
        bot.engine.settings,
        confidence_threshold=Settings.confidence_threshold,
        unknown_threshold=Settings.unknown_threshold,
    )  # the defaults
    interaction = await _whois(server, composite[0], "two.jpg")
    followup = await server.wait_for_followup(interaction.token, timeout=60)
    embed = followup.json["embeds"][0]
    assert embed["title"] == "Gon Freecss, Kurapika", embed
    lines = embed["description"].splitlines()
    assert lines[0].startswith("**1.** Gon Freecss — ") and lines[1].startswith("**2.** Kurapika — ")
    assert embed["thumbnail"]["url"] == "attachment://picture.jpg"
    preview = Image.open(io.BytesIO(followup.files[0].data))
    assert preview.format == "JPEG" and max(preview.size) <= 320
    buttons = [item["label"] for row in followup.json["components"] for item in row["components"]]
    assert buttons == ["Right", "Wrong"]  # confident: about the picture's top answer

    watched = server.channel_ids[1]
    attachment = server.add_attachment(composite[0], "two.jpg", "image/jpeg")
    message = await server.post_message(watched, "who are they", attachments=[attachment])
    reply = await server.wait_for(
        lambda r: (
            r.method == "POST"
            and r.route == "/channels/{channel_id}/messages"
            and str((r.json or {}).get("message_reference", {}).get("message_id")) == message["id"]
        ),
        timeout=60,
    )
    assert [e["title"] for e in reply.json["embeds"]] == ["Gon Freecss, Kurapika"]


async def test_one_character_named_beside_one_it_cannot_name(
    server: FakeDiscord, bot: HxhBot, composite: tuple[bytes, float]
) -> None:
    scores = sorted(s.best.score for s in (await bot.engine.identify(composite[0])).sightings)
    assert scores[0] < scores[1]
    bot.engine.settings = dataclasses.replace(
        bot.engine.settings, confidence_threshold=sum(scores) / 2, unknown_threshold=0.0
    )
    interaction = await _whois(server, composite[0], "two.jpg")
    followup = await server.wait_for_followup(interaction.token, timeout=60)
    embed = followup.json["embeds"][0]
    assert "not sure (best guess" in embed["description"] and embed["title"] in RIGHT[0] + LEFT[0]
    assert embed["footer"]["text"] == "Show candidates reveals my guesses for those I can't name."
    buttons = {item["label"]: item for row in followup.json["components"] for item in row["components"]}
    assert set(buttons) == {"Show candidates", "Right", "Wrong"}
    message = server.messages[max(interaction.message_ids)]
    click = await server.send_component(buttons["Show candidates"]["custom_id"], message)
    revealed = (await server.wait_for_callback(click.token)).json["data"]
    assert revealed["flags"] & EPHEMERAL and [f["name"] for f in revealed["embeds"][0]["fields"]] == ["1.", "2."]


def test_both_characters_through_the_command_line(
    gallery: Path, composite: tuple[bytes, float], model_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "MODEL_DIR": str(model_dir), "INDEX_DIR": str(tmp_path / "index")}
    run = [sys.executable, "-m", "hxhbot"]
    built = subprocess.run(
        [*run, "index", "--gallery", str(gallery)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert built.returncode == 0 and "3 characters, 24 images" in built.stdout, built.stderr
    # the shipped model trained on these hxh-dev pictures (its split.json): the check never asks them
    assert "gallery check: no picture to ask" in built.stdout and "not fitted to this gallery" in built.stdout
    picture = tmp_path / "two.jpg"
    picture.write_bytes(composite[0])
    answer = subprocess.run(
        [*run, "whois", str(picture), "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert answer.returncode == 0, answer.stderr
    result = json.loads(answer.stdout)
    characters = result["characters"]
    scores = [c["matches"][0]["score"] for c in characters]
    assert scores == sorted(scores, reverse=True)  # the most confident first
    characters.sort(key=lambda c: c["box"][0])
    assert [c["matches"][0]["character"] for c in characters] == ["Gon Freecss", "Kurapika"]
    assert [c["outcome"] for c in characters] == ["named", "named"]
    left, right = (c["box"] for c in characters)
    seam = composite[1]
    assert left[0] < seam - 0.02 and right[2] > seam + 0.02 and left[0] < right[0], "each box on its own picture"
