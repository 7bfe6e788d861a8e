"""Answers since start: how many, how many confident, by character, and their latency."""

from __future__ import annotations

from collections import Counter, deque

import numpy as np

LATENCIES_KEPT = 10_000  # the latest answers' latencies are enough for p50/p95


class AnswerStats:
    """Counters and recent latencies of the answers given since the bot started."""

    def __init__(self) -> None:
        self.answers = 0
        self.confident = 0
        self.by_character: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=LATENCIES_KEPT)

    def add(self, character: str, confident: bool, seconds: float) -> None:
        """Count one answer."""
        self.answers += 1
        self.confident += confident
        self.by_character[character] += 1
        self._latencies.append(seconds)

    def latency(self, percentile: float) -> float | None:
        """The latency percentile in seconds over the recent answers, or None before the first."""
        return float(np.percentile(self._latencies, percentile)) if self._latencies else None
