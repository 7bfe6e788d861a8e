"""Image loading: every accepted kind decodes to RGB; every hostile file gives its typed error."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hxhbot.config import Settings
from hxhbot.engine import images
from hxhbot.engine.crops import load_views
from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.memory_budget import MemoryBudget
from tests import hostile
from tests.conftest import encode
from tests.hostile import SMALL_LIMIT, corpus, heavy

RED = (220, 20, 20)
ROOT = Path(__file__).parent.parent
DETECTOR = FaceDetector()
BOT_SIZE = 224  # the shipped model's input side: the bot decodes for it
SLACK_MB = 32  # a picture's views beside its decoding (faces, crops, arrays, preview), and the peak's noise: one
# code measured 4-7 MB apart in two clean clones (library pages first touched, huge-page rounding)
REFUSED_BEFORE_DECODING = (
    images.EmptyImageError,
    images.NotAnImageError,
    images.UnsupportedFormatError,
    images.TooManyPixelsError,
    images.TooManyScansError,
    images.AspectRatioError,
)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name,data,expected", corpus(), ids=[name for name, _, _ in corpus()])
def test_hostile_file_gives_its_typed_error(name: str, data: bytes, expected: type) -> None:
    with pytest.raises(expected) as raised:
        load_views(data, 32, DETECTOR, max_bytes=SMALL_LIMIT)
    message = str(raised.value)
    assert message and message[0].isupper() and message.endswith("."), message
    assert isinstance(raised.value, images.ImageError) and raised.value.reason == expected.reason


@pytest.mark.timeout(10)
def test_reading_a_file_never_waits_on_a_pipe_nor_reads_past_the_limit(tmp_path: Path) -> None:
    picture = tmp_path / "picture.png"
    picture.write_bytes(encode(Image.new("RGB", (8, 8), RED), "PNG"))
    assert images.read_image_file(picture, picture.stat().st_size) == picture.read_bytes()
    with pytest.raises(images.ImageTooLargeError, match=r"^The file is 0\.0 MB; the limit is 0\.0 MB\.$"):
        images.read_image_file(picture, picture.stat().st_size - 1)
    os.mkfifo(tmp_path / "pipe.jpg")
    for path, kind in ((tmp_path / "pipe.jpg", "a pipe"), (Path("/dev/zero"), "a device"), (tmp_path, "a folder")):
        with pytest.raises(images.NotAFileError, match=f"^This is {kind}, not an image file.$"):
            images.read_image_file(path)
    with pytest.raises(FileNotFoundError):
        images.read_image_file(tmp_path / "missing.jpg")


@pytest.mark.parametrize("name,data", heavy(), ids=[name for name, _ in heavy()])
def test_heavy_and_ordinary_pictures_are_accepted_by_the_bot(name: str, data: bytes) -> None:
    budget = MemoryBudget(Settings().decode_memory_bytes, 0.0)
    views = load_views(data, BOT_SIZE, DETECTOR, budget=budget, preview=True)  # the bot's default limits
    assert views.arrays.shape[1:] == (BOT_SIZE, BOT_SIZE, 3) and views.preview and budget.held == 0


def test_the_bots_limits_are_the_engines_defaults() -> None:
    settings = Settings()
    assert settings.max_image_bytes == images.DEFAULT_MAX_BYTES >= 10 * 1024 * 1024  # what Discord lets anyone send
    assert settings.max_image_pixels == images.DEFAULT_MAX_PIXELS
    assert settings.decode_memory_bytes == images.DEFAULT_MAX_DECODE_BYTES


def _measure(module: str, files: list[tuple[str, bytes, str]], tmp_path: Path, *options: str) -> list[dict]:
    """Write `files` (name, bytes, expected outcome) into `tmp_path` and run `python -m module` on them there."""
    for name, data, _ in files:
        (tmp_path / name).write_bytes(data)
    run = subprocess.run(
        [sys.executable, "-m", module, *options, *(name for name, *_ in files)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


@pytest.mark.timeout(900)  # as long as its subprocess may take on a slow host
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
def test_every_decoding_stays_within_what_it_reserved(tmp_path: Path) -> None:
    files = [(name, data, kind.__name__) for name, data, kind in corpus() if kind is not images.ImageTooLargeError]
    files += [(name, data, "accepted") for name, data in heavy()]  # at the default byte limit, not SMALL_LIMIT
    peaks = {row["file"]: row for row in _measure("tests.decode_peak", files, tmp_path, "--size", str(BOT_SIZE))}
    assert {name: row["outcome"] for name, row in peaks.items()} == {name: outcome for name, _, outcome in files}
    over = {name: row for name, row in peaks.items() if row["peak_mb"] > row["reserved_mb"] + SLACK_MB}
    assert not over, over
    unread = {kind.__name__ for kind in REFUSED_BEFORE_DECODING}
    assert all(row["reserved_mb"] == 0 for row in peaks.values() if row["outcome"] in unread), peaks
    assert peaks["grey-6000x6000.png"]["peak_mb"] > 30  # the 36 MB frame shows: the measure sees decoding


@pytest.mark.timeout(900)  # as long as its subprocess may take on a slow host
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
def test_32_hostile_pictures_in_flight_keep_the_bot_under_1_5_gb(tmp_path: Path) -> None:
    files = hostile.in_flight(32)
    # the shipped model, as the bot runs it; no wait is too long here, so every picture is read
    options = ("--model", str(ROOT / "model"), "--wait", "600")
    (figures,) = _measure("tests.flight_peak", files, tmp_path, *options)
    assert len(files) == 32 and figures["outcomes"] == {name: outcome for name, _, outcome in files}
    assert figures["peak_mb"] <= 1536, figures


def test_absurd_aspect_ratios_are_refused_before_decoding() -> None:
    with pytest.raises(images.AspectRatioError, match="30000×600 pixels; send one at most 20 times longer"):
        images.load_image(encode(Image.new("L", (30_000, 600)), "PNG"), 32)
    assert images.load_image(encode(Image.new("RGB", (2000, 100), RED), "PNG"), 32).shape == (32, 32, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_draft_size_shrinks_to_the_longer_side(fmt: str) -> None:
    decoded = images.decode_image(encode(Image.new("RGB", (3000, 1000), RED), fmt), draft_size=200)
    assert 200 <= decoded.width < 400 and decoded.height * 3 in range(decoded.width - 3, decoded.width + 4)
    assert np.allclose(decoded.getpixel((100, 30)), RED, atol=12)


def test_the_corpus_reaches_every_refusal_and_format_and_each_file_is_what_its_name_says() -> None:
    assert len(corpus()) + len(heavy()) >= 50
    assert {kind for _, _, kind in corpus()} == set(images.ImageError.__subclasses__()) - {images.NotAFileError}
    assert {Image.open(io.BytesIO(data)).format for _, data in heavy()} == set(images.SUPPORTED_FORMATS) | {"MPO"}
    damaged = {name.split(".")[1] for name, _, _ in corpus() if name.startswith("truncated.")}
    assert damaged == {"jpg", "mpo", "png", "webp", "avif", "gif", "bmp"}
    files = [(name, data) for name, data, _ in corpus()] + heavy()
    for name, data in files:
        declared = re.search(r"(\d+)x(\d+)\.", name)
        if declared:
            assert Image.open(io.BytesIO(data)).size == tuple(map(int, declared.groups())), name
        if name.startswith("many-scans."):
            assert data.count(b"\xff\xda") > 10 * images.MAX_JPEG_SCANS, name
        if name.endswith(".mpo"):
            assert data[:2] == b"\xff\xd8" and b"MPF\x00" in data[:200], name


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF", "GIF", "BMP"])
def test_supported_formats_decode_to_rgb(fmt: str) -> None:
    array = images.load_image(encode(Image.new("RGB", (40, 40), RED), fmt), 16)
    assert array.shape == (16, 16, 3) and array.dtype == np.float32
    assert np.allclose(array[8, 8], RED, atol=12)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_an_animation_is_read_from_its_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (20, 20), colour) for colour in (RED, (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], lossless=True)
    assert np.allclose(images.load_image(out.getvalue(), 8)[4, 4], RED, atol=12)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_orientation_is_applied_once(fmt: str) -> None:
    picture = Image.new("RGB", (40, 20), RED)
    picture.paste((0, 0, 255), (0, 0, 20, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    upright = images.decode_image(encode(picture, fmt, exif=exif.tobytes()))
    assert upright.size == (20, 40)
    assert upright.getpixel((10, 5))[2] > 200  # blue is now on top


def test_transparency_is_composited_on_neutral_grey() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    palette = Image.new("P", (10, 10), 0)
    palette.info["transparency"] = 0
    for picture, fmt in ((rgba, "PNG"), (palette, "PNG"), (rgba, "WEBP")):
        decoded = images.decode_image(encode(picture, fmt, lossless=True))
        assert decoded.mode == "RGB" and decoded.getpixel((5, 5)) == images.BACKGROUND, fmt


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("1", "BMP"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("LA", "PNG")])
def test_other_modes_become_rgb(mode: str, fmt: str) -> None:
    picture = Image.new(mode, (12, 12))
    if mode == "I;16":
        picture = Image.fromarray(np.full((12, 12), 65535, np.uint16))
    decoded = images.decode_image(encode(picture, fmt))
    assert decoded.mode == "RGB" and decoded.size == (12, 12)
    if mode == "I;16":
        assert decoded.getpixel((3, 3)) == (255, 255, 255)  # 16-bit white stays white


def test_letterbox_keeps_aspect_ratio() -> None:
    array = images.load_image(encode(Image.new("RGB", (80, 20), RED), "PNG"), 16)
    assert np.allclose(array[8, 8], RED, atol=12)  # the picture in the middle
    assert np.allclose(array[0, 8], images.BACKGROUND, atol=12)  # grey bands above and below


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = encode(Image.new("RGB", (300, 300), RED), "PNG")
    with pytest.raises(images.TooManyPixelsError, match="300×300"):
        images.load_image(data, 16, max_pixels=10_000)


@pytest.mark.parametrize("guard", ["scans", "memory"])
def test_a_jpeg_disguised_as_mpo_meets_every_jpeg_guard(guard: str) -> None:
    jpeg, error = {
        "scans": (hostile.many_scans_jpeg(), images.TooManyScansError),
        "memory": (hostile.big_jpeg(3000, 3000, progressive=True), images.TooManyPixelsError),  # coefficients: 27 MB
    }[guard]
    mpo = hostile.as_mpo(jpeg)
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    refusals = []
    for data in (jpeg, mpo):
        with pytest.raises(error) as raised:
            images.decode_image(data, draft_size=100, max_decode_bytes=16 << 20)
        refusals.append(str(raised.value))
    assert refusals[0] == refusals[1]
