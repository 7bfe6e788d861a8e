"""What the model sees of a picture: the whole frame, then every detected face with its hair, each letterboxed."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hxhbot.engine.detector import DECODE_SIDE, Box, FaceDetector
from hxhbot.engine.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_PIXELS, decode_image, to_array
from hxhbot.engine.memory_budget import MemoryBudget
from hxhbot.engine.preview import numbered_preview

DETAIL = 4  # decode at least this many times the input size a side, so a face a quarter as wide keeps its detail


@dataclass(frozen=True)
class Views:
    """The model's input arrays for one picture (row 0: the whole frame; row i: `boxes[i - 1]`, left to right)."""

    arrays: np.ndarray
    boxes: list[Box]
    preview: bytes | None = None  # with `preview=True`: a small JPEG of the picture, box i numbered i + 1


def picture_views(picture: Image.Image, boxes: list[Box], size: int, whole: np.ndarray | None = None) -> np.ndarray:
    """The whole picture (`whole`, when already made), then the crop of each box, each letterboxed to a
    `(size, size, 3)` 0–255 array."""
    crops = [picture.crop(box.pixels(*picture.size)) for box in boxes]
    return np.stack([to_array(picture, size) if whole is None else whole] + [to_array(crop, size) for crop in crops])


def decode_for_views(
    data: bytes,
    size: int,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    budget: MemoryBudget | None = None,
) -> Image.Image:
    """Decode image bytes (within `budget`, when given) large enough for the face search and every view at `size`."""
    return decode_image(
        data,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        max_decode_bytes=max_decode_bytes,
        budget=budget,
        draft_size=max(DETAIL * size, DECODE_SIDE),
    )


def faces(picture: Image.Image, detector: FaceDetector | None) -> list[Box]:
    """The faces of a picture from left to right (none without a detector)."""
    return sorted(detector.detect(picture), key=lambda box: box.left) if detector else []


def load_views(
    data: bytes,
    size: int,
    detector: FaceDetector | None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    budget: MemoryBudget | None = None,
    preview: bool = False,
    beside: Executor | None = None,
) -> Views:
    """Decode image bytes (within `budget`, when given), find its faces (none without a detector) and return the
    model's views of it; with `beside`, the whole picture's view is made there while this thread searches faces
    (the same arrays, sooner: for a picture alone on an idle core)."""
    picture = decode_for_views(
        data, size, max_bytes=max_bytes, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes, budget=budget
    )
    whole = beside.submit(to_array, picture, size) if beside is not None and detector is not None else None
    small = detector.shrink(picture) if detector else picture  # one small copy for the face search and the preview
    boxes = faces(small, detector)
    arrays = picture_views(picture, boxes, size, whole.result() if whole is not None else None)
    return Views(arrays, boxes, numbered_preview(small, boxes) if preview else None)
