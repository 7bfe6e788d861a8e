"""Shared fixtures: a tiny untrained model directory and generated galleries (no network, no ../shared)."""

from __future__ import annotations

import io
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

TEST_INPUT_SIZE = 32
COLOURS = {
    "Gon Freecss": (40, 160, 60),
    "Killua Zoldyck": (200, 200, 230),
    "Kurapika": (230, 190, 40),
    "Leorio Paradinight": (40, 40, 120),
}


def character_image(colour: tuple[int, int, int], variant: int, size: int = 96) -> Image.Image:
    """A drawing in a character's colour: a background and a shape that moves with `variant`."""
    rng = np.random.default_rng(variant)
    image = Image.new("RGB", (size, size), tuple(int(c * 0.5) for c in colour))
    draw = ImageDraw.Draw(image)
    x, y = rng.integers(5, size // 3, 2)
    draw.ellipse([x, y, x + size // 2, y + size // 2], fill=colour)
    draw.rectangle([size - x - 10, size - y - 10, size - x, size - y], fill=(255 - colour[0], 0, colour[2]))
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    """Image → file bytes."""
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def write_gallery(root: Path, per_character: int = 4, characters: dict | None = None) -> Path:
    """Write a generated gallery, one folder per character."""
    for name, colour in (characters or COLOURS).items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for variant in range(per_character):
            (folder / f"{variant:02d}.jpg").write_bytes(encode(character_image(colour, variant)))
    return root


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    """A generated 4-character gallery."""
    return write_gallery(tmp_path / "gallery")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained MobileNetV2 feature model saved as a model directory (weights=None: offline)."""
    from hxhbot.model_dir import build_pretrained, save_model_dir

    directory = tmp_path_factory.mktemp("model")
    save_model_dir(build_pretrained(TEST_INPUT_SIZE, weights=None), "pretrained", directory)
    return directory


@pytest.fixture(scope="session")
def embedder(model_dir: Path):
    """The engine's embedder over `model_dir`."""
    from hxhbot.embedder import Embedder

    return Embedder.load(model_dir)


SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def hxh_dev() -> Path:
    """The shared real Hunter × Hunter pictures (`../shared/datasets/hxh-dev`, beside the checkout, as in CI)."""
    folder = SHARED / "datasets" / "hxh-dev"
    assert folder.is_dir(), f"{folder} is missing: tests need ../shared beside the checkout (see README, Tests)"
    return folder
