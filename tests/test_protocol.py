"""The protocol for characters never trained on: sources kept on one side, validation characters spread over
series, held-out characters ranked among many others exactly as the evaluation (and so the index) ranks."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.embedder import Embedder
from hxhbot.engine.model_dir import load_model_dir, save_model_dir
from tests.conftest import encode, write_gallery
from training import protocol
from training.data import Split, artwork_keys, make_split, scan_characters, source_groups
from training.evaluate import embed_pictures, evaluate
from training.model import build

POOL = {
    f"{series} - {n}": ((n * 70 + k * 40) % 256, (n * 30 + 90) % 256, (k * 110 + 20) % 256)
    for k, (series, count) in enumerate((("Alpha", 6), ("Beta", 3), ("Gamma", 1), ("Delta", 1), ("Eta", 1)))
    for n in range(count)
}
HELD = {f"Hunter {n}": ((n * 90 + 30) % 256, 200, (n * 50) % 256) for n in range(3)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("protocol")
    return write_gallery(root / "pool", 5, POOL), write_gallery(root / "hunters", 5, HELD)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated characters have 5 pictures: let 3 from 2 sources make a validation character."""
    monkeypatch.setattr(protocol, "MIN_PICTURES", 3)
    monkeypatch.setattr(protocol, "MIN_SOURCES", 2)
    monkeypatch.setattr(protocol, "GALLERY_SIZE", 3)


def test_one_artwork_cut_at_several_scales_is_one_source(tmp_path: Path) -> None:
    folder = tmp_path / "set" / "Arknights - Amiya"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["character,file,source_repo,source_path"]
    for number, source in enumerate(
        [
            "img/characters/char_002_amiya_1.png",
            "img/avatars/char_002_amiya_1.png",
            "img/portraits/char_002_amiya_epoque#4.png",
            "img/avatars/char_002_amiya_epoque4.png",
            "img/characters/char_002_amiya_2.png",
        ]
    ):
        picture = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        (folder / f"{number}.jpg").write_bytes(encode(Image.fromarray(picture)))
        rows.append(f"Arknights - Amiya,{number}.jpg,owner/repo,{source}")
    (tmp_path / "set" / "SOURCES.csv").write_text("\n".join(rows) + "\n")
    artwork_keys.cache_clear()
    keys = artwork_keys(str(tmp_path / "set"))
    assert keys[("Arknights - Amiya", "2.jpg")] == keys[("Arknights - Amiya", "3.jpg")] == "char002amiyaepoque4"
    groups = source_groups(sorted(str(p) for p in folder.iterdir()))
    assert sorted(sorted(Path(p).name for p in group) for group in groups) == [
        ["0.jpg", "1.jpg"],
        ["2.jpg", "3.jpg"],
        ["4.jpg"],
    ]
    assert artwork_keys(str(tmp_path)) == {}  # no SOURCES.csv: file names and pixels alone


def test_named_characters_are_held_out_and_training_keeps_to_its_folders(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pool, hunters = folders
    split = make_split(
        [hunters, pool], 0, gallery_size=3, query=0.0, held_out=[hunters], unseen_characters=["Beta - 0", "Gamma - 0"]
    )
    assert set(split.unseen) == set(HELD) | {"Beta - 0", "Gamma - 0"} and not set(split.unseen) & set(split.seen)
    assert "Beta - 0" not in split.train and set(split.seen) == set(POOL) - {"Beta - 0", "Gamma - 0"}
    assert make_split([hunters, pool], 0, gallery_size=3, held_out=[hunters]).seen == sorted(POOL)  # none named
    only = split.training_only([hunters])  # what a run given --data hunters alone trains on: nothing of the pool
    assert only.seen == [] and only.training_images() == ([], [])
    assert set(only.unseen) == set(split.unseen) and only.gallery["Beta - 0"] == split.gallery["Beta - 0"]
    assert split.training_only([pool, hunters]) == split
    twice = tmp_path / "twice"  # one name in two folders is one character
    write_gallery(twice, 2, {"Alpha - 0": (10, 20, 30)})
    merged = make_split([pool, twice], 0, gallery_size=2)
    assert merged.seen.count("Alpha - 0") == 1 and len(merged.train["Alpha - 0"]) + len(merged.query["Alpha - 0"]) == 7


def test_validation_characters_spread_over_series(folders: tuple[Path, Path], small: None) -> None:
    pool, _ = folders
    chosen = protocol.validation_identities([pool], count=5, seed=0)
    assert sorted(protocol.series_of(name) for name in chosen) == ["Alpha", "Beta", "Delta", "Eta", "Gamma"]
    assert protocol.validation_identities([pool], count=5, seed=0) == chosen  # seeded
    with pytest.raises(ValueError, match="too few characters"):
        protocol.validation_identities([pool], count=6)  # a fifth of 6 is 1 a series, and there are 5 series
    assert protocol.series_of("Naruto - Sakura Haruno") == "Naruto" and protocol.series_of("Gon") == "Gon"


def test_ranking_is_the_evaluations_own(folders: tuple[Path, Path], model_dir: Path) -> None:
    pool, hunters = folders
    split = make_split([hunters, pool], 0, gallery_size=2, query=0.0, held_out=[hunters])
    embedder = Embedder.load(model_dir)
    expected = evaluate(embedder, split, hunters, threshold=0.5)["unseen"]
    paths = sorted(p for name in HELD for p in split.gallery[name] + split.query[name])
    vectors, owners = embed_pictures(embedder, paths, None)
    figures = protocol.rank(vectors, owners, paths, split, sorted(HELD), sorted(HELD))
    for key in ("queries", "characters", "top1", "top5", "map@r", "per_character"):
        assert figures[key] == expected[key], key
    shuffled = protocol.rank(vectors, owners, paths, split, sorted(HELD)[::-1], sorted(HELD)[1:] + sorted(HELD)[:1])
    assert {key: shuffled[key] for key in ("top1", "top5", "per_character")} == {
        key: figures[key] for key in ("top1", "top5", "per_character")
    }  # whatever order the characters are listed in


def test_cli_splits_and_ranks_held_out_characters_among_the_validation_ones(
    folders: tuple[Path, Path], model_dir: Path, tmp_path: Path, small: None, capsys: pytest.CaptureFixture
) -> None:
    pool, hunters = folders
    out = tmp_path / "protocol"
    args = ["split", "--data", str(hunters), str(pool), "--held-out", str(hunters), "--validation", "5", "--out"]
    assert protocol.main([*args, str(out)]) == 0
    validation = json.loads((out / "validation.json").read_text())
    splits = [json.loads((out / f"split-{n}.json").read_text()) for n in range(3)]
    assert len(validation) == 5 and all(sorted(s["unseen"]) == sorted(set(HELD) | set(validation)) for s in splits)
    assert splits[0]["gallery"] != splits[1]["gallery"] != splits[2]["gallery"]  # the same characters, other pictures
    for split in splits:
        for name in split["unseen"]:
            assert split["gallery"][name] and split["query"][name]
            assert not set(split["gallery"][name]) & set(split["query"][name])
    result = tmp_path / "result.json"
    evaluated = ["evaluate", "--model", str(model_dir), "--splits", str(out), "--json", str(tmp_path / "all.json")]
    assert protocol.main([*evaluated, "--result", str(result), "--command", "python -m training.protocol …"]) == 0
    table = json.loads(result.read_text())
    assert set(table) == {"title", "command", "protocol", "date", "columns", "rows"}
    rows = {row[1]: row for row in table["rows"]}
    assert set(rows) == {"validation", "hunters", "hunters + validation"}
    assert (
        rows["hunters + validation"][2] == 3 + 5 and rows["hunters"][2] == 3 and rows["validation"][2] == 5
    )  # characters
    assert rows["hunters + validation"][3] == rows["hunters"][3]  # the same queries, among more characters
    assert len(rows["validation"][5].split(" / ")) == 3
    again = tmp_path / "again.json"
    with pytest.MonkeyPatch.context() as patch:  # a model ranked before is read back, not ranked again
        patch.setattr(protocol, "evaluate_model", lambda *_: pytest.fail("ranked a model again"))
        assert protocol.main([*evaluated, "--previous", str(tmp_path / "all.json"), "--result", str(again)]) == 0
    assert json.loads(again.read_text())["rows"] == table["rows"]
    report = json.loads((tmp_path / "all.json").read_text())["models"][str(model_dir)]
    assert set(report["hunters + validation"][0]["per_character"]) == set(HELD)
    config = json.loads((model_dir / "config.json").read_text())
    trained = tmp_path / "trained"
    trained.mkdir()
    for name in ("model.keras", "config.json"):
        (trained / name).write_bytes((model_dir / name).read_bytes())
    (trained / "config.json").write_text(json.dumps({**config, "trained_on": [validation[0]]}))
    with pytest.raises(SystemExit):
        protocol.main(["evaluate", "--model", str(trained), "--splits", str(out), "--json", str(tmp_path / "x.json")])
    assert "trained on characters the protocol holds out" in capsys.readouterr().err
    assert scan_characters(hunters).keys() == HELD.keys()


def test_a_tuned_model_ranks_alike_from_the_view_cache(
    folders: tuple[Path, Path], tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool, hunters = folders
    out, tuned, cache = tmp_path / "protocol", tmp_path / "tuned", tmp_path / "cache"
    args = ["split", "--data", str(hunters), str(pool), "--held-out", str(hunters), "--validation", "5", "--out"]
    assert protocol.main([*args, str(out)]) == 0
    save_model_dir(build("tuned", 32, weights=None), "tuned", tuned)
    paths = sorted(str(path) for path in hunters.rglob("*.jpg"))
    cached, cached_owners = protocol.embed_cached(load_model_dir(tuned)[0], paths, cache)
    engine = partial(embed_pictures, Embedder.load_keras(tuned), detector=FaceDetector())
    vectors, owners = engine(paths)
    assert np.array_equal(owners, cached_owners)
    assert np.min(np.sum(cached * vectors, axis=1)) > 0.999  # the same views; maps kept at 16 bits
    result = tmp_path / "result.json"
    evaluated = ["evaluate", "--model", str(tuned), "--splits", str(out), "--json", str(tmp_path / "all.json")]
    extra = ["--cache", str(cache), "--title", "From the cache", "--rankings", "hunters", "--result", str(result)]
    assert protocol.main([*evaluated, *extra]) == 0
    table = json.loads(result.read_text())
    splits = [Split.load(out / f"split-{n}.json") for n in range(3)]
    cached_embed = partial(protocol.embed_cached, load_model_dir(tuned)[0], cache=cache)
    expected = protocol.evaluate_model(cached_embed, splits, json.loads((out / "validation.json").read_text()))
    assert table["title"] == "From the cache" and [row[1] for row in table["rows"]] == ["hunters"]
    assert table["rows"][0][5] == " / ".join(f"{figures['top1']:.3f}" for figures in expected["hunters"])
    monkeypatch.setattr(protocol, "evaluate_model", lambda *_: pytest.fail("evaluated a folder that holds no model"))
    with pytest.raises(SystemExit):
        protocol.main(["evaluate", "--model", str(tmp_path), "--splits", str(out), "--json", str(tmp_path / "x.json")])
