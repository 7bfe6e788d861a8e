"""A long job's progress, `(stage, done, total)`, drawn as a bar with the time left, or written as JSON lines."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

WIDTH = 30
STAGES = {"views": "pictures", "training": "epochs at most", "saving": "steps"}


def time_left(seconds: float | None) -> str:
    """'about 3 min left' / 'about 40 s left' ('' when unknown)."""
    if seconds is None:
        return ""
    return f"about {seconds / 60:.0f} min left" if seconds >= 90 else f"about {max(seconds, 1):.0f} s left"


class ProgressBar:
    """One line per stage on a terminal (redrawn in place), a line per tenth elsewhere; or JSON lines (`json=True`)."""

    def __init__(self, stream: TextIO = sys.stderr, json_lines: bool = False) -> None:
        self.stream, self.json_lines = stream, json_lines
        self.stage, self.started, self.shown = "", 0.0, -1

    def left(self, done: int, total: int) -> float | None:
        """Seconds left in the current stage at its pace so far (None before the first step)."""
        spent = time.monotonic() - self.started
        return spent / done * (total - done) if done > 0 else None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            if self.stage and not self.json_lines and self.stream.isatty():
                print(file=self.stream)
            self.stage, self.started, self.shown = stage, time.monotonic(), -1
        left = self.left(done, total)
        if self.json_lines:
            record = {"stage": stage, "done": done, "total": total, "left": None if left is None else round(left, 1)}
            print(json.dumps(record), file=self.stream, flush=True)
            return
        step = 100 if self.stream.isatty() else 10
        mark = done * step // max(total, 1)
        if mark == self.shown and done != total:
            return
        self.shown = mark
        filled = WIDTH * done // max(total, 1)
        line = f"{stage} [{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total} {STAGES.get(stage, '')}"
        line = f"{line}, {time_left(left)}" if left is not None and done < total else line
        if self.stream.isatty():
            print(f"\r{line}\033[K", end="" if done < total else "\n", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)
