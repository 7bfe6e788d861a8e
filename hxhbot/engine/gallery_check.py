"""The owner's gallery checked against itself: each picture answered as if new, by the gallery without a fifth of it
(itself among them, the comparison fitted without them), and again with its whole character left out, as a member's
picture of a character missing from the gallery would be; those answers fit the score from which this gallery's
answers are named (`hxhbot.engine.fitted_threshold`)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hxhbot.engine.artworks import artworks, one_artwork
from hxhbot.engine.confidence import Calibration
from hxhbot.engine.detector import Box
from hxhbot.engine.fitted_threshold import CheckAnswers, FittedThreshold, describe_in_force, fit_threshold, in_force
from hxhbot.engine.gallery import picture_key
from hxhbot.engine.identification import rank_picture
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
class GalleryAnswers:
    """The check's answers, one per gallery picture asked: its character, the top answer's character and score,
    and the top score with its whole character left out (none when the gallery has one character)."""

    characters: list[str]
    answered: list[str]
    scores: np.ndarray
    missing: np.ndarray
    gallery: int = 0  # characters in the gallery

    def for_fit(self) -> CheckAnswers:
        """What `fit_threshold` needs of them."""
        right = np.array([a == c for a, c in zip(self.answered, self.characters)], dtype=bool)
        return CheckAnswers(self.scores, right, self.missing, self.gallery)

    def at(
        self, threshold: float, confidence: FittedThreshold | None = None, override: float | None = None
    ) -> GalleryCheck:
        """How many are named, and right, at `threshold`."""
        named = self.scores >= threshold
        right = named & np.array([a == c for a, c in zip(self.answered, self.characters)], dtype=bool)
        checked = Counter(self.characters)
        named_right = Counter(c for c, ok in zip(self.characters, right) if ok)
        taken_for: dict[str, Counter[str]] = {}
        for character, answered in zip(self.characters, self.answered):
            if answered != character:
                taken_for.setdefault(character, Counter())[answered] += 1
        characters = {
            name: CharacterCheck(
                count, named_right[name], taken_for[name].most_common(1)[0][0] if name in taken_for else None
            )
            for name, count in checked.items()
        }
        return GalleryCheck(
            len(self.scores),
            int(named.sum()),
            int(right.sum()),
            len(self.missing),
            int((self.missing >= threshold).sum()),
            characters,
            confidence,
            override,
        )


@dataclass(frozen=True)
class GalleryCheck:
    """How the bot answers its own gallery's pictures, each as if new (`check_gallery`), at the threshold in force."""

    pictures: int
    named: int  # answered with a confident name
    right: int  # of those, the picture's own character
    missing: int = 0  # the same pictures asked with their whole character left out (0: the gallery has only one)
    missing_named: int = 0  # of those, answered with a confident name: always a wrong one
    characters: dict[str, CharacterCheck] = field(default_factory=dict)
    confidence: FittedThreshold | None = None  # the threshold fitted to these answers
    override: float | None = None  # CONFIDENCE_THRESHOLD, when the owner set it

    def describe(self) -> str:
        """One line for people."""
        fitted = f"confidence {describe_in_force(self.confidence, self.override)}; " if self.confidence else ""
        if not self.pictures:
            return fitted + (
                "gallery check: no picture to ask (each is its character's only artwork, or one the model trained on)"
            )
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
        return fitted + line + self._named_least()

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


def check_gallery(
    index: GalleryIndex,
    calibration: Calibration,
    threshold: float | None = None,
    trained: frozenset[str] | set[str] = frozenset(),
) -> GalleryCheck:
    """The gallery's answers to itself (`answer_gallery`, never asking a picture in `trained`), the threshold fitted
    to them, and the counts at `threshold` (CONFIDENCE_THRESHOLD; None: the fitted one)."""
    answers = answer_gallery(index, calibration, trained)
    fit = fit_threshold(answers.for_fit())
    return answers.at(in_force(fit, threshold), fit, threshold)


def answer_gallery(
    index: GalleryIndex,
    calibration: Calibration,
    trained: frozenset[str] | set[str] = frozenset(),
    judge: Callable[[list[str]], Callable[[int, int], bool]] = one_artwork,
) -> GalleryAnswers:
    """Answer every gallery picture that has a picture of its character from another artwork (`artworks`: a cut or
    copy is of the same) against the gallery without its fold (`FOLDS`; an artwork's pictures share one), compared
    as that smaller gallery would compare, so that no picture, nor a cut or copy of it, helps answer itself; then,
    if the gallery has another character, the same pictures with their whole character left out as well. Pictures in
    `trained` (`picture_key`s: the model trained on them) stay in the gallery but are never asked. `judge`: which
    pictures are one artwork (`hxhbot.engine.artworks.one_artwork`)."""
    views: dict[str, list[int]] = {}
    for row, item in enumerate(index.items):
        views.setdefault(item.sha256, []).append(row)
    pictures = list(views.values())
    if len(pictures) > MAX_PICTURES:
        pictures = random.Random(0).sample(pictures, MAX_PICTURES)
    artwork = artworks(
        [index.items[rows[0]].path for rows in pictures], [index.items[rows[0]].character for rows in pictures], judge
    )
    checked = _checked(index, pictures, artwork)
    gallery = len(index.characters())
    characters: list[str] = []
    answered: list[str] = []
    scores: list[float] = []
    missing: list[float] = []
    for fold in _folds(index, pictures, artwork, checked):
        together = index.held_out_similarities([row for number in fold for row in pictures[number]])
        bounds = np.cumsum([0] + [len(pictures[number]) for number in fold])
        for number, start, end in zip(fold, bounds, bounds[1:]):
            rows, character = pictures[number], index.items[pictures[number][0]].character
            if picture_key(index.items[rows[0]].path) in trained:
                continue  # the model learnt this picture: its answer says nothing of new ones
            per_view = together.per_view[start:end]
            answer = _identify(
                Similarities(together.characters, per_view, together.images[start:end]), rows, calibration
            )
            characters.append(character)
            answered.append(answer.character)
            scores.append(answer.score)
            if gallery > 1:  # asked again as a picture of a character missing from the gallery
                left_out = per_view.copy()
                left_out[:, together.characters.index(character)] = -1.0
                missing.append(
                    _identify(
                        Similarities(together.characters, left_out, together.images[start:end]), rows, calibration
                    ).score
                )
    return GalleryAnswers(characters, answered, np.array(scores, dtype=float), np.array(missing, dtype=float), gallery)


def _checked(index: GalleryIndex, pictures: list[list[int]], artwork: list[int]) -> list[bool]:
    """Per picture, whether the check can ask it: its character has a picture of another artwork in the gallery."""
    of_character: dict[str, set[int]] = {}
    for rows, work in zip(pictures, artwork):
        of_character.setdefault(index.items[rows[0]].character, set()).add(work)
    return [len(of_character[index.items[rows[0]].character]) > 1 for rows in pictures]


def _folds(index: GalleryIndex, pictures: list[list[int]], artwork: list[int], checked: list[bool]) -> list[list[int]]:
    """The checked pictures' numbers in at most `FOLDS` folds: each character's artworks dealt round them in a seeded
    order, an artwork's pictures all in one fold."""
    folds: list[list[int]] = [[] for _ in range(FOLDS)]
    by_character: dict[str, dict[int, list[int]]] = {}
    for number, rows in enumerate(pictures):
        if checked[number]:
            by_character.setdefault(index.items[rows[0]].character, {}).setdefault(artwork[number], []).append(number)
    shuffle = random.Random(0).shuffle
    for turn, groups in enumerate(by_character.values()):
        order = list(groups.values())
        shuffle(order)
        for place, numbers in enumerate(order):
            folds[(turn + place) % FOLDS] += numbers
    return [fold for fold in folds if fold]


def _identify(similarities: Similarities, rows: list[int], calibration: Calibration) -> CharacterMatch:
    """A gallery picture's top answer, as the bot would give it (`rows`: its views, whole frame first)."""
    return rank_picture(similarities, _faces(rows), calibration, top_k=1).best


def _faces(rows: list[int]) -> list[Box]:
    """Stand-in boxes for a gallery picture's face views: only their number matters to the answer."""
    return [Box(0.0, 0.0, 1.0, 1.0)] * (len(rows) - 1)


def checker(
    calibration: Calibration, threshold: float | None, trained: frozenset[str] = frozenset()
) -> Callable[[GalleryIndex], GalleryCheck]:
    """`check_gallery` at these settings, for `build_gallery_index(check=...)` (`trained`: the serving model's
    `hxhbot.engine.model_dir.trained_pictures`)."""
    return lambda index: check_gallery(index, calibration, threshold, trained)
