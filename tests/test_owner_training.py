"""Owner training on a tiny generated gallery with tiny models: the one command, the never-worse choice, atomicity."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from hxhbot.engine.atomic_dir import replace_dir
from hxhbot.engine.confidence import Calibration
from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.embedder import Embedder
from hxhbot.engine.fitted_threshold import SHIPPED
from hxhbot.engine.manifest import add_to_gallery
from hxhbot.engine.model_dir import describe_model, load_model_dir, read_config, save_model_dir, trained_pictures
from tests.conftest import write_gallery
from training import calibrate, owner, owner_protocol
from training.data import Split
from training.model import beside_imagenet, build
from training.owner import SUMMARY_FILE, OwnerTrainingError, hold_out, train_owner
from training.train import main

pytestmark = pytest.mark.timeout(900)  # a hang guard: a run trains, saves and reloads models; minutes when loaded
COLOURS = {f"Character {n}": ((n * 60) % 256, (n * 110 + 40) % 256, (n * 170 + 90) % 256) for n in range(4)}
SIZE = 32


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gallery(tmp_path_factory.mktemp("owner") / "gallery", per_character=8, characters=COLOURS)


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model composed as the shipped one: tuned top beside raw features of the same bottom, calibrated."""
    tf.keras.utils.set_random_seed(0)
    tuned = build("tuned", SIZE, weights=None)
    model = beside_imagenet(tuned, 0.7, np.zeros(1280, np.float32), weights=None)
    directory = tmp_path_factory.mktemp("start") / "model"
    save_model_dir(model, "tuned+imagenet", directory, beside_imagenet=0.7, trained_on=["Someone else"])
    Calibration((-5.0, 20.0, 8.0, -0.4, -1.2), 0.05).save(directory)
    return directory


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, imagenet_model_dir: Path) -> Path:
    """A tiny tuned model from ImageNet's weights (no raw features beside it): it ranks colours."""
    directory = tmp_path_factory.mktemp("tuned") / "model"
    save_model_dir(build("tuned", SIZE, weights="imagenet"), "tuned", directory)
    return directory


def test_hold_out_keeps_a_quarter_of_each_character_by_whole_sources(gallery: Path, tmp_path: Path) -> None:
    train, held = hold_out(gallery, seed=0)
    assert sorted(train) == sorted(COLOURS) and hold_out(gallery, seed=0) == (train, held)
    for name in COLOURS:
        assert 1 <= len(held[name]) <= 2 and not set(held[name]) & set(train[name])
        assert len(held[name]) + len(train[name]) == 8
    copy = shutil.copytree(gallery, tmp_path / "copy")
    approved = (gallery / "Character 1" / "03.jpg").read_bytes()  # as /review's Approve saves a correction
    source = {"source": "feedback", "url": "https://cdn.example/x.jpg", "page_url": "", "source_id": "1"}
    added = add_to_gallery(copy, "Character 2", approved, hashlib.sha256(approved).hexdigest(), source)
    train, held = hold_out(copy, seed=0)
    assert str(added) in train["Character 2"] + held["Character 2"]  # the next training learns from it
    few = write_gallery(tmp_path / "few", per_character=2, characters=COLOURS)
    with pytest.raises(OwnerTrainingError, match="nothing can be held out"):
        hold_out(few)
    with pytest.raises(OwnerTrainingError, match="at least two"):
        hold_out(write_gallery(tmp_path / "one", per_character=8, characters={"Alone": (1, 2, 3)}))


def test_the_one_command_writes_a_model_composed_as_the_start(gallery: Path, composed: Path, tmp_path: Path) -> None:
    out = tmp_path / "trained"
    assert main(["--data", str(gallery), "--out", str(out), "--start", str(composed), "--epochs", "2"]) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["held_out"] == sum(len(v) for v in hold_out(gallery)[1].values()) and summary["characters"] == 4
    assert summary["epochs_run"] <= 2 and [h["epoch"] for h in summary["history"]] == list(
        range(summary["epochs_run"] + 1)
    )
    start, new = read_config(composed), read_config(out)
    assert (new.variant, new.input_size, new.embedding_dim) == (start.variant, start.input_size, start.embedding_dim)
    if summary["kept"] == "trained":  # better on the held-out pictures: the new top, the same composition
        assert summary["trained_top1"] > summary["start_top1"] or summary["trained_mrr"] > summary["start_mrr"]
        config = json.loads((out / "config.json").read_text())
        assert config["beside_imagenet"] == 0.7 and config["trained_on"] == sorted(COLOURS)
        assert config["owner_trained_from"] == start.fingerprint and new.fingerprint != start.fingerprint
        assert "trained on this gallery (4 characters)" in describe_model(out)
        assert Calibration.load(out).fitted["prior"] == "the starting model's calibration"
        learnt, held = hold_out(gallery)  # split.json lists what it trained on, never what checked it
        trained = calibrate.trained_pictures(out)
        assert trained == {calibrate.picture_key(p) for paths in learnt.values() for p in paths}
        assert not trained & {calibrate.picture_key(p) for paths in held.values() for p in paths}
        model, _ = load_model_dir(out)
        original, _ = load_model_dir(composed)
        for name in ("features", "imagenet_top", "whitening"):  # only the tuned top learnt
            for a, b in zip(model.get_layer(name).get_weights(), original.get_layer(name).get_weights()):
                assert np.array_equal(a, b)
    else:  # no epoch ranked them better: the start, as it was
        assert (summary["trained_top1"], summary["trained_mrr"]) <= (summary["start_top1"], summary["start_mrr"])
        assert new.fingerprint == start.fingerprint
    assert Embedder.load(out).embed(np.zeros((2, SIZE, SIZE, 3), np.float32)).shape == (2, start.embedding_dim)
    assert not list(tmp_path.glob(".trained.training-*"))  # nothing staged is left behind


def test_a_worse_model_is_not_kept(gallery: Path, tuned: Path, tmp_path: Path, monkeypatch) -> None:
    def ruin(head: tf.keras.Model, views, labels, classes: int):  # every epoch leaves a top that sees nothing
        def step(rows: np.ndarray) -> float:
            head.set_weights([np.zeros_like(w) for w in head.get_weights()])
            return 0.0

        return step

    monkeypatch.setattr(owner, "_trainer", ruin)
    out = tmp_path / "out"
    summary = train_owner(gallery, out, tuned, max_epochs=2)
    assert summary.start_top1 > 0 and summary.trained_top1 == 0.0  # the ruined epochs rank nothing first
    assert summary.kept == "start" and summary.epochs_run == 2 and [h["top1"] for h in summary.history[1:]] == [0, 0]
    assert _files(out).keys() - {SUMMARY_FILE} == _files(tuned).keys()
    assert {name: data for name, data in _files(out).items() if name != SUMMARY_FILE} == _files(tuned)
    assert "kept the starting model" in summary.describe()


def test_an_interrupted_run_leaves_the_model_where_it_was(gallery: Path, composed: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    shutil.copytree(composed, out)
    before = _files(out)

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "training" and done == 1:
            raise KeyboardInterrupt  # Ctrl-C after an epoch

    with pytest.raises(KeyboardInterrupt):
        train_owner(gallery, out, composed, progress=interrupt, max_epochs=3)
    assert _files(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_the_one_command_refuses_what_it_cannot_use(gallery: Path, composed: Path, tmp_path: Path) -> None:
    pretrained = tmp_path / "pretrained"
    save_model_dir(tf.keras.Sequential([tf.keras.Input((SIZE, SIZE, 3)), tf.keras.layers.GlobalAveragePooling2D()]),
                   "pretrained", pretrained)  # fmt: skip
    with pytest.raises(OwnerTrainingError, match="needs a tuned one"):
        train_owner(gallery, tmp_path / "out", pretrained)
    with pytest.raises(OwnerTrainingError, match="holds no trained model"):
        train_owner(gallery, tmp_path / "out", tmp_path / "nothing")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(OwnerTrainingError, match="holds no model"):
        train_owner(gallery, tmp_path / "notes", composed)
    with pytest.raises(SystemExit):
        main(["--data", str(gallery), str(gallery), "--out", str(tmp_path / "x"), "--start", str(composed)])


def test_replace_dir_swaps_whole_directories(tmp_path: Path, monkeypatch) -> None:
    for name, text in (("new", "new"), ("live", "old")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text(text)
    replace_dir(tmp_path / "new", tmp_path / "live")
    assert (tmp_path / "live" / "file").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["live"]
    replace_dir(tmp_path / "live", tmp_path / "moved")  # nothing there yet: a rename
    monkeypatch.setattr("hxhbot.engine.atomic_dir._exchange", lambda first, second: False)  # no renameat2 here
    (tmp_path / "newer").mkdir()
    replace_dir(tmp_path / "newer", tmp_path / "moved")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved"] and not list((tmp_path / "moved").iterdir())


def test_calibration_fit_without_negatives_is_pulled_toward_its_prior() -> None:
    rng = np.random.default_rng(0)
    per_view = [rng.uniform(0, 1, (1, 3)) for _ in range(40)]
    answers = [calibrate.Answers(0, 0, ["known"] * 20 + ["missing"] * 20, ["a", "b"] * 10 + ["c"] * 20,
                                 ["a", "b", "d"], per_view)]  # fmt: skip
    with pytest.raises(ValueError, match="prior"):
        calibrate.fit(answers)
    prior = Calibration((-5.0, 20.0, 8.0, -0.4, -1.2), 0.05)
    held = calibrate.fit(answers, prior=prior, strength=1e6)
    assert held.background == prior.background and np.allclose(held.weights, prior.weights, atol=1e-3)
    loose = calibrate.fit(answers, prior=prior, strength=1.0)  # the answers move it
    assert (
        np.abs(np.subtract(loose.weights, prior.weights)).max()
        > 100 * np.abs(np.subtract(held.weights, prior.weights)).max()
    )


def test_describe_model_says_which_model_serves(composed: Path, tmp_path: Path) -> None:
    assert describe_model(composed) == "the shipped model (tuned+imagenet, trained on 1 character)"
    assert describe_model(tmp_path) == "raw ImageNet features (no trained model)"


def test_the_protocol_names_from_the_threshold_fitted_to_each_gallery(
    gallery: Path, composed: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("CONFIDENCE_THRESHOLD", raising=False)  # unset: the bot names from the fit
    result = tmp_path / "result.json"
    argv = ["--start", str(composed), "--others", str(gallery), "--count", "4", "--min-pictures", "8", "--sizes", "5"]
    argv += ["--splits", "1", "--work", str(tmp_path / "work"), "--json", str(result), "--cache", str(tmp_path / "v")]
    asked = []  # the pictures each model's gallery check must not ask: those it trained on, as the bot's index build
    check = owner_protocol.answer_gallery
    monkeypatch.setattr(
        owner_protocol,
        "answer_gallery",
        lambda index, fit, trained: asked.append(trained) or check(index, fit, trained),
    )
    assert owner_protocol.main(argv) == 0
    assert asked == [trained_pictures(composed), trained_pictures(tmp_path / "work" / "model-5-0")]
    table = json.loads(result.read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["rows"]]
    assert [row["model"] for row in rows] == ["start", f"kept ({rows[1]['kept']})"]
    assert all(row["queries"] == 4 * 3 and row["characters"] == 4 for row in rows)  # 8 pictures: 5 gallery, 3 asked
    # 20 gallery pictures are too few answers to fit a threshold: the shipped one, as the bot would use
    assert [row["threshold"] for row in rows] == [SHIPPED, SHIPPED]
    assert all(0.0 <= row["named"] <= 1.0 and 0.0 <= row["top-1"] <= 1.0 for row in rows)
    assert list((tmp_path / "v").iterdir())  # the views' bottom maps were kept where --cache said


def test_view_numbers_count_each_pictures_views_from_its_whole_frame() -> None:
    assert owner_protocol._view_numbers(np.array([0, 0, 0, 1, 2, 2])) == [0, 1, 2, 0, 0, 1]


def test_the_owner_split_lists_the_gallerys_and_the_starts_training_pictures(tmp_path: Path) -> None:
    start = tmp_path / "start"
    start.mkdir()
    (start / "config.json").write_text(json.dumps({"split": "split.json"}))
    earlier = Split(1, ["A", "Old"], ["U"], {"A": ["a1", "a2"], "Old": ["o1"]}, {"A": ["a3", "a6"], "Old": []},
                    {"A": ["a1"], "Old": ["o1"], "U": ["u1"]}, {"A": ["a2"], "Old": [], "U": ["u2"]},
                    {"A": "set", "Old": "set"})  # fmt: skip
    earlier.save(start / "split.json")
    train, held = {"A": ["a3", "a4"], "B": ["b1"]}, {"A": ["a5"], "B": ["b2"]}
    split = owner.owner_split(start, train, held)
    assert split.seen == ["A", "B", "Old"] and split.unseen == []
    assert split.train == {"A": ["a1", "a2", "a3", "a4"], "B": ["b1"], "Old": ["o1"]}
    assert split.val == {"A": ["a6"], "B": [], "Old": []}  # a3 trained now: no longer only a checkpoint's judge
    assert split.gallery == train and split.query == held and split.folders == earlier.folders
    assert split.training_images()[0] == ["a1", "a2", "a3", "a4", "b1", "o1"]
    (start / "split.json").unlink()  # a start that trained on nothing it lists: the gallery's pictures only
    assert owner.owner_split(start, train, held).train == train


def test_the_protocol_embeds_from_cached_maps_as_the_engine_does(gallery: Path, composed: Path, tmp_path: Path) -> None:
    paths = sorted(str(path) for path in gallery.rglob("*.jpg"))[::5]
    detector = FaceDetector()
    cached, cached_owner = owner_protocol.embedding(composed, detector, tmp_path / "views")(paths)
    engine, engine_owner = owner_protocol.embedding(composed, detector, None)(paths)
    assert np.array_equal(cached_owner, engine_owner) and cached.shape == engine.shape
    assert np.allclose(np.linalg.norm(cached, axis=1), 1.0, atol=1e-5)
    # the same views through the same weights, from float16 maps (a tiny random model amplifies their rounding)
    assert np.min(np.sum(cached * engine, axis=1)) > 0.95


def test_one_more_held_out_picture_ranked_first_is_not_enough(
    gallery: Path, composed: Path, tmp_path: Path, monkeypatch
) -> None:
    held = sum(len(paths) for paths in hold_out(gallery)[1].values())
    for gain, kept in ((1, "start"), (2, "trained")):
        scores = iter([(0.5, 0.5)] + [(0.5 + gain / held, 0.6)] * 2)  # the start's, then every epoch's
        monkeypatch.setattr(owner, "ranking_score", lambda *args, scores=scores: next(scores))
        assert train_owner(gallery, tmp_path / f"out{gain}", composed, max_epochs=2).kept == kept
