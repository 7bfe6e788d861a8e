"""The tuned top's recipe choices: series-balanced batches, the ArcFace margin, which blocks train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import write_gallery
from training.data import scan_characters
from training.model import build
from training.train import (
    TUNED_SCALE,
    TopRecipe,
    _angular_margin_loss,
    fit_top,
    freeze_top_before,
    main,
    series_codes,
    view_batches,
)
from training.view_cache import ViewCache

COLOURS = {
    f"Series {n % 2} - Character {n}": ((n * 60) % 256, (n * 110 + 40) % 256, (n * 170 + 90) % 256) for n in range(3)
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gallery(tmp_path_factory.mktemp("recipe") / "gallery", per_character=4, characters=COLOURS)


def test_series_sampling_weighs_a_series_by_the_root_of_its_characters() -> None:
    targets = np.repeat(np.arange(5), [40, 40, 40, 40, 2])  # four characters of one series, one of another
    series = series_codes(["A - 1", "A - 2", "A - 3", "A - 4", "B - 1"])
    assert series.tolist() == [0, 0, 0, 0, 1]
    batches = view_batches(targets, 16, "series", seed=0, series=series)
    counts = np.bincount(targets[np.concatenate([next(batches) for _ in range(400)])], minlength=5)
    share = counts / counts.sum()
    assert abs(share[4] - 1 / 3) < 0.03  # √4 : √1, so the lone character draws a third, not a fifth
    assert np.all(np.abs(share[:4] - 1 / 6) < 0.03)
    characters = view_batches(targets, 16, "characters", seed=0)
    counts = np.bincount(targets[np.concatenate([next(characters) for _ in range(400)])], minlength=5)
    assert abs(counts[4] / counts.sum() - 1 / 5) < 0.03


def test_arcface_adds_the_margin_to_the_right_class_angle() -> None:
    margin, cosines = 0.3, np.array([[0.5, 0.4, -0.2], [0.05, -0.99, 0.4]], np.float32)
    labels = np.array([0, 1])
    loss = _angular_margin_loss(3, TUNED_SCALE, margin)(tf.constant(labels), tf.constant(TUNED_SCALE * cosines))
    expected = []
    for row, label in zip(cosines, labels):
        angle = np.arccos(row[label])
        moved = np.cos(angle + margin) if angle + margin < np.pi else row[label] - np.sin(np.pi - margin) * margin
        logits = TUNED_SCALE * np.where(np.arange(3) == label, moved, row)
        expected.append(np.log(np.exp(logits).sum()) - logits[label])
    assert np.allclose(loss.numpy(), expected, rtol=1e-4)


def test_only_the_blocks_from_train_from_learn(data: Path, tmp_path: Path) -> None:
    model = build("tuned", 32, weights=None)
    paths = [path for paths in scan_characters(data).values() for path in paths]
    views = ViewCache(tmp_path / "cache", model.get_layer("features")).views(paths, rounds=1)
    head = model.get_layer("head")
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in head.layers}
    labels = np.repeat(np.arange(3), 4)
    recipe = TopRecipe(sampling="series", loss="arcface", train_from=15, series=np.array([0, 1, 0]))
    fit_top(model, views, labels[views.owners], 3, tmp_path / "out", 2, recipe=recipe)
    changed = {
        layer.name
        for layer in head.layers
        if any(not np.array_equal(b, a) for b, a in zip(before[layer.name], layer.get_weights()))
    }
    assert changed and all(not name.startswith(("block_13_", "block_14_")) for name in changed)
    assert any(name.startswith("block_15_") for name in changed) and "Conv_1" in changed
    with pytest.raises(ValueError, match="trains from one of blocks 13, 14, 15, 16, not 12"):
        freeze_top_before(build("tuned", 32, weights=None).get_layer("head"), 12)


def test_the_command_line_passes_the_recipe(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}
    monkeypatch.setattr("training.train.train", lambda *args, **kwargs: seen.update(kwargs) or _summary())
    argv = ["--data", str(data), "--variant", "tuned", "--out", str(tmp_path / "m"), "--sampling", "series"]
    assert main([*argv, "--loss", "arcface", "--train-from", "15"]) == 0
    assert (seen["sampling"], seen["loss"], seen["train_from"]) == ("series", "arcface", 15)
    with pytest.raises(SystemExit):
        main([*argv, "--train-from", "12"])


def _summary() -> dict:
    return {"variant": "tuned", "seconds": 0.0, "epochs": 0, "seconds_per_epoch": 0.0}
