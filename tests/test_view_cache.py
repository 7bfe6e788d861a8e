"""The view cache: the frozen bottom's maps computed once per view and picture, read back by every run; the top
trained from it (batches, progress, resuming)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from hxhbot.engine.crops import load_views
from hxhbot.engine.model_dir import load_model_dir
from tests.conftest import write_gallery
from training import train as train_module
from training import view_cache
from training.beside import compose
from training.data import scan_characters
from training.model import build
from training.train import Progress, TopRecipe, fit_top, train, view_batches
from training.view_cache import ViewCache, augmented_kind, bottom_fingerprint, picture_checksum

COLOURS = {f"Character {n}": ((n * 60) % 256, (n * 110 + 40) % 256, (n * 170 + 90) % 256) for n in range(3)}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gallery(tmp_path_factory.mktemp("views") / "gallery", per_character=4, characters=COLOURS)


@pytest.fixture(scope="module")
def bottom() -> tf.keras.Model:
    return build("tuned", 32, weights=None).get_layer("features")


def paths_of(data: Path) -> list[str]:
    return [path for paths in scan_characters(data).values() for path in paths]


def counting(cache: ViewCache, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make `cache` record how many views each call of its bottom computes."""
    calls: list[int] = []
    real = cache._bottom

    def bottom(arrays: np.ndarray) -> np.ndarray:
        calls.append(len(arrays))
        return real(arrays)

    monkeypatch.setattr(cache, "_bottom", bottom)
    return calls


def test_views_are_computed_once_and_read_back_identically(
    data: Path, bottom: tf.keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = paths_of(data)
    cache = ViewCache(tmp_path / "cache", bottom)
    calls = counting(cache, monkeypatch)
    first = cache.views(paths, rounds=3, seed=0)
    assert first.maps.dtype == np.float16 and first.maps.shape[1:] == bottom.output_shape[1:]
    assert sum(calls) == len(first.maps) and sorted(set(first.owners)) == list(range(len(paths)))
    assert first.whole.sum() == len(paths) and first.whole[np.r_[0, np.flatnonzero(np.diff(first.owners)) + 1]].all()
    assert (first.clean >= first.whole).all() and (~first.clean).sum() >= 3 * len(paths)  # 3 augmented frames each
    engine = load_views(Path(paths[0]).read_bytes(), 32, None).arrays  # the engine's own whole frame
    assert np.allclose(first.maps[0].astype(np.float32), bottom(engine).numpy()[0], rtol=1e-2, atol=1e-2)
    calls.clear()
    again = cache.views(paths, rounds=3, seed=0)
    assert calls == [] and all(np.array_equal(getattr(first, f), getattr(again, f)) for f in first.__dataclass_fields__)
    fewer = cache.views(paths[::-1], rounds=2, seed=0)  # any order, fewer rounds: the same views, nothing computed
    assert calls == [] and np.array_equal(fewer.maps[fewer.whole], first.maps[first.whole][::-1])
    cache.views(paths, rounds=3, seed=1)  # another augmentation seed: only its augmented views are new
    assert 0 < sum(calls) == (~first.clean).sum()


def test_a_picture_is_keyed_by_its_bytes_and_the_bottom_by_its_weights(
    data: Path, bottom: tf.keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = paths_of(data)
    copy = tmp_path / "elsewhere" / "renamed.jpg"
    copy.parent.mkdir()
    shutil.copyfile(paths[0], copy)
    assert picture_checksum(copy) == picture_checksum(paths[0]) != picture_checksum(paths[1])
    cache = ViewCache(tmp_path / "cache", bottom)
    cache.views(paths[:1], rounds=1)
    calls = counting(cache, monkeypatch)
    assert np.array_equal(cache.views([str(copy)], rounds=1).maps, cache.views(paths[:1], rounds=1).maps)
    assert calls == []
    other = build("tuned", 32, weights=None).get_layer("features")  # other random weights: other maps
    assert bottom_fingerprint(other) != cache.fingerprint == bottom_fingerprint(bottom)
    assert ViewCache(tmp_path / "cache", other).root != cache.root
    assert augmented_kind(0, 1) != augmented_kind(1, 1) != augmented_kind(0, 2)


def test_an_interrupted_fill_resumes_with_what_is_missing(
    data: Path, bottom: tf.keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = paths_of(data)
    monkeypatch.setattr(view_cache, "CHUNK", 4)
    cache = ViewCache(tmp_path / "cache", bottom)
    real, chunks = cache._bottom, []

    def failing(arrays: np.ndarray) -> np.ndarray:
        if chunks:
            raise KeyboardInterrupt
        chunks.append(len(arrays))
        return real(arrays)

    monkeypatch.setattr(cache, "_bottom", failing)
    with pytest.raises(KeyboardInterrupt):
        cache.views(paths, rounds=1)
    assert not list(cache.root.rglob("*.partial"))  # nothing torn is left to be read
    resumed = ViewCache(tmp_path / "cache", bottom)
    calls = counting(resumed, monkeypatch)
    views = resumed.views(paths, rounds=1)
    assert sum(calls) == len(views.maps) - chunks[0] and len(set(views.owners)) == len(paths)


def test_batches_draw_every_view_or_every_class_alike() -> None:
    targets = np.repeat(np.arange(3), [2, 2, 60])
    passes = view_batches(targets, 8, "views", seed=0)
    seen = np.concatenate([next(passes) for _ in range(len(targets) // 8)])
    assert len(set(seen)) == len(seen) == 64  # one pass: each view at most once
    balanced = view_batches(targets, 8, "characters", seed=0)
    counts = np.bincount(targets[np.concatenate([next(balanced) for _ in range(300)])], minlength=3)
    assert counts.min() > 0.25 * counts.sum()  # about a third each, though one class holds 60 of 64 views
    with pytest.raises(ValueError, match="sampling must be one of"):
        view_batches(targets, 8, "shuffled")


def test_progress_says_how_long_is_left(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock = iter([100.0, 130.0, 200.0, 200.0, 200.0])  # started; step 1 at +30 s (not logged); step 2 at +100 s
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: next(clock))
    progress = Progress(epochs=2, steps=4, every=60.0)
    with caplog.at_level(logging.INFO, logger="training.train"):
        progress.on_epoch_begin(1)  # a resumed run: epoch 2 of 2, the first one done before
        progress.on_train_batch_end(0)
        progress.on_train_batch_end(1)
        progress.on_epoch_end(1)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "top: epoch 2/2, step 2/4, 100 s, about 100 s left"  # 2 steps in 100 s, 2 to go
    assert lines[1] == "top: epoch 2/2, step 4/4, 100 s, about 0 s left" and len(lines) == 2


def test_fit_top_trains_the_top_from_cached_views(data: Path, tmp_path: Path) -> None:
    model = build("tuned", 32, weights=None)
    views = ViewCache(tmp_path / "cache", model.get_layer("features")).views(paths_of(data), rounds=1)
    labels = np.repeat(np.arange(3), 4)
    before = [w.copy() for w in model.get_layer("head").get_weights()]
    history = fit_top(model, views, labels[views.owners], 3, tmp_path / "out", 2, recipe=TopRecipe("characters"))
    assert len(history["loss"]) == 2 and len(history["val_recall@1"]) == 2
    after = model.get_layer("head").get_weights()
    assert any(not np.allclose(b, a) for b, a in zip(before, after))
    assert not np.allclose(model.get_layer("whitening").get_weights()[0], np.eye(1280))


def test_tuned_runs_share_one_cache(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "shared-cache"
    options = {"epochs": 1, "input_size": 32, "weights": None, "augment_rounds": 2, "cache": cache, "verbose": 0}
    train([data], "tuned", tmp_path / "a", unseen=0, **options)
    assert list(cache.rglob("*.npy")) and not (tmp_path / "a" / "view-cache").exists()
    monkeypatch.setattr(ViewCache, "_bottom", lambda *_: pytest.fail("computed a view the cache holds"))
    split = tmp_path / "a" / "split.json"
    summary = train([data], "tuned", tmp_path / "b", split_file=split, sampling="characters", steps=2, **options)
    assert summary["epochs"] == 1 and json.loads((tmp_path / "b" / "config.json").read_text())["variant"] == "tuned"


def test_compose_takes_the_raw_centre_from_the_cache(data: Path, tmp_path: Path, imagenet_model_dir: Path) -> None:
    cache = tmp_path / "cache"
    train([data], "tuned", tmp_path / "t", epochs=1, input_size=32, augment_rounds=2, cache=cache, unseen=0, verbose=0)
    centres = []
    for name, cached in (("engine", None), ("cached", cache)):
        compose(tmp_path / "t", 0.7, tmp_path / name, cached)
        composed = load_model_dir(tmp_path / name)[0].get_layer("imagenet_top")
        centres.append(composed.get_layer("imagenet_centre").mean.numpy()[0])
    assert np.allclose(centres[0], centres[1], atol=2e-3)  # the same views; maps kept at 16 bits
