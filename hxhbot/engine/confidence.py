"""Calibrated confidence: the probability that a character named for part of a picture is right.

Each character found in a picture is answered from a few of the picture's views (`subject_views`). For
every candidate character the features are its best similarity over those views (`hxhbot.engine.index`: the
mean cosine of its two closest gallery pictures), its margin to the best other character (at least to
`background`, so a one-character gallery has a margin too), and, when two views answer (the whole
frame and the only face), whether both name it. A logistic model over
these features, fitted by `python -m training.calibrate` and saved as `calibration.json` beside the
model, turns them into a probability. It never looks at how many characters the gallery holds.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
CALIBRATION_FILE = "calibration.json"
FEATURES = ("similarity", "margin", "views_agree", "views_disagree")


@dataclass(frozen=True)
class Calibration:
    """A logistic model: `weights` are the bias, then one weight per feature in `FEATURES`."""

    weights: tuple[float, ...]
    background: float  # the runner-up similarity assumed when no other character comes closer
    fitted: dict = field(default_factory=dict)  # how it was fitted: command, data, figures

    def features(self, per_view: np.ndarray) -> np.ndarray:
        """`(characters, len(FEATURES))` features per character from its best similarity per view (views × chars)."""
        per_view = np.atleast_2d(np.asarray(per_view, dtype=np.float64))
        best = per_view.max(axis=0)
        order = np.argsort(-best, kind="stable")
        first = best[order[0]]
        second = best[order[1]] if len(best) > 1 else -np.inf
        other = np.where(np.arange(len(best)) == order[0], second, first)
        margin = best - np.maximum(other, self.background)
        if len(per_view) == 2:
            named = per_view.argmax(axis=1)
            agree = ((named[0] == named[1]) & (np.arange(len(best)) == named[0])).astype(float)
            disagree = 1.0 - agree
        else:
            agree = disagree = np.zeros(len(best))
        return np.stack([best, margin, agree, disagree], axis=1)

    def probabilities(self, per_view: np.ndarray) -> np.ndarray:
        """Per character, the probability that naming it is right (views × characters similarities in)."""
        return self.apply(self.features(per_view))

    def apply(self, features: np.ndarray) -> np.ndarray:
        """The logistic model on rows of features."""
        weights = np.asarray(self.weights, dtype=np.float64)
        logits = weights[0] + np.asarray(features, dtype=np.float64) @ weights[1:]
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))

    def save(self, model_dir: str | Path) -> Path:
        """Write `calibration.json` into the model directory (renamed into place)."""
        path = Path(model_dir) / CALIBRATION_FILE
        staged = path.with_suffix(".tmp")
        staged.write_text(json.dumps({"features": FEATURES, **asdict(self)}, indent=1) + "\n")
        os.replace(staged, path)
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> Calibration:
        """The model directory's calibration, or the conservative `DEFAULT` when it has none (or a bad one)."""
        path = Path(model_dir) / CALIBRATION_FILE
        if not path.is_file():
            log.warning("no %s in %s: using the conservative default calibration", CALIBRATION_FILE, model_dir)
            return DEFAULT
        try:
            raw = json.loads(path.read_text())
            if tuple(raw["features"]) != FEATURES or len(raw["weights"]) != len(FEATURES) + 1:
                raise ValueError(f"expected weights for {FEATURES}")
            return cls(tuple(float(w) for w in raw["weights"]), float(raw["background"]), raw.get("fitted", {}))
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("%s is unusable (%s): using the conservative default calibration", path, error)
            return DEFAULT


# Without a fitted calibration (e.g. raw ImageNet features, where unrelated pictures are already ~0.6 alike):
# 0.5 at similarity 0.9 with a 0.1 margin, 0.9 only above ~0.95 with a 0.15 margin.
DEFAULT = Calibration(weights=(-40.0, 40.0, 40.0, 0.5, -0.5), background=0.6, fitted={"default": True})


def subject_views(faces: int) -> list[tuple[int, ...]]:
    """The view rows that answer each character of a picture with `faces` faces (row 0 is the whole frame).

    No face: the whole frame. One face: that face and the whole frame. Several: each face on its own.
    """
    if faces == 0:
        return [(0,)]
    if faces == 1:
        return [(0, 1)]
    return [(face,) for face in range(1, faces + 1)]
