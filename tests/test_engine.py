"""Model directory, embedder and gallery indexing on a generated gallery (weights=None: offline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from hxhbot.engine import embedder as embedder_module
from hxhbot.engine.confidence import DEFAULT
from hxhbot.engine.embedder import Embedder
from hxhbot.engine.gallery import GalleryError, scan_gallery
from hxhbot.engine.images import load_image_file
from hxhbot.engine.index import GalleryIndex
from hxhbot.engine.indexing import FEW_PICTURES, build_gallery_index
from hxhbot.engine.model_dir import ModelError, build_pretrained, load_model_dir
from tests.conftest import TEST_INPUT_SIZE, write_gallery


def test_saved_model_embeds_like_the_built_one(model_dir: Path, embedder: Embedder) -> None:
    model, config = load_model_dir(model_dir)
    assert config.input_size == TEST_INPUT_SIZE and config.embedding_dim == 1280
    batch = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    vectors = embedder.embed(batch)
    assert vectors.shape == (5, 1280)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    direct = model(batch, training=False).numpy()
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    assert np.allclose(vectors, direct, atol=1e-5)
    assert np.allclose(embedder.embed(batch[2]), vectors[2:3], atol=1e-5)  # one image, same answer


def test_fallback_to_pretrained_when_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = {}

    def offline_pretrained(weights: str | None = "imagenet") -> object:
        asked["weights"] = weights
        return build_pretrained(TEST_INPUT_SIZE, weights=None)

    monkeypatch.setattr(embedder_module, "build_pretrained", offline_pretrained)
    fallback = Embedder.load(tmp_path)
    assert asked == {"weights": "imagenet"}  # Keras's normal download path in the product
    assert fallback.config.variant == "pretrained" and fallback.dim == 1280 and fallback.fingerprint


def test_broken_model_dir_is_a_clear_error(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="config.json"):
        Embedder.load(tmp_path)
    half = tmp_path / "half"  # a model without its config is no reason to fall back to ImageNet features
    half.mkdir()
    (half / "model.keras").write_bytes((model_dir / "model.keras").read_bytes())
    with pytest.raises(ModelError, match="config.json is missing"):
        Embedder.load(half)
    with pytest.raises(ModelError, match="is a file: set MODEL_DIR to a model folder"):
        Embedder.load(tmp_path / "config.json")


def test_gallery_scan(gallery: Path) -> None:
    (gallery / "Kurapika" / "notes.txt").write_text("x")
    (gallery / ".hidden").mkdir()
    for name in ("  ", "N" * 101):  # no name, and one longer than Discord shows in a menu
        (gallery / name).mkdir()
        (gallery / name / "01.jpg").write_bytes((gallery / "Kurapika" / "01.jpg").read_bytes())
    (gallery / ("Long" * 25)).mkdir()  # 100: the longest name taken
    (gallery / ("Long" * 25) / "01.jpg").write_bytes((gallery / "Kurapika" / "01.jpg").read_bytes())
    files, skipped = scan_gallery(gallery)
    assert len(files) == 17 and {f.character for f in files} == {
        "Gon Freecss",
        "Killua Zoldyck",
        "Kurapika",
        "Leorio Paradinight",
        "Long" * 25,
    }
    reasons = {path.name: reason for path, reason in skipped}
    assert set(reasons) == {"  ", "N" * 101, "notes.txt"}
    assert reasons["  "] == reasons["N" * 101] == "a character's name must have 1 to 100 characters (the folder's name)"
    with pytest.raises(GalleryError, match="does not exist"):
        scan_gallery(gallery / "missing")
    with pytest.raises(GalleryError, match="is a file: it must be a folder"):
        scan_gallery(gallery / "Kurapika" / "01.jpg")


def test_build_skips_unreadable_files(gallery: Path, embedder: Embedder, tmp_path: Path) -> None:
    (gallery / "Kurapika" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    (gallery / "Gon Freecss" / "empty.png").write_bytes(b"")
    index, summary = build_gallery_index(gallery, embedder, tmp_path / "index")
    assert (summary.characters, summary.images, len(summary.skipped)) == (4, 16, 2)
    assert {Path(path).name for path, _ in summary.skipped} == {"broken.jpg", "empty.png"}
    query = load_image_file(gallery / "Killua Zoldyck" / "02.jpg", embedder.input_size)
    best = index.similarities(embedder.embed(query)).rank([0], DEFAULT, 3)[0]
    assert best.character == "Killua Zoldyck" and best.image.endswith("02.jpg")
    assert GalleryIndex.load(tmp_path / "index", embedder.fingerprint).characters()["Kurapika"] == 4


def test_rebuild_reuses_embeddings_of_unchanged_images(gallery: Path, embedder: Embedder, tmp_path: Path) -> None:
    build_gallery_index(gallery, embedder, tmp_path)
    shutil.copy(gallery / "Kurapika" / "00.jpg", gallery / "Kurapika" / "copy.jpg")
    _, summary = build_gallery_index(gallery, embedder, tmp_path)
    assert summary.images == 17 and summary.reused == 17  # the copy has a known checksum


def test_summary_names_the_characters_with_few_images(tmp_path: Path, embedder: Embedder) -> None:
    gallery = write_gallery(tmp_path / "gallery", per_character=FEW_PICTURES)
    for number, name in enumerate(["Kurapika", "Gon Freecss", "Killua Zoldyck"]):
        for path in sorted((gallery / name).iterdir())[: 3 + number]:
            path.unlink()
    _, summary = build_gallery_index(gallery, embedder, tmp_path / "index")
    assert summary.few == {"Killua Zoldyck": 3, "Gon Freecss": 4, "Kurapika": 5}  # fewest first
    assert summary.describe().endswith(
        f"; fewer than {FEW_PICTURES} images (more would rank them better): "
        "Killua Zoldyck (3), Gon Freecss (4), Kurapika (5)"
    )
    (gallery / "Leorio Paradinight" / "00.jpg").unlink()
    _, summary = build_gallery_index(gallery, embedder, tmp_path / "index")
    assert "Killua Zoldyck (3), Gon Freecss (4), Kurapika (5) and 1 more" in summary.describe()
    write_gallery(gallery, per_character=FEW_PICTURES)
    _, summary = build_gallery_index(gallery, embedder, tmp_path / "index")
    assert summary.few == {} and "fewer than" not in summary.describe()


def test_failed_build_keeps_the_previous_index(
    gallery: Path, embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_gallery_index(gallery, embedder, tmp_path)
    before = (tmp_path / "index.json").read_bytes()
    write_gallery(gallery, per_character=6, characters={"Zushi": (250, 120, 0)})  # new images to embed
    monkeypatch.setattr(Embedder, "embed", lambda self, images: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError, match="crash"):
        build_gallery_index(gallery, embedder, tmp_path)
    assert (tmp_path / "index.json").read_bytes() == before
    assert len(GalleryIndex.load(tmp_path, embedder.fingerprint)) == 16


def test_empty_gallery_is_an_error(tmp_path: Path, embedder: Embedder) -> None:
    (tmp_path / "gallery" / "Gon").mkdir(parents=True)
    with pytest.raises(GalleryError, match="no readable images"):
        build_gallery_index(tmp_path / "gallery", embedder, tmp_path / "index")
