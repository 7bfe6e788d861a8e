"""Retrieval figures: top-1 character, recall@k, mAP@R, and the right character's rank per query."""

from __future__ import annotations

import numpy as np

from hxhbot.index import SCORE_TEMPERATURE


def best_per_character(similarity: np.ndarray, gallery_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The characters (sorted) and, per query, each character's best gallery similarity."""
    classes = np.unique(gallery_labels)
    return classes, np.stack([similarity[:, gallery_labels == c].max(axis=1) for c in classes], axis=1)


def character_ranks(similarity: np.ndarray, gallery_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """For each query, the rank (1 = first) of its character, characters ordered by best similarity."""
    classes, best = best_per_character(similarity, gallery_labels)
    right = best[np.arange(len(query_labels)), np.searchsorted(classes, query_labels)]
    return 1 + (best > right[:, None]).sum(axis=1)


def confidence_figures(similarity: np.ndarray, gallery_labels: np.ndarray, query_labels: np.ndarray,
                       threshold: float) -> dict:
    """The bot's view: share of queries whose best score reaches `threshold`, and top-1 among those."""
    classes, best = best_per_character(similarity, gallery_labels)
    weights = np.exp((best - best.max(axis=1, keepdims=True)) / SCORE_TEMPERATURE)
    scores = weights / weights.sum(axis=1, keepdims=True)  # as GalleryIndex.rank scores its answers
    confident = scores.max(axis=1) >= threshold
    right = classes[best.argmax(axis=1)] == query_labels
    return {"confident": float(confident.mean()),
            "confident_top1": float(right[confident].mean()) if confident.any() else 0.0}


def retrieval_figures(gallery: np.ndarray, gallery_labels: np.ndarray,
                      queries: np.ndarray, query_labels: np.ndarray) -> dict:
    """Top-1 character accuracy, recall@1/5/10, mAP@R and the rank histogram of the right character."""
    similarity = queries @ gallery.T
    order = np.argsort(-similarity, axis=1)
    hits = gallery_labels[order] == query_labels[:, None]
    ranks = character_ranks(similarity, gallery_labels, query_labels)
    relevant = hits.sum(axis=1)
    average_precision = []
    for row, r in zip(hits, relevant):
        top = row[:r]
        precision = np.cumsum(top) / np.arange(1, r + 1)
        average_precision.append(float((precision * top).sum() / r) if r else 0.0)
    return {
        "queries": int(len(query_labels)),
        "characters": int(len(np.unique(gallery_labels))),
        "top1": float(np.mean(ranks == 1)),
        "recall@1": float(hits[:, :1].any(axis=1).mean()),
        "recall@5": float(hits[:, :5].any(axis=1).mean()),
        "recall@10": float(hits[:, :10].any(axis=1).mean()),
        "map@r": float(np.mean(average_precision)),
        "rank_histogram": {str(rank): int((ranks == rank).sum()) for rank in np.unique(ranks)},
    }
