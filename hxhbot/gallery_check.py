"""The owner's gallery checked against itself: each picture answered by the rest of the index (leave-one-out), and
again with its whole character left out, as a member's picture of a character missing from the gallery would be."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hxhbot.answers import identify
from hxhbot.confidence import Calibration
from hxhbot.detector import Box
from hxhbot.index import GalleryIndex, Similarities

MAX_PICTURES = 2000  # pictures checked at most (a seeded sample beyond)


@dataclass(frozen=True)
class GalleryCheck:
    """How the bot answers its own gallery's pictures, each ranked against all the others."""

    pictures: int
    named: int  # answered with a confident name
    right: int  # of those, the picture's own character
    missing: int = 0  # the same pictures asked with their whole character left out (0: the gallery has only one)
    missing_named: int = 0  # of those, answered with a confident name: always a wrong one

    def describe(self) -> str:
        """One line for people."""
        if not self.pictures:
            return "gallery check: no character has a second picture"
        share = f"{self.right / self.named:.0%} of them right" if self.named else "none to check"
        line = (f"gallery check (each picture against the rest): {self.named / self.pictures:.0%} of "
                f"{self.pictures} named confidently, {share}")
        if self.missing:
            line += (f"; with its character left out of the gallery, {self.missing_named / self.missing:.0%} "
                     "still named (wrongly)")
        return line


def check_gallery(index: GalleryIndex, calibration: Calibration, threshold: float) -> GalleryCheck:
    """Answer every gallery picture (its own views left out) whose character has other pictures, at `threshold`;
    then, if the gallery has another character, the same pictures with their whole character left out."""
    views: dict[str, list[int]] = {}
    for row, item in enumerate(index.items):
        views.setdefault(item.sha256, []).append(row)
    counts = index.characters()
    pictures = [rows for rows in views.values() if counts.get(index.items[rows[0]].character, 0) > 1]
    if len(pictures) > MAX_PICTURES:
        pictures = random.Random(0).sample(pictures, MAX_PICTURES)
    embeddings = np.split(index.vectors([row for rows in pictures for row in rows]),
                          np.cumsum([len(rows) for rows in pictures])[:-1])  # given back in one pass
    named = right = 0
    for rows, vectors in zip(pictures, embeddings):
        item = index.items[rows[0]]
        answer = identify(index.similarities(vectors, exclude=item.sha256), _faces(rows), calibration, top_k=1)
        if answer.best.score >= threshold:
            named += 1
            right += answer.best.character == item.character
    if len(counts) < 2:
        return GalleryCheck(len(pictures), named, right)
    missing_named = 0
    by_character: dict[str, list[int]] = {}
    for number, rows in enumerate(pictures):
        by_character.setdefault(index.items[rows[0]].character, []).append(number)
    for character, numbers in by_character.items():  # one search per character left out
        together = index.similarities(np.concatenate([embeddings[n] for n in numbers]), without=character)
        bounds = np.cumsum([0] + [len(embeddings[n]) for n in numbers])
        for number, start, end in zip(numbers, bounds, bounds[1:]):
            alone = Similarities(together.characters, together.per_view[start:end], together.images[start:end])
            missing_named += identify(alone, _faces(pictures[number]), calibration, top_k=1).best.score >= threshold
    return GalleryCheck(len(pictures), named, right, len(pictures), missing_named)


def _faces(rows: list[int]) -> list[Box]:
    """Stand-in boxes for a gallery picture's face views: only their number matters to the answer."""
    return [Box(0.0, 0.0, 1.0, 1.0)] * (len(rows) - 1)


def checker(calibration: Calibration, threshold: float) -> Callable[[GalleryIndex], GalleryCheck]:
    """`check_gallery` at these settings, for `build_gallery_index(check=...)`."""
    return lambda index: check_gallery(index, calibration, threshold)
