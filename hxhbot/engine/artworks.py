"""Which gallery pictures are cuts or copies of one artwork: their keypoints (SIFT) matched, and enough of the
matches agreeing on one move-and-scale of the picture (RANSAC). The gallery check keeps an artwork's pictures together,
so that no cut answers for another (`hxhbot.engine.gallery_check`); the rule is measured in docs/confidence.md."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hxhbot.engine.disjoint_sets import DisjointSets
from hxhbot.engine.images import TRUSTED_DECODE_BYTES, TRUSTED_MAX_BYTES, ImageError, decode_image, read_image_file

log = logging.getLogger(__name__)

SIDE = 384  # pixels of the longer side the pictures are compared at
KEYPOINTS = 500  # SIFT keypoints kept per picture at most
RATIO = 0.75  # a match counts when its closest keypoint is this much closer than the second closest (Lowe's test)
SHIFT = 5.0  # pixels (at `SIDE`) a matched keypoint may land from where the move-and-scale puts it
JUDGES = 2  # characters judged at once (SIFT and the matching release the GIL): an index build's cores
SAME_ARTWORK = 12  # matches agreeing on one move-and-scale: from this many, one artwork (docs/confidence.md)


@dataclass(frozen=True)
class Keypoints:
    """A picture's keypoints: where they are (pixels at `SIDE`) and what they look like (SIFT descriptors)."""

    places: np.ndarray
    descriptors: np.ndarray


def keypoints(path: str | Path) -> Keypoints | None:
    """A gallery picture's keypoints; None when it cannot be read or has too few to compare."""
    try:
        picture = decode_image(
            read_image_file(path, TRUSTED_MAX_BYTES),
            max_bytes=TRUSTED_MAX_BYTES,
            max_decode_bytes=TRUSTED_DECODE_BYTES,
            draft_size=SIDE,
        ).convert("L")
    except (ImageError, OSError) as error:
        log.info("%s: not compared with its character's other pictures (%s)", path, error)
        return None
    picture.thumbnail((SIDE, SIDE))
    sift = cv2.SIFT_create(nfeatures=KEYPOINTS)  # type: ignore[attr-defined]  # cv2's stubs lack it
    found, descriptors = sift.detectAndCompute(np.asarray(picture), None)
    if descriptors is None or len(found) < 4:
        return None
    return Keypoints(np.array([point.pt for point in found], dtype=np.float32), descriptors)


def agreeing_matches(first: Keypoints | None, second: Keypoints | None) -> int:
    """How many of `first`'s keypoints match `second`'s and agree on one move-and-scale between them."""
    if first is None or second is None or len(second.descriptors) < 2:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(first.descriptors, second.descriptors, k=2)
    good = [pair[0] for pair in pairs if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance]
    if len(good) < SAME_ARTWORK:
        return len(good)
    _, agree = cv2.estimateAffinePartial2D(
        first.places[[match.queryIdx for match in good]],
        second.places[[match.trainIdx for match in good]],
        method=cv2.RANSAC,
        ransacReprojThreshold=SHIFT,
    )
    return int(agree.sum()) if agree is not None else 0


def one_artwork(paths: list[str]) -> Callable[[int, int], bool]:
    """Whether two of `paths` (pictures of one character, by number) are one artwork: `SAME_ARTWORK` matches or more,
    those of the earlier path (by name) looked for in the later."""
    found = [keypoints(path) for path in paths]

    def same(first: int, second: int) -> bool:
        first, second = sorted((first, second), key=lambda number: paths[number])
        return agreeing_matches(found[first], found[second]) >= SAME_ARTWORK

    return same


def artworks(
    paths: list[str], characters: list[str], judge: Callable[[list[str]], Callable[[int, int], bool]] = one_artwork
) -> list[int]:
    """Per picture, the number of its artwork: two pictures of one character that `judge` finds one artwork are one,
    and so are the pictures chained to them. Characters are judged `JUDGES` at a time."""
    by_character: dict[str, list[int]] = {}
    for number, character in enumerate(characters):
        by_character.setdefault(character, []).append(number)
    artwork = list(range(len(paths)))
    with ThreadPoolExecutor(JUDGES, thread_name_prefix="hxhbot-artworks") as pool:
        groups = pool.map(
            lambda numbers: _one_character([paths[number] for number in numbers], judge), by_character.values()
        )
        for numbers, firsts in zip(by_character.values(), groups):
            for number, first in zip(numbers, firsts):
                artwork[number] = numbers[first]
    return artwork


def _one_character(paths: list[str], judge: Callable[[list[str]], Callable[[int, int], bool]]) -> list[int]:
    """Per picture of one character, the place of the picture its artwork is numbered by."""
    sets = DisjointSets(len(paths))
    if len(paths) > 1:
        same = judge(paths)
        for number in range(len(paths)):
            for other in range(number):
                if sets.root(number) != sets.root(other) and same(number, other):
                    sets.join(number, other)
    return [sets.root(number) for number in range(len(paths))]
