"""The decoding memory budget: pictures wait their turn for their bytes, first come first served, or hear 'busy'."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from PIL import Image

from hxhbot.engine import images
from hxhbot.engine.memory_budget import BusyError, MemoryBudget
from tests.conftest import encode


def _until(condition: Callable[[], bool]) -> None:
    """Wait for `condition` (threads to reach their place), failing after a minute."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "the threads never got there"
        time.sleep(0.001)


def _reserving(budget: MemoryBudget, size: int, name: str, entered: list[str], errors: list[str]) -> threading.Thread:
    """A started thread that reserves `size` bytes, notes `name` in `entered` once it holds them, and lets go."""

    def run() -> None:
        try:
            with budget.reserve(size):
                entered.append(name)
        except BusyError as error:
            errors.append(f"{name}: {error}")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@contextmanager
def _two_in_line(
    budget: MemoryBudget, first_waits: float
) -> Iterator[tuple[threading.Thread, threading.Thread, list[str], list[str]]]:
    """While 60 bytes are held: a thread waiting up to `first_waits` s for 60 more, then one waiting up to a minute
    for 10 (they would fit, but it comes second); with the names that got their bytes and the busy errors."""
    entered: list[str] = []
    errors: list[str] = []
    with budget.reserve(60):
        budget.wait = first_waits
        first = _reserving(budget, 60, "first", entered, errors)
        _until(lambda: budget.waiting == 1)
        budget.wait = 60
        second = _reserving(budget, 10, "second", entered, errors)
        yield first, second, entered, errors


def test_reservations_wait_for_their_bytes_first_come_first_served() -> None:
    budget = MemoryBudget(100, wait=60)
    with _two_in_line(budget, first_waits=60) as (first, second, entered, errors):
        _until(lambda: budget.waiting == 2)
        assert entered == [] and budget.held == 60
    first.join()
    second.join()
    assert entered == ["first", "second"] and errors == [] and budget.held == 0 and budget.waiting == 0


def test_one_giving_up_lets_the_next_in_line_go() -> None:
    budget = MemoryBudget(100, wait=60)
    with _two_in_line(budget, first_waits=0.2) as (first, second, entered, errors):
        first.join()  # gives up while the 60 bytes are still held
        second.join()
        assert entered == ["second"] and len(errors) == 1 and errors[0].startswith("first: The bot is busy")
    assert budget.held == 0 and budget.waiting == 0


def test_a_reservation_that_waits_too_long_is_told_the_bot_is_busy() -> None:
    budget = MemoryBudget(100, wait=0.0)
    with budget.reserve(100):
        with pytest.raises(BusyError, match=r"^The bot is busy reading other pictures right now; try again in a"):
            with budget.reserve(1):
                pass
    assert budget.held == 0 and budget.waiting == 0
    with budget.reserve(100):  # nothing is left behind
        assert budget.held == 100


def test_a_reservation_larger_than_the_budget_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="cannot be held within a budget of 100"):
        with MemoryBudget(100, wait=0).reserve(101):
            pass


def test_a_picture_needing_more_than_the_whole_budget_is_refused_before_decoding() -> None:
    data = encode(Image.new("RGB", (3000, 3000)), "PNG")  # 36 MB of pixels
    budget = MemoryBudget(16 << 20, wait=0)
    with pytest.raises(
        images.TooManyPixelsError,
        match="3000×3000 pixels, too many for the bot to read as PNG: send one of at most 4 megapixels or a JPEG.$",
    ):
        images.decode_image(data, draft_size=100, budget=budget)
    assert images.decode_image(data, draft_size=100, budget=MemoryBudget(64 << 20, wait=0)).size == (100, 100)
