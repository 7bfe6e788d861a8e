"""The face detector and the views the model sees: real pictures from ../shared, generated ones for the edges."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from hxhbot.engine.confidence import DEFAULT
from hxhbot.engine.crops import load_views, picture_views
from hxhbot.engine.detector import Box, FaceDetector
from hxhbot.engine.images import to_array
from hxhbot.engine.index import GalleryIndex, GalleryItem
from tests.conftest import encode

WITH_FACE = (
    "Chrollo Lucilfer/Nosferatzod__hunter_wiki__chrollo.jpg",
    "Chrollo Lucilfer/TaviManrique__hxh-server__chrollolucilfer.jpg",
)


def test_finds_the_face_with_its_hair_in_real_pictures(hxh_dev: Path) -> None:
    detector = FaceDetector()
    for name in WITH_FACE:
        picture = Image.open(hxh_dev / name).convert("RGB")
        boxes = detector.detect(picture)
        assert boxes, name
        box = boxes[0]
        assert 0 <= box.left < box.right <= 1 and 0 <= box.top < box.bottom <= 1
        assert 0.05 < (box.right - box.left) < 0.9, "a head, not the whole picture"


class _Recording:
    """A cascade that notes the shape of every picture it searches."""

    def __init__(self, cascade: object) -> None:
        self.cascade, self.shapes = cascade, []

    def detectMultiScale(self, grey: np.ndarray, **options: object) -> object:  # noqa: N802 (OpenCV's name)
        self.shapes.append(grey.shape)
        return self.cascade.detectMultiScale(grey, **options)


def test_nothing_in_plain_pictures_and_big_ones_are_searched_on_a_small_copy() -> None:
    detector = FaceDetector()
    recording = _Recording(detector._cascade())
    detector._cascade = lambda: recording  # type: ignore[method-assign]
    assert detector.detect(Image.new("RGB", (640, 360), (30, 140, 60))) == []
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (2000, 3000, 3), dtype=np.uint8))
    detector.detect(noise)
    assert recording.shapes == [(180, 320), (213, 320)]  # at most DETECT_SIDE a side, whatever the picture's size


def test_views_are_the_whole_picture_then_each_face(hxh_dev: Path) -> None:
    data = (hxh_dev / WITH_FACE[0]).read_bytes()
    views = load_views(data, 64, FaceDetector())
    assert views.arrays.shape == (1 + len(views.boxes), 64, 64, 3) and views.boxes
    assert load_views(data, 64, None).arrays.shape == (1, 64, 64, 3)
    picture = Image.new("RGB", (200, 100), (0, 0, 255))
    picture.paste((255, 0, 0), (100, 0, 200, 100))
    arrays = picture_views(picture, [Box(0.5, 0.0, 1.0, 1.0)], 16)
    assert arrays[1].mean(axis=(0, 1)).round().tolist() == [255.0, 0.0, 0.0]  # the crop is the red half
    assert load_views(encode(picture, "PNG"), 16, FaceDetector()).arrays.shape == (1, 16, 16, 3)


def test_the_whole_view_made_beside_the_face_search_is_the_same(hxh_dev: Path) -> None:
    data = (hxh_dev / WITH_FACE[0]).read_bytes()
    with ThreadPoolExecutor(1) as beside:
        submitted = []
        submit = beside.submit
        beside.submit = lambda *call: submitted.append(call[0]) or submit(*call)  # type: ignore[method-assign]
        together = load_views(data, 224, FaceDetector(), beside=beside)
    alone = load_views(data, 224, FaceDetector())
    assert submitted == [to_array] and together.boxes == alone.boxes and len(alone.boxes) >= 1
    assert np.array_equal(together.arrays, alone.arrays)


def test_a_face_seen_in_any_view_ranks_its_character() -> None:
    rng = np.random.default_rng(1)
    a, b, whole = (v / np.linalg.norm(v) for v in rng.normal(size=(3, 32)))
    items = [GalleryItem("A", "a.jpg", "1"), GalleryItem("B", "b.jpg", "2", 0), GalleryItem("B", "b.jpg", "2", 1)]
    index = GalleryIndex.build(np.stack([a, whole, b]), items, "fp")
    assert index.characters() == {"A": 1, "B": 1}, "views are not counted as pictures"
    query = np.stack([a * 0.2 + whole, b + 0.05 * a])  # the frame looks unlike A; its face is B's
    found = index.similarities(query / np.linalg.norm(query, axis=1, keepdims=True))
    assert found.rank((0, 1), DEFAULT, 2)[0].character == "B"
