"""The serving copy: TensorFlow Lite made from the model directory, cached beside it, embedding as Keras does."""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from hxhbot.engine import model_dir as model_dir_module
from hxhbot.engine.crops import load_views
from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.embedder import Embedder
from hxhbot.engine.gallery import scan_gallery
from hxhbot.engine.images import TRUSTED_DECODE_BYTES, TRUSTED_MAX_BYTES
from hxhbot.engine.interpreter import LiteInterpreter
from hxhbot.engine.model_dir import (
    CONFIG_FILE,
    LITE_FILE,
    LITE_KEY_FILE,
    MODEL_FILE,
    build_pretrained,
    lite_model,
    read_config,
    save_model_dir,
)
from tests.conftest import TEST_INPUT_SIZE

pytestmark = pytest.mark.timeout(1200)  # each test converts a model: seconds on an idle machine, minutes on a busy one
SHIPPED = Path(__file__).resolve().parents[1] / "model"  # the repository's model: tuned+imagenet at 224 px
SAME = 0.9999  # least cosine between a view's TensorFlow Lite and Keras embeddings


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-by-row cosine of two sets of vectors."""
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def older_copy(model_dir: Path, to: Path) -> Path:
    """`model_dir` as saved before serving copies existed: its Keras model and config alone."""
    to.mkdir()
    for name in (MODEL_FILE, CONFIG_FILE):
        shutil.copyfile(model_dir / name, to / name)
    return to


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Six random 0–255 pictures at the test models' input size."""
    return np.random.default_rng(0).uniform(0, 255, (6, TEST_INPUT_SIZE, TEST_INPUT_SIZE, 3)).astype(np.float32)


def test_a_saved_model_directory_carries_its_serving_copy(model_dir: Path, images: np.ndarray) -> None:
    key = json.loads((model_dir / LITE_KEY_FILE).read_text())
    assert key["fingerprint"] == read_config(model_dir).fingerprint and key["tensorflow"] == tf.__version__
    served, keras = Embedder.load(model_dir), Embedder.load_keras(model_dir)
    assert isinstance(served.forward, LiteInterpreter)
    assert served.fingerprint == keras.fingerprint and served.dim == keras.dim == 1280
    assert cosines(served.embed(images), keras.embed(images)).min() >= SAME
    assert not list(model_dir.glob(".*.tmp"))  # written through renamed temporary files


def test_an_older_directory_is_converted_once_then_served_from_its_copy(
    model_dir: Path, tmp_path: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = older_copy(model_dir, tmp_path / "older")
    first = Embedder.load(older).embed(images)
    assert (older / LITE_FILE).read_bytes() == (model_dir / LITE_FILE).read_bytes()
    assert json.loads((older / LITE_KEY_FILE).read_text()) == json.loads((model_dir / LITE_KEY_FILE).read_text())

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Keras model was loaded although its serving copy is cached")

    monkeypatch.setattr(tf.keras.models, "load_model", refuse)
    assert np.array_equal(Embedder.load(older).embed(images), first)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "foreign", "key unreadable"])
def test_a_damaged_or_foreign_copy_is_remade_never_trusted(
    damage: str, model_dir: Path, tmp_path: Path, images: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    directory = older_copy(model_dir, tmp_path / "model")
    shutil.copyfile(model_dir / LITE_FILE, directory / LITE_FILE)
    shutil.copyfile(model_dir / LITE_KEY_FILE, directory / LITE_KEY_FILE)
    copy = (directory / LITE_FILE).read_bytes()
    if damage == "truncated":
        (directory / LITE_FILE).write_bytes(copy[: len(copy) // 2])
    elif damage == "flipped byte":  # a well-formed model with one weight changed: only the checksum tells
        (directory / LITE_FILE).write_bytes(copy[:-4096] + bytes([copy[-4096] ^ 1]) + copy[-4095:])
    elif damage == "foreign":  # another model's copy and its own, valid, key
        other = tmp_path / "other"
        save_model_dir(build_pretrained(TEST_INPUT_SIZE, weights=None), "pretrained", other)
        for name in (LITE_FILE, LITE_KEY_FILE):
            shutil.copyfile(other / name, directory / name)
    else:
        (directory / LITE_KEY_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger=model_dir_module.__name__):
        served = Embedder.load(directory).embed(images)
    assert "converting again" in caplog.text
    assert cosines(served, Embedder.load_keras(directory).embed(images)).min() >= SAME
    assert (directory / LITE_FILE).read_bytes() == copy  # remade, and kept for the next start
    assert json.loads((directory / LITE_KEY_FILE).read_text()) == json.loads((model_dir / LITE_KEY_FILE).read_text())


def test_a_folder_that_cannot_keep_the_copy_is_still_served(
    model_dir: Path,
    tmp_path: Path,
    images: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = older_copy(model_dir, tmp_path / "read-only")

    def refuse(path: Path, data: bytes) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(model_dir_module, "_write_atomically", refuse)
    with caplog.at_level(logging.WARNING, logger=model_dir_module.__name__):
        served = Embedder.load(directory).embed(images)
    assert "each load converts the model again" in caplog.text
    assert not (directory / LITE_FILE).exists() and not (directory / LITE_KEY_FILE).exists()
    assert cosines(served, Embedder.load_keras(directory).embed(images)).min() >= SAME


def test_a_picture_alone_gets_an_interpreter_of_its_own_that_agrees(model_dir: Path, images: np.ndarray) -> None:
    embedder = Embedder.load(model_dir, threads=2)
    assert isinstance(embedder.forward_alone, LiteInterpreter) and embedder.forward_alone is not embedder.forward
    assert cosines(embedder.embed(images[:1], alone=True), embedder.embed(images[:1])).min() >= 0.9999
    single = Embedder.load(model_dir, threads=1)
    assert single.forward_alone is single.forward


def test_the_interpreter_pads_its_last_batch_and_serves_one_caller_at_a_time(
    model_dir: Path, images: np.ndarray
) -> None:
    content = lite_model(model_dir)
    one = LiteInterpreter(content, TEST_INPUT_SIZE, threads=1)(images)
    by_four = LiteInterpreter(content, TEST_INPUT_SIZE, threads=1, batch=4)  # 6 views: a batch of 4, then 2 padded
    assert by_four(images).shape == (6, 1280) and np.allclose(by_four(images), one, atol=1e-5)
    assert by_four(images[:0]).shape == (0, 1280)
    shared = LiteInterpreter(content, TEST_INPUT_SIZE, threads=1)
    with ThreadPoolExecutor(4) as pool:  # the bot's model thread and an index build at once
        results = list(pool.map(lambda rows: shared(images[rows]), [slice(0, 3), slice(3, 6)] * 8))
    assert all(np.array_equal(result, one[rows]) for result, rows in zip(results, [slice(0, 3), slice(3, 6)] * 8))


def test_every_view_of_real_pictures_embeds_as_the_keras_model_does(hxh_dev: Path, tmp_path: Path) -> None:
    directory = older_copy(SHIPPED, tmp_path / "shipped")  # the composition the bot ships, converted here
    served, keras = Embedder.load(directory), Embedder.load_keras(directory)
    assert served.config.variant == "tuned+imagenet" and served.dim == keras.dim == 2560
    files, _ = scan_gallery(hxh_dev)
    views = [
        load_views(
            file.path.read_bytes(),
            served.input_size,
            FaceDetector(),
            max_bytes=TRUSTED_MAX_BYTES,
            max_decode_bytes=TRUSTED_DECODE_BYTES,
        ).arrays
        for file in files[::6]
    ]
    assert len(views) >= 30 and sum(len(arrays) > 1 for arrays in views) >= 5  # faces as well as whole pictures
    arrays = np.concatenate(views)
    assert cosines(served.embed(arrays), keras.embed(arrays)).min() >= SAME
