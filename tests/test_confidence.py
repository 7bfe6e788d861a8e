"""Calibrated confidence, the three outcomes, every character of a picture, and the gallery's check of itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hxhbot.engine.artworks import artworks
from hxhbot.engine.confidence import DEFAULT, Calibration, subject_views
from hxhbot.engine.detector import Box
from hxhbot.engine.fitted_threshold import SHIPPED, THRESHOLDS, fit_threshold
from hxhbot.engine.gallery_check import CharacterCheck, answer_gallery, check_gallery
from hxhbot.engine.identification import Outcome, rank_picture
from hxhbot.engine.index import GalleryIndex, GalleryItem
from hxhbot.engine.model_dir import trained_pictures
from tests.bench.bench_index import clustered
from training import artwork_rule

CALIBRATION = Calibration((-20.0, 20.0, 20.0, 1.0, -1.0), background=0.5)


def test_more_alike_and_further_ahead_is_surer() -> None:
    low, high = CALIBRATION.probabilities(np.array([[0.7, 0.4]])), CALIBRATION.probabilities(np.array([[0.9, 0.4]]))
    assert high[0] > low[0] and high[1] < high[0]
    close = CALIBRATION.probabilities(np.array([[0.9, 0.88]]))
    assert close[0] < high[0], "a runner-up close behind lowers the confidence"
    assert np.all((0 <= high) & (high <= 1))


def test_the_gallery_size_does_not_matter_only_the_runner_up() -> None:
    few = CALIBRATION.probabilities(np.array([[0.9, 0.6]]))[0]
    many = CALIBRATION.probabilities(np.array([[0.9, 0.6] + [0.3] * 70]))[0]
    assert few == pytest.approx(many)
    alone = CALIBRATION.probabilities(np.array([[0.9]]))[0]  # a one-character gallery: margin to the background
    assert alone == pytest.approx(CALIBRATION.probabilities(np.array([[0.9, 0.5]]))[0])
    noise = CALIBRATION.probabilities(np.array([[0.2]]))[0]
    assert noise < 0.01, "an unrelated picture against one character is not named"


def test_two_views_that_agree_count_more_than_two_that_disagree() -> None:
    agree = CALIBRATION.probabilities(np.array([[0.8, 0.5], [0.7, 0.4]]))[0]
    disagree = CALIBRATION.probabilities(np.array([[0.8, 0.5], [0.4, 0.7]]))[0]
    assert agree > disagree


def test_saved_with_the_model_and_a_conservative_default(tmp_path: Path) -> None:
    assert Calibration.load(tmp_path) is DEFAULT
    CALIBRATION.save(tmp_path)
    loaded = Calibration.load(tmp_path)
    assert loaded.weights == CALIBRATION.weights and loaded.background == CALIBRATION.background
    (tmp_path / "calibration.json").write_text('{"features": ["x"], "weights": [1], "background": 0}')
    assert Calibration.load(tmp_path) is DEFAULT
    assert DEFAULT.probabilities(np.array([[0.8, 0.75]]))[0] < 0.01  # raw ImageNet features are alike anyway


def test_subject_views() -> None:
    assert subject_views(0) == [(0,)] and subject_views(1) == [(0, 1)] and subject_views(3) == [(1,), (2,), (3,)]


def test_every_face_is_answered_and_the_outcomes() -> None:
    rng = np.random.default_rng(0)
    a, b, c = (v / np.linalg.norm(v) for v in rng.normal(size=(3, 64)))
    items = [GalleryItem("A", "a.jpg", "1"), GalleryItem("B", "b.jpg", "2"), GalleryItem("C", "c.jpg", "3")]
    index = GalleryIndex.build(np.stack([a, b, c]), items, "fp")
    noise = rng.normal(size=64)
    query = np.stack([a + b, a, b + 0.1 * c])  # whole frame, left face A, right face B
    boxes = [Box(0.0, 0.1, 0.4, 0.6), Box(0.5, 0.1, 0.9, 0.6)]
    result = rank_picture(
        index.similarities(query / np.linalg.norm(query, axis=1, keepdims=True)), boxes, CALIBRATION, 2
    )
    assert [s.best.character for s in result.sightings] == ["A", "B"] and result.sightings[1].box == boxes[1]
    assert all(s.outcome(0.9, 0.2) is Outcome.NAMED for s in result.sightings)
    assert result.sightings[0].best.image == "a.jpg" and len(result.sightings[0].matches) == 2
    alone = rank_picture(index.similarities(noise / np.linalg.norm(noise)), [], CALIBRATION, 2)
    assert alone.sightings[0].box is None and alone.sightings[0].outcome(0.9, 0.2) is Outcome.UNKNOWN
    assert alone.sightings[0].outcome(0.9, 0.0) is Outcome.UNSURE


def test_a_held_out_picture_is_not_its_own_match() -> None:
    vectors = clustered(50, 16)  # two clusters of 25, like two characters
    items = [GalleryItem(f"char{row % 2}", f"g/{row}.jpg", f"{row:064x}") for row in range(50)]
    index = GalleryIndex.build(vectors, items, "fp")
    own = index.similarities(vectors[3])
    assert own.per_view[0, 1] == pytest.approx(1.0, abs=1e-5)
    left_out = index.held_out_similarities([3])
    assert left_out.per_view[0, 1] < 0.999 and left_out.images[0][1] != "g/3.jpg"
    check = check_gallery(index, Calibration((-5.0, 10.0, 10.0, 0.0, 0.0), background=0.0), threshold=0.5)
    assert check.pictures == 50 and check.named > 40 and check.right == check.named
    assert "named confidently" in check.describe() and "100% of them right" in check.describe()
    assert check.missing == 50 and check.missing_named == 0  # the other cluster is far: nobody named instead
    assert "with its character left out of the gallery, 0% still named (wrongly)" in check.describe()


def test_gallery_check_names_a_missing_character_when_another_looks_just_like_it() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 32))
    centres[2] = centres[1] + 0.05 * rng.normal(size=32)  # "C" is all but a copy of "B"
    vectors = np.repeat(centres, 6, axis=0) + 0.15 * rng.normal(size=(18, 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [GalleryItem("ABC"[row // 6], f"g/{row}.jpg", f"{row:064x}") for row in range(18)]
    index = GalleryIndex.build(vectors, items, "fp")
    left_out = index.held_out_similarities(list(range(6, 12)))  # all of B
    assert left_out.per_view[0, 1] == -1.0 and left_out.per_view[0, 2] > 0.9  # B gone, its twin C answers
    check = check_gallery(index, Calibration((-5.0, 10.0, 0.0, 0.0, 0.0), background=0.0), threshold=0.5)
    assert check.pictures == check.missing == 18
    assert check.missing_named == 12  # every B and C picture, named as the other; none of A's
    assert "67% still named (wrongly)" in check.describe()


def test_the_check_answers_its_pictures_as_new_ones_are_answered() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 128))

    def draw(per_character: int) -> np.ndarray:
        vectors = np.repeat(centres, per_character, axis=0) + 1.6 * rng.normal(size=(10 * per_character, 128))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    items = [GalleryItem(f"c{row // 6}", f"g/{row}.jpg", f"{row:064x}") for row in range(60)]
    index = GalleryIndex.build(draw(6), items, "fp")
    calibration = Calibration((-3.0, 6.0, 6.0, 0.0, 0.0), background=0.0)
    answers = [rank_picture(index.similarities(vector), [], calibration, top_k=1).best for vector in draw(20)]
    new = np.mean([a.score >= 0.5 and a.character == f"c{row // 20}" for row, a in enumerate(answers)])
    check = check_gallery(index, calibration, threshold=0.5)
    assert 0.5 < new < 0.8 and abs(check.right / check.pictures - new) < 0.1, (
        "a gallery picture must not help compare itself (fitted into the comparison it would be named 98 %)"
    )


def twins_gallery(pairs: int) -> GalleryIndex:
    """A distinct character "A" and `pairs` pairs of characters whose every picture has a near-copy in its twin."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(1 + pairs, 32))
    vectors, names = [centres[0] + 0.15 * rng.normal(size=(6, 32))], ["A"] * 6
    for pair in range(pairs):
        own = centres[1 + pair] + 0.15 * rng.normal(size=(6, 32))
        vectors += [own, own + 1e-3 * rng.normal(size=(6, 32))]  # each picture's closest is its copy in the twin
        names += [f"P{pair}a"] * 6 + [f"P{pair}b"] * 6
    vectors = np.concatenate(vectors)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [GalleryItem(name, f"g/{row}.jpg", f"{row:064x}") for row, name in enumerate(names)]
    return GalleryIndex.build(vectors, items, "fp")


def test_the_check_names_the_characters_named_least_and_whom_they_are_taken_for() -> None:
    calibration = Calibration((-5.0, 10.0, 0.0, 0.0, 0.0), background=0.0)
    check = check_gallery(twins_gallery(1), calibration, threshold=0.5)
    assert check.characters["A"] == CharacterCheck(6, 6, None)
    twins = {name: check.characters[name] for name in ("P0a", "P0b")}
    assert all(c.named_right < 3 for c in twins.values()), "each picture's near-copy is in its twin"
    assert twins["P0a"].taken_for == "P0b" and twins["P0b"].taken_for == "P0a"
    least = sorted(twins, key=lambda name: (twins[name].named_right, name))
    assert check.describe().endswith(
        "; named least: "
        + ", ".join(
            f"{name} ({twins[name].named_right} of 6, often ranked as {twins[name].taken_for})" for name in least
        )
    )
    many = check_gallery(twins_gallery(4), calibration, threshold=0.5)
    assert sum(c.named_right < 3 for c in many.characters.values()) == 8
    assert many.describe().endswith(" and 5 more") and "A (" not in many.describe()
    unsure = check_gallery(twins_gallery(0), Calibration((-50.0, 10.0, 0.0, 0.0, 0.0), background=0.0), 0.5)
    assert unsure.describe().endswith("; named least: A (0 of 6)"), "ranked right but never sure: no one to blame"


def test_a_one_character_gallery_has_no_missing_character_check() -> None:
    vectors = clustered(10, 16)
    items = [GalleryItem("A", f"g/{row}.jpg", f"{row:064x}") for row in range(10)]
    check = check_gallery(GalleryIndex.build(vectors, items, "fp"), DEFAULT, threshold=0.7)
    assert check.pictures == 10 and check.missing == 0 and "left out" not in check.describe()


def test_the_check_fits_the_threshold_its_counts_are_at() -> None:
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(20, 32))
    vectors = np.repeat(centres, 10, axis=0) + 0.6 * rng.normal(size=(200, 32))  # 20 characters, 10 pictures each
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [GalleryItem(f"c{row // 10}", f"g/{row}.jpg", f"{row:064x}") for row in range(200)]
    index = GalleryIndex.build(vectors, items, "fp")
    calibration = Calibration((-5.0, 10.0, 10.0, 0.0, 0.0), background=0.0)
    check = check_gallery(index, calibration)
    fit = check.confidence
    assert fit is not None and fit.fitted and fit.threshold in THRESHOLDS and fit.pictures == fit.missing == 200
    assert (check.named, check.right, check.missing_named) == (fit.named, fit.named - fit.wrong, fit.missing_named)
    assert check.describe().startswith(f"confidence {fit.describe()}; gallery check")
    answers = answer_gallery(index, calibration)
    assert fit == fit_threshold(answers.for_fit())
    owner = check_gallery(index, calibration, threshold=0.5)  # CONFIDENCE_THRESHOLD: counted at it, the fit kept
    assert owner.confidence == fit and owner.named == int((answers.scores >= 0.5).sum())
    assert "CONFIDENCE_THRESHOLD set by the owner" in owner.describe()
    small = check_gallery(GalleryIndex.build(vectors[:40], items[:40], "fp"), calibration).confidence
    assert small is not None and not small.fitted and small.threshold == SHIPPED and "too few" in small.reason


def artwork(rng: np.random.Generator) -> Image.Image:
    """A generated artwork: random blobs in colour, 320 pixels square."""
    return Image.fromarray(rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)).resize((320, 320), Image.BICUBIC)


def test_two_cuts_of_one_generated_picture_are_one_artwork_and_never_split_across_folds(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    paths = []
    for number in range(36):  # 12 characters × 3 unrelated artworks, each saved whole and cut (a crop, enlarged)
        folder = tmp_path / f"c{number // 3}"
        folder.mkdir(exist_ok=True)
        picture = artwork(rng)
        picture.save(folder / f"{number}-whole.png")
        picture.crop((40, 60, 260, 300)).resize((330, 360), Image.BICUBIC).save(folder / f"{number}-cut.jpg")
        paths += [str(folder / f"{number}-whole.png"), str(folder / f"{number}-cut.jpg")]
    characters = [Path(path).parent.name for path in paths]
    found = artworks(paths, characters)
    assert all(found[row] == found[row + 1] for row in range(0, 72, 2)) and len(set(found)) == 36
    vectors = np.repeat(rng.normal(size=(36, 64)), 2, axis=0) + 0.02 * rng.normal(size=(72, 64))  # a cut ≈ its whole
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [GalleryItem(name, path, f"{row:064x}") for row, (name, path) in enumerate(zip(characters, paths))]
    check = check_gallery(
        GalleryIndex.build(vectors, items, "fp"), Calibration((-5.0, 10.0, 10.0, 0.0, 0.0), background=0.0), 0.5
    )
    assert check.pictures == 72 and check.named <= 7, (
        "a character's artworks are unrelated: a cut answered by its whole (another fold) would be named"
    )


def test_pictures_the_model_trained_on_answer_others_but_are_never_asked(tmp_path: Path) -> None:
    vectors = clustered(40, 16, per_cluster=20)
    items = [GalleryItem(f"char{row % 2}", f"gallery/char{row % 2}/{row}.jpg", f"{row:064x}") for row in range(40)]
    index = GalleryIndex.build(vectors, items, "fp")
    (tmp_path / "config.json").write_text(json.dumps({"split": "owner-split.json"}))
    learnt = [item.path for item in items[:30]]
    (tmp_path / "owner-split.json").write_text(
        json.dumps({"seen": ["char0", "char1"], "train": {"char0": learnt[::2], "char1": learnt[1::2]}})
    )
    trained = trained_pictures(tmp_path)
    assert trained == {f"char{row % 2}/{row}.jpg" for row in range(30)}
    calibration = Calibration((-5.0, 10.0, 10.0, 0.0, 0.0), background=0.0)
    check = check_gallery(index, calibration, threshold=0.5, trained=trained)
    assert check.pictures == check.missing == 10 and set(check.characters) == {"char0", "char1"}
    assert check.named == check.right == 10, "the other 30 still answer them"
    assert trained_pictures(tmp_path / "none") == frozenset() and check_gallery(index, calibration, 0.5).pictures == 40


def test_the_artwork_rule_is_measured_against_the_sources_file_names_give(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    for character in ("c0", "c1"):  # per character: two crops of an artwork, named as such, and another artwork
        folder = tmp_path / "data" / character
        folder.mkdir(parents=True)
        picture = artwork(rng)
        picture.crop((0, 0, 300, 300)).save(folder / "a.png-1.jpg")
        picture.crop((30, 30, 250, 290)).resize((300, 350), Image.BICUBIC).save(folder / "a.png-2.jpg")
        artwork(rng).save(folder / "b.png")
    assert artwork_rule.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "results")]) == 0
    result = json.loads((tmp_path / "results" / "confidence-artworks.json").read_text())
    [row] = [dict(zip(result["columns"], row)) for row in result["rows"]]
    assert (row["pictures"], row["pairs of one source"], row["pairs of two sources"]) == (6, 2, 4)
    assert row["at 12: one source found / two joined"] == "1.000 / 0.0000"
    assert row["chained at 12: sources kept whole"] == "2 of 2"
    assert row["chained at 12: pictures put with another source"] == "0 of 6"
