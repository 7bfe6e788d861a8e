"""Retrieval figures on whole pictures, ranked as the index ranks.

Top-1 and top-5 character, mAP@R, per character, and the bot's confidence.
"""

from __future__ import annotations

import numpy as np

from hxhbot.engine.confidence import Calibration, subject_views
from hxhbot.engine.index import character_similarities


def picture_similarity(
    queries: np.ndarray, query_owner: np.ndarray, gallery: np.ndarray, gallery_owner: np.ndarray
) -> np.ndarray:
    """Query picture × gallery picture similarity: the best cosine over their views (owners sorted, contiguous)."""
    views = queries @ gallery.T
    query_starts = np.flatnonzero(np.r_[True, query_owner[1:] != query_owner[:-1]])
    gallery_starts = np.flatnonzero(np.r_[True, gallery_owner[1:] != gallery_owner[:-1]])
    return np.maximum.reduceat(np.maximum.reduceat(views, query_starts, axis=0), gallery_starts, axis=1)


def view_similarities(
    queries: np.ndarray,
    query_owner: np.ndarray,
    gallery: np.ndarray,
    gallery_owner: np.ndarray,
    gallery_labels: np.ndarray,
) -> list[np.ndarray]:
    """Per query picture, each view's similarity to each character (sorted), as the index gives it (views × characters).

    `gallery_labels` holds each gallery picture's character; `gallery_owner` each gallery view's picture.
    """
    classes, codes = np.unique(np.asarray(gallery_labels), return_inverse=True)
    per_view, _ = character_similarities(queries @ gallery.T, gallery_owner, codes[gallery_owner], len(classes))
    query_starts = np.flatnonzero(np.r_[True, query_owner[1:] != query_owner[:-1]])
    return np.split(per_view, query_starts[1:])


def bot_answers(
    per_view: list[np.ndarray], classes: np.ndarray, labels: list, calibration: Calibration
) -> tuple[np.ndarray, np.ndarray]:
    """Per picture, as the bot answers it: the probability of its most confident answer and whether that is right."""
    probability, right = np.zeros(len(per_view)), np.zeros(len(per_view), bool)
    for number, (views, label) in enumerate(zip(per_view, labels)):
        best, correct = -1.0, False
        for rows in subject_views(len(views) - 1):
            scores = calibration.probabilities(views[list(rows)])
            top = int(np.argmax(scores))
            if scores[top] > best:
                best, correct = float(scores[top]), label is not None and classes[top] == label
        probability[number], right[number] = best, correct
    return probability, right


def retrieval_figures(
    per_view: list[np.ndarray],
    similarity: np.ndarray,
    gallery_labels: np.ndarray,
    query_labels: np.ndarray,
    threshold: float,
    answers: tuple[np.ndarray, np.ndarray],
) -> dict:
    """Top-1/top-5 character, mAP@R over gallery pictures, per-character top-1, and the bot's confidence.

    `per_view`: per query, its views × characters similarities (`view_similarities`): a character ranks by its
    best over the views. `similarity`: query × gallery picture (`picture_similarity`), for mAP@R. `answers`: per
    query, the probability of the bot's most confident answer and whether it is right (`bot_answers`).
    """
    classes = np.unique(gallery_labels)
    best = np.stack([views.max(axis=0) for views in per_view])
    right = best[np.arange(len(query_labels)), np.searchsorted(classes, query_labels)]
    ranks = 1 + (best > right[:, None]).sum(axis=1)
    hits = gallery_labels[np.argsort(-similarity, axis=1)] == query_labels[:, None]
    average_precision = []
    for row in hits:
        relevant = int(row.sum())
        precision = np.cumsum(row[:relevant]) / np.arange(1, relevant + 1)
        average_precision.append(float((precision * row[:relevant]).sum() / relevant) if relevant else 0.0)
    probability, correct = answers
    confident = probability >= threshold
    return {
        "queries": int(len(query_labels)),
        "characters": int(len(classes)),
        "top1": float(np.mean(ranks == 1)),
        "top5": float(np.mean(ranks <= 5)),
        "map@r": float(np.mean(average_precision)),
        "confident": float(confident.mean()),
        "confident_top1": float(correct[confident].mean()) if confident.any() else 0.0,
        "per_character": {
            str(name): round(float(np.mean(ranks[query_labels == name] == 1)), 3) for name in np.unique(query_labels)
        },
        "rank_histogram": {str(rank): int((ranks == rank).sum()) for rank in np.unique(ranks)},
        "_ranks": ranks,
    }
