"""Shared fixtures: a tiny untrained model directory and generated galleries (no network, no ../shared)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("PYTEST_XDIST_WORKER"):  # a core per worker: one op spread over both would wait on the other
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

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


SHAPES = ("Gon Freecss", "Killua Zoldyck", "Kurapika", "Leorio Paradinight")  # a disc, stripes, checks, dots
IMAGENET_WEIGHTS = Path.home() / ".keras/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def shape_image(kind: int, seed: int, size: int = 128) -> Image.Image:
    """Shape `kind` of `SHAPES` (a disc, stripes, a checkerboard, dots) in random colours, placed by `seed`."""
    rng = np.random.default_rng(seed)
    background, colour = (tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    step = int(rng.integers(10, 20))
    if kind == 0:
        radius = int(rng.integers(30, 50))
        x, y = rng.integers(radius, size - radius, 2)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    elif kind == 1:
        for y in range(int(rng.integers(0, step)), size, step):
            draw.rectangle([0, y, size, y + step // 2], fill=colour)
    elif kind == 2:
        for y in range(0, size, step):
            for x in range(step * ((y // step) % 2), size, 2 * step):
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=colour)
    else:
        for x, y in rng.integers(0, size, (40, 2)):
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    return image


def write_shape_gallery(root: Path, per_character: int = 8) -> Path:
    """A gallery whose characters differ by shape only (colours are random): untrained features fail it."""
    for kind, name in enumerate(SHAPES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for variant in range(per_character):
            (root / name / f"{variant:02d}.jpg").write_bytes(encode(shape_image(kind, 100 * kind + variant)))
    return root


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
    from hxhbot.engine.model_dir import build_pretrained, save_model_dir

    directory = tmp_path_factory.mktemp("model")
    save_model_dir(build_pretrained(TEST_INPUT_SIZE, weights=None), "pretrained", directory)
    return directory


@pytest.fixture(scope="session")
def embedder(model_dir: Path):
    """The engine's embedder over `model_dir`."""
    from hxhbot.engine.embedder import Embedder

    return Embedder.load(model_dir)


SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def hxh_dev() -> Path:
    """The shared real Hunter × Hunter pictures (`../shared/datasets/hxh-dev`, beside the checkout, as in CI)."""
    folder = SHARED / "datasets" / "hxh-dev"
    assert folder.is_dir(), f"{folder} is missing: tests need ../shared beside the checkout (see README, Tests)"
    return folder


@pytest.fixture(scope="session")
def imagenet_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageNet MobileNetV2 features at 112 px, from Keras's cache filled from ../shared/keras (never downloaded)."""
    from hxhbot.engine.model_dir import build_pretrained, save_model_dir

    if not IMAGENET_WEIGHTS.is_file():
        cached = SHARED / "keras" / "models" / IMAGENET_WEIGHTS.name
        assert cached.is_file(), f"{cached} is missing: tests need ../shared beside the checkout"
        IMAGENET_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        staged = IMAGENET_WEIGHTS.with_name(f"{IMAGENET_WEIGHTS.name}.{os.getpid()}")  # workers copy it side by side
        shutil.copyfile(cached, staged)
        os.replace(staged, IMAGENET_WEIGHTS)  # where Keras's weights="imagenet" looks, as on a user's machine
    directory = tmp_path_factory.mktemp("imagenet")
    save_model_dir(build_pretrained(112, weights="imagenet"), "pretrained", directory)
    return directory
