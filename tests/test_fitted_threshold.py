"""The threshold fitted to a gallery's own answers: its targets on answers of known error rates, its fallback, its
record in the index."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hxhbot.engine.fitted_threshold import (
    FEW,
    FEW_CHARACTERS,
    SHIPPED,
    TARGET,
    THRESHOLDS,
    CheckAnswers,
    FittedThreshold,
    describe_in_force,
    fit_threshold,
    in_force,
    least_answers,
    store,
    stored,
    upper_bound,
)

WRONG = 1.2  # an answer of score s is wrong with probability WRONG × (1 − s)²: among scores ≥ t, WRONG × (1 − t)² / 3


def true_wrong(threshold: float) -> float:
    """The share of named answers that are wrong at `threshold`, for scores uniform on [0, 1] (`synthetic`)."""
    return WRONG * (1.0 - threshold) ** 2 / 3.0


def true_missing(threshold: float, top: float) -> float:
    """The share of missing-character answers named at `threshold`, for scores uniform on [0, top]."""
    return max(0.0, top - threshold) / top


def synthetic(known: int, missing: int, seed: int, top: float = 0.6) -> CheckAnswers:
    """Check answers of known error rates: scores uniform on [0, 1] (wrong as `WRONG` says), missing on [0, top]."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=known)
    right = rng.uniform(size=known) >= WRONG * (1.0 - scores) ** 2
    return CheckAnswers(scores, right, rng.uniform(0.0, top, size=missing))


def test_the_bound_is_clopper_pearsons() -> None:
    assert upper_bound(0, 10, 0.9) == pytest.approx(1 - 0.1**0.1)
    assert upper_bound(1, 10, 0.95) == pytest.approx(0.3942, abs=1e-4)  # the textbook one-sided 95 % bound
    for errors, trials in ((3, 100), (40, 1000)):
        bound = upper_bound(errors, trials, 0.9)
        chance = sum(math.comb(trials, k) * bound**k * (1 - bound) ** (trials - k) for k in range(errors + 1))
        assert chance == pytest.approx(0.1, abs=1e-6) and bound > errors / trials
    assert upper_bound(5, 5, 0.9) == upper_bound(0, 0, 0.9) == 1.0


def test_with_many_answers_the_fit_is_the_lowest_threshold_that_meets_both_targets() -> None:
    assert [t for t in THRESHOLDS if true_wrong(t) <= TARGET][0] == 0.8  # 0.7 names 3.6 % wrongly
    fit = fit_threshold(synthetic(20_000, 20_000, seed=0))
    assert fit.fitted and fit.threshold == 0.8 and fit.reason == ""
    assert fit.wrong / fit.named <= fit.wrong_bound <= TARGET and fit.missing_named == 0
    shy = fit_threshold(synthetic(20_000, 20_000, seed=0, top=0.95))  # missing characters score up to 0.95
    assert shy.fitted and shy.threshold == 0.95 and true_missing(0.9, 0.95) > TARGET
    assert "fitted to this gallery" in fit.describe() and "names from 80%" in fit.describe()


def test_the_targets_hold_with_the_stated_confidence_where_the_shares_seen_would_not() -> None:
    chosen, plain = [], []
    for seed in range(100):
        answers = synthetic(3000, 3000, seed)
        chosen.append(fit_threshold(answers))
        for threshold in THRESHOLDS:  # the lowest threshold whose shares as seen meet the targets
            named = answers.scores >= threshold
            if (named & ~answers.right).sum() <= TARGET * named.sum():
                break
        plain.append(threshold)
    missed = np.mean([true_wrong(fit.threshold) > TARGET for fit in chosen])
    assert missed <= 0.1, f"the bounds hold at 90 % confidence: missed on {missed:.0%} of galleries"
    assert np.mean([fit.fitted for fit in chosen]) >= 0.8, "most of these galleries are large enough to fit"
    assert np.mean([true_wrong(t) > TARGET for t in plain]) > 0.2, "the shares as seen would miss the target often"


def test_too_few_pictures_fall_back_to_the_shipped_calibration() -> None:
    needed = least_answers()
    assert (1 - TARGET) ** needed <= 0.1 / len(THRESHOLDS) < (1 - TARGET) ** (needed - 1)
    few = fit_threshold(synthetic(needed - 1, 500, seed=1))
    assert not few.fitted and few.threshold == SHIPPED == THRESHOLDS[-1]
    reason = f"too few pictures to fit one ({needed - 1} checked, {needed} needed)"
    assert few.describe() == f"names from 99%, not fitted to this gallery: {reason}"
    assert few.pictures == needed - 1 and few.named == int((synthetic(needed - 1, 500, seed=1).scores >= 0.99).sum())


def test_a_gallery_of_one_or_two_characters_names_only_from_the_stricter_fallback() -> None:
    alone = fit_threshold(synthetic(500, 0, seed=1))
    assert not alone.fitted and alone.threshold == FEW > SHIPPED and "a gallery of one character" in alone.reason
    assert alone.describe().startswith("names from 99.9%, not fitted to this gallery: a gallery of one character")
    answers = synthetic(20_000, 20_000, seed=0)  # enough to fit 0.8 (above), were there more characters
    two = fit_threshold(CheckAnswers(answers.scores, answers.right, answers.missing, characters=FEW_CHARACTERS))
    assert not two.fitted and two.threshold == FEW and "a gallery of 2 characters cannot show" in two.reason
    three = fit_threshold(CheckAnswers(answers.scores, answers.right, answers.missing, characters=FEW_CHARACTERS + 1))
    assert three.fitted and three.threshold == 0.8
    unasked = fit_threshold(CheckAnswers(np.zeros(0), np.zeros(0, bool), np.zeros(0), characters=5))
    assert unasked.threshold == SHIPPED and "too few pictures to fit one (0 checked" in unasked.reason, (
        "five characters none of whose pictures could be asked (all trained on): too few, not a small gallery"
    )


def test_a_gallery_that_meets_no_target_names_only_from_the_highest_threshold() -> None:
    rng = np.random.default_rng(2)
    answers = CheckAnswers(rng.uniform(size=5000), rng.uniform(size=5000) > 0.1, rng.uniform(size=5000))
    fit = fit_threshold(answers)  # a tenth wrong at every score
    assert not fit.fitted and fit.threshold == THRESHOLDS[-1] and "no threshold keeps 3%" in fit.reason
    assert fit.wrong_bound > TARGET


def test_the_fit_travels_in_the_index_metadata_and_the_owner_overrides_it() -> None:
    fit = fit_threshold(synthetic(20_000, 20_000, seed=0))
    meta: dict = {}
    store(meta, fit)
    assert stored(json.loads(json.dumps(meta))) == fit
    for broken in ({}, {"fitted_threshold": {"threshold": 7.0}}, {"fitted_threshold": "x"}):
        old = stored(broken)
        assert old.threshold == SHIPPED and not old.fitted and "/reindex" in old.reason
    assert in_force(fit, None) == 0.8 and in_force(fit, 0.5) == 0.5 and in_force(None, None) == SHIPPED
    assert describe_in_force(fit, None) == fit.describe()
    assert describe_in_force(fit, 0.5).startswith("names from 50%, CONFIDENCE_THRESHOLD set by the owner (the fit: ")
    assert isinstance(FittedThreshold.from_json(fit.to_json()), FittedThreshold)
