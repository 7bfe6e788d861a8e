"""A byte budget shared by the pictures being decoded: each waits its turn for its bytes, or is told the bot is busy."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from hxhbot.errors import UserError


class BusyError(UserError):
    """Too many requests are waiting: try again shortly."""


class MemoryBudget:
    """At most `total` bytes held at once; reservations are served first come, first served, each waiting at most
    `wait` seconds (a big picture is not passed over for ever by small ones)."""

    def __init__(self, total: int, wait: float) -> None:
        self.total, self.wait = total, wait
        self.held = 0
        self._line: deque[object] = deque()  # a ticket per waiting reservation, oldest first
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        """Hold `size` bytes (at most `total`) for the block, once every earlier reservation is served and they fit."""
        if not 0 <= size <= self.total:
            raise ValueError(f"{size} bytes cannot be held within a budget of {self.total}")
        ticket, deadline = object(), time.monotonic() + self.wait
        with self._changed:
            self._line.append(ticket)
            try:
                while self._line[0] is not ticket or self.held + size > self.total:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BusyError("The bot is busy reading other pictures right now; try again in a few seconds.")
                    self._changed.wait(left)
                self.held += size
            finally:
                self._line.remove(ticket)
                self._changed.notify_all()  # the next in line may go now
        try:
            yield
        finally:
            with self._changed:
                self.held -= size
                self._changed.notify_all()

    @property
    def waiting(self) -> int:
        """How many reservations are waiting their turn."""
        with self._changed:
            return len(self._line)
