"""The Annoy index: round trip, atomic replacement, model check, ranking and recall."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hxhbot.engine.confidence import DEFAULT
from hxhbot.engine.index import (
    Comparison,
    GalleryIndex,
    GalleryIndexError,
    GalleryItem,
    IndexMismatchError,
    IndexMissingError,
    annoy_settings,
    character_similarities,
    gallery_centre,
    within_directions,
)
from tests.bench.bench_index import clustered


def _items(count: int, per_character: int = 25) -> list[GalleryItem]:
    return [GalleryItem(f"char{row // per_character}", f"g/{row}.jpg", f"{row:064x}") for row in range(count)]


def test_round_trip_and_mmap(tmp_path: Path) -> None:
    vectors = clustered(200, 16)
    GalleryIndex.build(vectors, _items(200), "fp1").save(tmp_path)
    loaded = GalleryIndex.load(tmp_path, "fp1")
    assert len(loaded) == 200 and loaded.dim == 16 and loaded.fingerprint == "fp1"
    assert np.allclose(loaded.vectors([7])[0], vectors[7], atol=1e-6)
    meta = json.loads((tmp_path / "index.json").read_text())
    assert {
        "model_fingerprint",
        "built_at",
        "ann_file",
        "vectors_file",
        "directions_file",
        "items",
        "n_trees",
        "search_k",
        "centre",
        "damping",
        "lengths",
    } <= set(meta)
    assert isinstance(loaded.matrix, np.memmap)  # searched as the gallery compares
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.allclose(loaded.matrix[7], Comparison.fit(unit, np.arange(200) // 25).apply(vectors[7]), atol=1e-5)
    assert np.allclose(GalleryIndex.load(tmp_path).vectors([7, 150]), vectors[[7, 150]], atol=1e-6)
    assert meta["items"][3] == {"character": "char0", "path": "g/3.jpg", "sha256": f"{3:064x}", "view": 0}


def test_gallery_centre_is_what_its_characters_share_and_nothing_for_one_character() -> None:
    rng = np.random.default_rng(0)
    style = rng.normal(size=64)  # what every picture of this gallery shares
    characters = np.repeat(np.arange(4), [2, 2, 2, 6])  # one character with more pictures counts no more
    own = rng.normal(size=(4, 64))
    vectors = style + own[characters] + 0.01 * rng.normal(size=(12, 64))
    assert np.allclose(gallery_centre(vectors, characters), 0.75 * (style + own.mean(axis=0)), atol=0.01)
    assert np.allclose(gallery_centre(vectors[:2], characters[:2]), 0.0)  # one character: nothing taken away
    moved = Comparison(gallery_centre(vectors, characters), np.zeros((0, 64)), np.zeros(0)).apply(vectors)
    assert np.allclose(np.linalg.norm(moved, axis=1), 1.0)
    raw = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mean_cosine = lambda v: (v @ v.T)[np.triu_indices(len(v), 1)].mean()  # noqa: E731
    assert mean_cosine(raw) > 0.5 and mean_cosine(moved) < 0.2  # the shared style no longer dominates


def test_one_characters_own_variation_is_damped_and_can_be_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    own, pose = rng.normal(size=(3, 32)), rng.normal(size=32)  # a pose every character's pictures vary along
    characters = np.repeat(np.arange(3), 8)
    vectors = own[characters] + rng.normal(scale=2.0, size=(24, 1)) * pose + 0.1 * rng.normal(size=(24, 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    comparison = Comparison.fit(vectors, characters)
    assert comparison.directions.shape == (len(comparison.damping), 32) and len(comparison.damping) >= 3
    assert np.allclose(comparison.directions @ comparison.directions.T, np.eye(len(comparison.damping)), atol=1e-4)
    assert ((0 <= comparison.damping) & (comparison.damping < 1)).all()
    strongest = comparison.directions[comparison.damping.argmax()]
    assert abs(strongest @ pose) / np.linalg.norm(pose) > 0.9  # the pose is damped most
    centred_only = Comparison(comparison.centre, np.zeros((0, 32)), np.zeros(0))
    same = lambda c: (c.apply(vectors[:8]) @ c.apply(vectors[:8]).T).mean()  # noqa: E731
    assert same(comparison) > same(centred_only) + 0.1  # one character's pictures come closer
    lengths = np.linalg.norm(vectors - comparison.centre, axis=1)
    assert np.allclose(comparison.undo(comparison.apply(vectors), lengths), vectors, atol=1e-5)
    alone, _ = within_directions(vectors[:8], characters[:8], np.zeros(32))  # one character: its own variation too
    assert abs(alone[0] @ pose) / np.linalg.norm(pose) > 0.9
    single = within_directions(vectors[::8], characters[::8], comparison.centre)  # a picture each: no variation
    assert single[0].shape == (0, 32) and single[1].shape == (0,)
    monkeypatch.setattr("hxhbot.engine.index.FIT_VIEWS", 12)  # a large gallery: fitted on every other view
    assert abs(within_directions(vectors, characters, comparison.centre)[0][0] @ strongest) > 0.95


def test_within_directions_are_the_principal_directions_of_each_characters_own_variation() -> None:
    rng = np.random.default_rng(5)
    for pictures in (3, 12):  # fewer views than dimensions (solved through their Gram matrix), then more
        characters = np.repeat(np.arange(4), pictures)
        vectors = rng.normal(size=(4, 32))[characters] + rng.normal(size=(len(characters), 32)) * np.geomspace(
            2, 0.1, 32
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        centre = gallery_centre(vectors, characters)
        directions, damping = within_directions(vectors, characters, centre)
        moved = vectors - centre
        moved /= np.linalg.norm(moved, axis=1, keepdims=True)
        within = moved - np.array([moved[characters == c].mean(axis=0) for c in characters])
        _, spread, expected = np.linalg.svd(within, full_matrices=False)
        kept = spread**2 > 1e-9 * (spread**2).sum()
        share = spread[kept] ** 2 / (spread[kept] ** 2).sum()
        assert np.allclose(damping, 1 - 1 / np.sqrt(1 + share * 32 / 4.0), atol=1e-5)
        operator = lambda d, k: (d.T * k) @ d  # noqa: E731 (independent of each direction's sign)
        assert np.allclose(operator(directions, damping), operator(expected[kept], damping), atol=1e-5)


def test_the_centre_is_the_galleries_own_and_queries_meet_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    style, own = rng.normal(size=32) * 3, rng.normal(size=(3, 32))
    vectors = style + own[np.arange(30) // 10] + rng.normal(size=(30, 32))  # no copies (NEAR_COPY)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = GalleryIndex.build(vectors, _items(30, per_character=10), "fp")
    query = style + own[1] + rng.normal(size=32)
    query /= np.linalg.norm(query)
    by_hand = index.comparison.apply(query) @ index.comparison.apply(vectors).T
    assert np.allclose(index.nearest(query, 30)[0].similarity, by_hand.max(), atol=1e-5)
    assert np.allclose(index.similarities(query).per_view[0, 1], np.sort(by_hand[0, 10:20])[-2:].mean(), atol=1e-5)
    index.save(tmp_path)
    meta = json.loads((tmp_path / "index.json").read_text())
    (tmp_path / "index.json").write_text(json.dumps({**meta, "damping": [1.0] * len(meta["damping"])}))
    with pytest.raises(GalleryIndexError, match="damaged"):
        GalleryIndex.load(tmp_path)
    del meta["damping"]  # an index built before its characters' own variation was damped
    (tmp_path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(GalleryIndexError, match="earlier hxhbot"):
        GalleryIndex.load(tmp_path)


def test_other_model_is_refused(tmp_path: Path) -> None:
    GalleryIndex.build(clustered(50, 8), _items(50), "fp1").save(tmp_path)
    with pytest.raises(IndexMismatchError, match="rebuild"):
        GalleryIndex.load(tmp_path, "fp2")


def test_missing_and_damaged(tmp_path: Path) -> None:
    with pytest.raises(IndexMissingError):
        GalleryIndex.load(tmp_path / "none")
    GalleryIndex.build(clustered(50, 8), _items(50), "fp").save(tmp_path)
    next(tmp_path.glob("*.npy")).write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(GalleryIndexError, match="damaged"):
        GalleryIndex.load(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(GalleryIndexError, match="damaged"):
        GalleryIndex.load(tmp_path)


def test_new_index_replaces_old_while_old_stays_usable(tmp_path: Path) -> None:
    old_vectors = clustered(100, 8)
    GalleryIndex.build(old_vectors, _items(100), "fp").save(tmp_path)
    live, live_annoy = GalleryIndex.load(tmp_path, "fp"), GalleryIndex.load(tmp_path, "fp")
    live_annoy.matrix = None  # force the Annoy path
    before = live.nearest(old_vectors[5], 3)
    assert [n.item for n in live_annoy.nearest(old_vectors[5], 3)] == [n.item for n in before]
    GalleryIndex.build(clustered(60, 8, seed=9), _items(60), "fp").save(tmp_path)
    assert len(list(tmp_path.glob("*.ann"))) == len(list(tmp_path.glob("*.directions.npy"))) == 1
    assert len(list(tmp_path.glob("*.npy"))) == 2
    assert not list(tmp_path.glob("*.tmp"))
    assert live.nearest(old_vectors[5], 3) == before  # the old mmaps still answer
    assert [n.item for n in live_annoy.nearest(old_vectors[5], 3)] == [n.item for n in before]
    assert len(GalleryIndex.load(tmp_path, "fp")) == 60


def test_similarities_per_character_exact_and_by_annoy() -> None:
    vectors = clustered(100, 16)
    index = GalleryIndex.build(vectors, _items(100), "fp")
    found = index.similarities(vectors[[30, 70]])
    assert found.characters == ["char0", "char1", "char2", "char3"] and found.per_view.shape == (2, 4)
    assert found.per_view[0].argmax() == 1 and found.images[0][1] == "g/30.jpg"
    assert found.per_view[0, 1] == pytest.approx(1.0, abs=1e-5)  # a gallery picture itself: a copy counts alone
    matches = found.rank([0], DEFAULT, top_k=3)
    assert matches[0].character == "char1" and matches[0].image == "g/30.jpg" and len(matches) == 3
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    index.matrix = None  # Annoy: the same best similarities among the nearest neighbours
    by_annoy = index.similarities(vectors[[30, 70]])
    assert np.allclose(by_annoy.per_view, found.per_view, atol=1e-4) and by_annoy.images == found.images
    assert index.characters() == {f"char{c}": 25 for c in range(4)}


def test_a_character_is_as_close_as_its_two_closest_pictures() -> None:
    similarity = np.random.default_rng(0).uniform(-1.0, 0.9, size=(3, 10)).astype(np.float32)  # no copies
    picture = np.array([0, 0, 1, 2, 3, 3, 4, 5, 6, 7])  # views of 8 pictures
    character = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])  # of 3 characters; a fourth has none
    per_character, best = character_similarities(similarity, picture, character, 4)
    for row in range(3):
        for code in range(3):
            columns = np.flatnonzero(character == code)
            closest = [similarity[row, picture == p].max() for p in np.unique(picture[columns])]
            assert per_character[row, code] == pytest.approx(np.mean(sorted(closest)[-2:]))
            assert best[row, code] == columns[np.argmax(similarity[row, columns])]
        assert per_character[row, 3] == -1 and best[row, 3] == -1
    similarity[:, [3, 4, 5]] = -np.inf  # pictures 2 and 3 left out: character 1 has none left
    per_character, best = character_similarities(similarity, picture, character, 4)
    assert (per_character[:, 1] == -1).all() and (best[:, 1] == -1).all()
    one = character_similarities(similarity[:, :1], picture[:1], character[:1], 1)[0]
    assert one[:, 0] == pytest.approx(similarity[:, 0])  # one picture: its own similarity
    copies = character_similarities(np.array([[0.99, 0.2, 0.96, 0.95]]), np.arange(4), np.array([0, 0, 1, 1]), 2)[0]
    assert copies.tolist() == [[0.99, 0.96]]  # a copy of the query counts alone


def test_held_out_pictures_are_compared_as_the_gallery_without_them_would_compare() -> None:
    vectors = clustered(100, 16)
    index = GalleryIndex.build(vectors, _items(100), "fp")
    found = index.held_out_similarities([30, 31])
    rest = np.delete(np.arange(100), [30, 31])
    smaller = GalleryIndex.build(vectors[rest], [_items(100)[row] for row in rest], "fp")
    alone = smaller.similarities(vectors[[30, 31]])
    assert found.per_view == pytest.approx(alone.per_view, abs=1e-5) and found.images == alone.images
    assert "g/30.jpg" not in found.images[0] and not np.allclose(
        found.per_view, index.similarities(vectors[[30, 31]]).per_view
    )


@pytest.mark.parametrize("size", [1800, 20_000])
def test_annoy_settings_reach_recall_099(size: int) -> None:
    vectors, probes = clustered(size, 64), clustered(100, 64, seed=1)
    index = GalleryIndex.build(vectors, _items(size), "fp")
    assert (index.meta["n_trees"], index.search_k) == annoy_settings(size)
    recall = []
    for probe in index.comparison.apply(probes):  # searched as the gallery compares
        exact = set(np.argsort(-(index.matrix @ probe))[:10].tolist())
        found = set(index.annoy.get_nns_by_vector(probe.tolist(), 10, search_k=index.search_k))
        recall.append(len(found & exact) / 10)
    assert np.mean(recall) >= 0.99


def test_exact_search_agrees_with_annoy() -> None:
    vectors = clustered(500, 16)
    index = GalleryIndex.build(vectors, _items(500), "fp")
    assert index.matrix is not None
    exact = [near.item.path for near in index.nearest(vectors[3], 10)]
    index.matrix = None
    assert [near.item.path for near in index.nearest(vectors[3], 10)] == exact


def test_over_the_memory_budget_annoy_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hxhbot.engine.index.EXACT_MAX_BYTES", 1000)
    vectors = clustered(300, 16)
    GalleryIndex.build(vectors, _items(300), "fp").save(tmp_path)
    loaded = GalleryIndex.load(tmp_path, "fp")
    assert loaded.matrix is None and [path.name.split(".")[1] for path in tmp_path.glob("*.npy")] == ["directions"]
    assert loaded.nearest(vectors[42], 1)[0].item.path == "g/42.jpg"


def test_extended_reuses_every_embedding_and_adds_rows(tmp_path: Path) -> None:
    vectors = clustered(60, 16)
    index = GalleryIndex.build(vectors[:50], _items(50), "fp1")
    index.save(tmp_path)
    loaded = GalleryIndex.load(tmp_path, "fp1")
    bigger = loaded.extended(vectors[50:], _items(60)[50:])
    assert len(bigger) == 60 and bigger.fingerprint == "fp1" and len(loaded) == 50
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.allclose(bigger.matrix, Comparison.fit(unit, np.arange(60) // 25).apply(unit), atol=1e-5)  # anew
    assert bigger.nearest(vectors[55], 1)[0].item == _items(60)[55]
    loaded.matrix = None  # served by Annoy: the embeddings come from the Annoy file
    assert np.allclose(loaded.extended(vectors[50:], _items(60)[50:]).matrix, bigger.matrix, atol=1e-6)
