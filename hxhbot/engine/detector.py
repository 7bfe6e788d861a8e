"""Anime faces in a picture: OpenCV's LBP cascade on a small greyscale copy, each box widened to take in the hair."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

CASCADE_FILE = Path(__file__).with_name("lbpcascade_animeface.xml")  # nagadomi, MIT licence in its header
DETECT_SIDE = 320  # detection runs on a copy at most this many pixels on its longer side (~5 ms)
DECODE_SIDE = 2 * DETECT_SIDE  # decode at least this large: faces are lost from coarser copies
MAX_FACES = 3
HAIR = 0.8  # a face box grows by this share of its side, and moves up, to take in hair and outline


@dataclass(frozen=True)
class Box:
    """A region of a picture as shares of its width and height: (left, top, right, bottom) in [0, 1]."""

    left: float
    top: float
    right: float
    bottom: float

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of a `width`×`height` picture (at least one pixel a side)."""
        left, top = int(self.left * width), int(self.top * height)
        return left, top, max(left + 1, round(self.right * width)), max(top + 1, round(self.bottom * height))


class FaceDetector:
    """Find up to `max_faces` anime faces, largest first, as boxes that include the hair."""

    def __init__(self, side: int = DETECT_SIDE, max_faces: int = MAX_FACES, min_neighbours: int = 4) -> None:
        self.side, self.max_faces, self.min_neighbours = side, max_faces, min_neighbours
        cv2.setNumThreads(1)  # the engine searches several pictures at once; OpenCV's own pool would spin beside it
        self._local = threading.local()  # a CascadeClassifier is not safe to share between threads

    def _cascade(self) -> cv2.CascadeClassifier:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = cv2.CascadeClassifier(str(CASCADE_FILE))
            if cascade.empty():
                raise RuntimeError(f"cannot load the face detector {CASCADE_FILE}")
            self._local.cascade = cascade
        return cascade

    def shrink(self, picture: Image.Image) -> Image.Image:
        """The copy of a picture the search runs on, at most `side` pixels a side (smooth, not aliased, pixels: the
        cascade was tuned on them); the answer's preview is drawn on it too."""
        small = picture.copy()
        small.thumbnail((self.side, self.side))
        return small

    def detect(self, picture: Image.Image) -> list[Box]:
        """The faces of an RGB picture (or of its `shrink`), largest first, widened for hair and clipped to it."""
        small = picture if max(picture.size) <= self.side else self.shrink(picture)
        grey = cv2.equalizeHist(np.asarray(small.convert("L")))
        found = self._cascade().detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=self.min_neighbours, minSize=(16, 16)
        )
        boxes = [(float(x), float(y), float(w), float(h)) for x, y, w, h in found]
        faces = sorted(boxes, key=lambda face: -face[2] * face[3])
        return [_with_hair(face, *small.size) for face in faces[: self.max_faces]]


def _with_hair(face: tuple[float, float, float, float], width: int, height: int) -> Box:
    """A square around the face, `HAIR` larger and shifted up, clipped, as shares of the picture."""
    x, y, w, h = face
    side = max(w, h) * (1 + HAIR)
    cx, cy = x + w / 2, y + h / 2 - 0.15 * h
    return Box(
        max(0.0, (cx - side / 2) / width),
        max(0.0, (cy - side / 2) / height),
        min(1.0, (cx + side / 2) / width),
        min(1.0, (cy + side / 2) / height),
    )
