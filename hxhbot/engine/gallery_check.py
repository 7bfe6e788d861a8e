"""The owner's gallery checked against itself: each picture answered as if new, by the gallery without a fifth of it
(itself among them, the comparison fitted without them), and again with its whole character left out, as a member's
picture of a character missing from the gallery would be."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hxhbot.engine.confidence import Calibration
from hxhbot.engine.detector import Box
from hxhbot.engine.identification import identify
from hxhbot.engine.index import CharacterMatch, GalleryIndex, Similarities
from hxhbot.wording import first_few

MAX_PICTURES = 2000  # pictures checked at most (a seeded sample beyond)
FOLDS = 5  # each picture is asked against the gallery without its fold: a fifth of every character's pictures
NAMED_LEAST = 0.5  # a character whose pictures are named right less often than this is listed by name


@dataclass(frozen=True)
class CharacterCheck:
    """One character's pictures in the check: how many, how many named right, whom they are most often taken for."""

    pictures: int
    named_right: int
    taken_for: str | None = None  # the other character most often ranked first for its pictures, if any


@dataclass(frozen=True)
class GalleryCheck:
    """How the bot answers its own gallery's pictures, each as if new (`check_gallery`)."""

    pictures: int
    named: int  # answered with a confident name
    right: int  # of those, the picture's own character
    missing: int = 0  # the same pictures asked with their whole character left out (0: the gallery has only one)
    missing_named: int = 0  # of those, answered with a confident name: always a wrong one
    characters: dict[str, CharacterCheck] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for people."""
        if not self.pictures:
            return "gallery check: no character has a second picture"
        share = f"{self.right / self.named:.0%} of them right" if self.named else "none to check"
        line = (
            f"gallery check (each picture against the rest, as if new): {self.named / self.pictures:.0%} of "
            f"{self.pictures} named confidently, {share}"
        )
        if self.missing:
            line += (
                f"; with its character left out of the gallery, {self.missing_named / self.missing:.0%} "
                "still named (wrongly)"
            )
        return line + self._named_least()

    def _named_least(self) -> str:
        """The characters whose pictures are named right least often, below `NAMED_LEAST`, as a clause."""
        least = sorted(
            (
                (c.named_right / c.pictures, name, c)
                for name, c in self.characters.items()
                if c.named_right < NAMED_LEAST * c.pictures
            ),
            key=lambda row: row[:2],
        )
        if not least:
            return ""
        return "; named least: " + first_few(
            [
                f"{name} ({c.named_right} of {c.pictures}"
                + (f", often ranked as {c.taken_for})" if c.taken_for else ")")
                for _, name, c in least
            ]
        )


def check_gallery(index: GalleryIndex, calibration: Calibration, threshold: float) -> GalleryCheck:
    """Answer every gallery picture whose character has other pictures, at `threshold`, against the gallery without
    its fold (`FOLDS`), compared as that smaller gallery would compare, so that no picture helps compare itself; then,
    if the gallery has another character, the same pictures with their whole character left out as well."""
    views: dict[str, list[int]] = {}
    for row, item in enumerate(index.items):
        views.setdefault(item.sha256, []).append(row)
    counts = index.characters()
    pictures = [rows for rows in views.values() if counts.get(index.items[rows[0]].character, 0) > 1]
    if len(pictures) > MAX_PICTURES:
        pictures = random.Random(0).sample(pictures, MAX_PICTURES)
    named = missing_named = 0
    checked: Counter[str] = Counter()
    named_right: Counter[str] = Counter()
    taken_for: dict[str, Counter[str]] = {}
    for fold in _folds(index, pictures):
        together = index.held_out_similarities([row for number in fold for row in pictures[number]])
        bounds = np.cumsum([0] + [len(pictures[number]) for number in fold])
        for number, start, end in zip(fold, bounds, bounds[1:]):
            rows, character = pictures[number], index.items[pictures[number][0]].character
            per_view = together.per_view[start:end]
            answer = _identify(
                Similarities(together.characters, per_view, together.images[start:end]), rows, calibration
            )
            checked[character] += 1
            if answer.character != character:
                taken_for.setdefault(character, Counter())[answer.character] += 1
            if answer.score >= threshold:
                named += 1
                named_right[character] += answer.character == character
            if len(counts) > 1:  # asked again as a picture of a character missing from the gallery
                missing = per_view.copy()
                missing[:, together.characters.index(character)] = -1.0
                missing_named += (
                    _identify(
                        Similarities(together.characters, missing, together.images[start:end]), rows, calibration
                    ).score
                    >= threshold
                )
    characters = {
        name: CharacterCheck(
            count, named_right[name], taken_for[name].most_common(1)[0][0] if name in taken_for else None
        )
        for name, count in checked.items()
    }
    return GalleryCheck(
        len(pictures),
        named,
        sum(named_right.values()),
        len(pictures) if len(counts) > 1 else 0,
        missing_named,
        characters,
    )


def _folds(index: GalleryIndex, pictures: list[list[int]]) -> list[list[int]]:
    """The pictures' numbers in at most `FOLDS` folds, each character's pictures dealt round them in a seeded order."""
    folds: list[list[int]] = [[] for _ in range(FOLDS)]
    by_character: dict[str, list[int]] = {}
    for number, rows in enumerate(pictures):
        by_character.setdefault(index.items[rows[0]].character, []).append(number)
    shuffle = random.Random(0).shuffle
    for turn, numbers in enumerate(by_character.values()):
        shuffle(numbers)
        for place, number in enumerate(numbers):
            folds[(turn + place) % FOLDS].append(number)
    return [fold for fold in folds if fold]


def _identify(similarities: Similarities, rows: list[int], calibration: Calibration) -> CharacterMatch:
    """A gallery picture's top answer, as the bot would give it (`rows`: its views, whole frame first)."""
    return identify(similarities, _faces(rows), calibration, top_k=1).best


def _faces(rows: list[int]) -> list[Box]:
    """Stand-in boxes for a gallery picture's face views: only their number matters to the answer."""
    return [Box(0.0, 0.0, 1.0, 1.0)] * (len(rows) - 1)


def checker(calibration: Calibration, threshold: float) -> Callable[[GalleryIndex], GalleryCheck]:
    """`check_gallery` at these settings, for `build_gallery_index(check=...)`."""
    return lambda index: check_gallery(index, calibration, threshold)
