"""How counts and lists read to people, in summaries and replies alike."""

from __future__ import annotations

LISTED = 3  # entries named in a summary line at most (`first_few`), the others counted
SHOWN_NAME = 60  # characters of a file name a message shows at most (`code`)


def counted(number: int, noun: str) -> str:
    """`1 image`, `2 images`."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def slow_down(retry_after: float) -> str:
    """What a member who asks again within COOLDOWN_SECONDS is told."""
    return f"Slow down a little: try again in {retry_after:.0f} s."


def first_few(entries: list[str]) -> str:
    """The first `LISTED` entries, comma-separated, then "and N more" for the rest."""
    more = f" and {len(entries) - LISTED} more" if len(entries) > LISTED else ""
    return ", ".join(entries[:LISTED]) + more


def cut(text: str, most: int) -> str:
    """`text` in at most `most` characters (at least one), ending with an ellipsis when cut."""
    return text if len(text) <= most else text[: max(most, 1) - 1] + "…"


def code(name: str) -> str:
    """A file name as inline code: its backticks made quotes, cut to `SHOWN_NAME` characters."""
    return "`" + cut(name.replace("`", "'"), SHOWN_NAME) + "`"
