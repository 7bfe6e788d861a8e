"""The score from which this gallery's answers are named, fitted at every index build from the gallery check.

The gallery check (`hxhbot.engine.gallery_check`) answers every gallery picture as if new, against the rest, and
again with its whole character left out. From those answers `fit_threshold` takes the lowest of `THRESHOLDS` at which
both shares stay within `TARGET` with `CONFIDENCE`: named answers that are wrong, and missing-character answers that
are named. Each share is bounded by its exact binomial (Clopper-Pearson) upper bound at 1 - (1 - CONFIDENCE) / len(
THRESHOLDS), so that the bounds hold for every threshold tried at once (Bonferroni). With too few pictures to bound
anything (`least_answers`), a name only from `SHIPPED`; a gallery of `FEW_CHARACTERS` or fewer, which cannot show how
a missing character is answered, only from `FEW` (both measured: docs/confidence.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

TARGET = 0.03  # at most this share of named answers wrong, and of missing-character answers named
CONFIDENCE = 0.9  # how sure the bounds are, over every threshold tried at once
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)  # the scores tried, lowest first
SHIPPED = 0.99  # too few pictures: 97 % is too low for a model whose calibration was fitted for another (measured)
FEW_CHARACTERS = 2  # galleries of this many characters or fewer are named from `FEW`, stricter than `SHIPPED`
FEW = 0.999  # measured on face crops of characters missing from one-character galleries (docs/confidence.md)
META_KEY = "fitted_threshold"  # where an index's metadata keeps its fit


@dataclass(frozen=True)
class CheckAnswers:
    """The gallery check's answers: per picture, its top score and whether it is the picture's own character; and
    per picture asked with its character left out, its top score (always a wrong name when given)."""

    scores: np.ndarray
    right: np.ndarray
    missing: np.ndarray
    characters: int = 0  # characters in the gallery (0: unknown)


@dataclass(frozen=True)
class FittedThreshold:
    """The score from which a name is given, and what the gallery check says of it."""

    threshold: float
    fitted: bool  # False: too few pictures, or none of `THRESHOLDS` met the targets
    pictures: int = 0  # gallery pictures answered by the check
    named: int = 0  # of those, named at `threshold`
    wrong: int = 0  # of the named, the wrong ones
    missing: int = 0  # pictures asked with their character left out
    missing_named: int = 0  # of those, named at `threshold`
    wrong_bound: float = 1.0  # upper bound on the share of named answers that are wrong (at `CONFIDENCE`)
    missing_bound: float = 1.0  # upper bound on the share of missing-character answers that are named
    reason: str = ""  # why it was not fitted

    def describe(self) -> str:
        """One clause for people: the threshold, how it was chosen and its expected error."""
        if self.fitted:
            return (
                f"names from {_percent(self.threshold)}, fitted to this gallery: at most "
                f"{_percent(self.wrong_bound)} of named answers wrong and {_percent(self.missing_bound)} of "
                f"missing characters named ({CONFIDENCE:.0%} confidence; {self.pictures} pictures checked)"
            )
        return f"names from {_percent(self.threshold)}, not fitted to this gallery: {self.reason}"

    def to_json(self) -> dict:
        """The fit as a JSON-ready dict (what `from_json` reads)."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object) -> FittedThreshold:
        """A fit written by `to_json`; anything else gives the shipped threshold and says why."""
        try:
            values = {f.name: raw[f.name] for f in fields(cls) if f.name in raw}  # type: ignore[index,operator]
            fit = cls(**values)
            if not 0.0 <= float(fit.threshold) <= 1.0:
                raise ValueError(f"threshold {fit.threshold}")
            return fit
        except (TypeError, KeyError, ValueError):
            return shipped(
                "no fit stored with this index (built by an earlier hxhbot, or not checked): /reindex fits one"
            )


def shipped(reason: str, answers: CheckAnswers | None = None) -> FittedThreshold:
    """The shipped calibration's threshold (`SHIPPED`), with what the check says of it when there are answers."""
    if answers is None:
        return FittedThreshold(SHIPPED, False, reason=reason)
    return _at(SHIPPED, answers, False, reason)


def least_answers() -> int:
    """Answers needed to bound a share at `TARGET` when none is wrong: fewer, and the shipped threshold is used."""
    return math.ceil(math.log(_each()) / math.log(1.0 - TARGET))


def fit_threshold(answers: CheckAnswers) -> FittedThreshold:
    """The lowest of `THRESHOLDS` whose wrong and missing-named shares are both bounded by `TARGET` (see the module)."""
    needed = least_answers()
    if 0 < answers.characters <= FEW_CHARACTERS or (not answers.characters and not len(answers.missing)):
        return _at(
            FEW,
            answers,
            False,
            f"a gallery of {answers.characters or 'one'} character{'s' * (answers.characters > 1)} cannot show how "
            "a character missing from it is answered",
        )
    if len(answers.scores) < needed or len(answers.missing) < needed:
        return shipped(f"too few pictures to fit one ({len(answers.scores)} checked, {needed} needed)", answers)
    for threshold in THRESHOLDS:
        fit = _at(threshold, answers, True)
        if fit.wrong_bound <= TARGET and fit.missing_bound <= TARGET:
            return fit
    return _at(
        THRESHOLDS[-1],
        answers,
        False,
        f"no threshold keeps {_percent(TARGET)} of this gallery's named answers wrong and of its missing "
        "characters named; naming only from the highest tried",
    )


def in_force(fit: FittedThreshold | None, override: float | None) -> float:
    """The threshold the bot names from: the owner's CONFIDENCE_THRESHOLD when set, else the fit (or `SHIPPED`)."""
    if override is not None:
        return override
    return fit.threshold if fit is not None else SHIPPED


def describe_in_force(fit: FittedThreshold, override: float | None) -> str:
    """The confidence the bot names with, for people (the fit as well when the owner overrides it)."""
    if override is None:
        return fit.describe()
    return f"names from {_percent(override)}, CONFIDENCE_THRESHOLD set by the owner (the fit: {fit.describe()})"


def stored(meta: dict) -> FittedThreshold:
    """The fit kept in an index's metadata (`store`)."""
    return FittedThreshold.from_json(meta.get(META_KEY))


def store(meta: dict, fit: FittedThreshold) -> None:
    """Keep a fit in an index's metadata: it is saved, and loaded, with the index."""
    meta[META_KEY] = fit.to_json()


def upper_bound(errors: int, trials: int, confidence: float) -> float:
    """The exact (Clopper-Pearson) one-sided upper bound on a share seen as `errors` of `trials`."""
    if trials <= 0 or errors >= trials:
        return 1.0
    alpha = 1.0 - confidence
    if errors == 0:
        return 1.0 - alpha ** (1.0 / trials)
    k = np.arange(errors + 1)
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, trials + 1)))])
    log_choose = log_factorial[trials] - log_factorial[k] - log_factorial[trials - k]
    low, high = errors / trials, 1.0
    for _ in range(50):  # bisection: the chance of at most `errors` falls as the share grows
        middle = (low + high) / 2.0
        logs = log_choose + k * np.log(middle) + (trials - k) * np.log1p(-middle)
        if np.exp(logs - logs.max()).sum() * np.exp(logs.max()) > alpha:
            low = middle
        else:
            high = middle
    return high


def _each() -> float:
    """The confidence of each threshold's bound, so that all of them hold together at `CONFIDENCE`."""
    return (1.0 - CONFIDENCE) / len(THRESHOLDS)


def _at(threshold: float, answers: CheckAnswers, fitted: bool, reason: str = "") -> FittedThreshold:
    """The check's counts, and their bounds, at one threshold."""
    named = np.asarray(answers.scores) >= threshold
    wrong = int((named & ~np.asarray(answers.right, bool)).sum())
    missing_named = int((np.asarray(answers.missing) >= threshold).sum())
    each = 1.0 - _each()
    return FittedThreshold(
        float(threshold),
        fitted,
        len(answers.scores),
        int(named.sum()),
        wrong,
        len(answers.missing),
        missing_named,
        upper_bound(wrong, int(named.sum()), each),
        upper_bound(missing_named, len(answers.missing), each),
        reason,
    )


def _percent(share: float) -> str:
    """A share as people read it, to a tenth of a point: 97%, 99.5%, 2.6%."""
    return f"{100.0 * share:.1f}".removesuffix(".0") + "%"
