"""What the bot answers about a picture: each character found in it, ranked candidates, and one of three outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hxhbot.engine.confidence import Calibration, subject_views
from hxhbot.engine.detector import Box
from hxhbot.engine.index import CharacterMatch, Similarities


class Outcome(Enum):
    """How sure the bot is about one character it found."""

    NAMED = "named"  # probability ≥ CONFIDENCE_THRESHOLD
    UNSURE = "unsure"  # in between: candidates behind a button
    UNKNOWN = "unknown"  # probability < UNKNOWN_THRESHOLD: no character the bot knows


@dataclass(frozen=True)
class Sighting:
    """One character found in a picture: its box (None: the whole picture) and its candidates, best first."""

    box: Box | None
    matches: list[CharacterMatch]

    @property
    def best(self) -> CharacterMatch:
        """The top candidate."""
        return self.matches[0]

    def outcome(self, threshold: float, unknown: float) -> Outcome:
        """Named, unsure or unknown, by the top candidate's probability."""
        if self.best.score >= threshold:
            return Outcome.NAMED
        return Outcome.UNKNOWN if self.best.score < unknown else Outcome.UNSURE


@dataclass(frozen=True)
class Identification:
    """Every character found in one picture (left to right), and a small JPEG of it with their numbered boxes."""

    sightings: list[Sighting]
    preview: bytes | None = field(default=None, repr=False)

    @property
    def top(self) -> Sighting:
        """The character the bot is most sure of: what a member's Right / Wrong verdict is about."""
        return max(self.sightings, key=lambda sighting: sighting.best.score)

    @property
    def best(self) -> CharacterMatch:
        """The picture's top answer."""
        return self.top.best

    @property
    def matches(self) -> list[CharacterMatch]:
        """The top answer's candidates."""
        return self.top.matches


def rank_picture(
    similarities: Similarities, boxes: list[Box], calibration: Calibration, top_k: int, preview: bytes | None = None
) -> Identification:
    """Each character found in a picture, ranked from its views' similarities (a lone face with the whole frame)."""
    views = subject_views(len(boxes))
    places: list[Box | None] = list(boxes) if boxes else [None]
    return Identification(
        [Sighting(box, similarities.rank(rows, calibration, top_k)) for box, rows in zip(places, views)], preview
    )
