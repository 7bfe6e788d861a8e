"""Fill data/gallery/<Character Name>/ with pictures from a public source: `python -m training.collect --help`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hxhbot.engine.collect import (
    DEFAULT_PACING,
    HUNTER_X_HUNTER_2011,
    ROLES,
    CollectError,
    CollectRequest,
    Pacing,
    Summary,
    collect,
)
from hxhbot.engine.manifest import ManifestError


class ProgressLine:
    """One self-rewriting status line on a terminal; silent when the stream is not one."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._shown = False

    def __call__(self, text: str) -> None:
        """Replace the line with `text`."""
        if self._enabled:
            self._stream.write("\r\x1b[K" + text[:119])
            self._stream.flush()
            self._shown = True

    def close(self) -> None:
        """End the line so that later output starts on a fresh one."""
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def request_of(options: argparse.Namespace) -> CollectRequest:
    """The collector's request the command line describes."""
    return CollectRequest(
        out=options.out,
        source=options.source,
        anime_id=options.anime_id,
        roles=options.roles,
        characters=options.characters,
        per_character=options.per_character,
        base_url=options.base_url,
        timeout=options.timeout,
        max_retries=options.max_retries,
    )


async def run(
    options: argparse.Namespace, pacing: Pacing = DEFAULT_PACING, progress: Callable[[str], None] | None = None
) -> Summary:
    """Collect as the command-line options say; progress on the terminal's status line unless `progress` is given."""
    line = ProgressLine(sys.stderr)
    try:
        return await collect(request_of(options), progress or line, pacing)
    finally:
        line.close()


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type for numbers above zero."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be more than 0")
        return value

    return parse


def _count(text: str) -> int:
    """An argparse type for whole numbers from 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0")
    return int(text)


def _names(text: str) -> list[str]:
    """A comma-separated list, without blanks."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m training.collect",
        description="Fill the gallery (one folder per character) with pictures from a public source. "
        "Re-running resumes where the last run stopped.",
    )
    parser.add_argument(
        "--source",
        choices=("jikan", "danbooru"),
        default="jikan",
        help="jikan: MyAnimeList via api.jikan.moe (default); danbooru: a Danbooru image board",
    )
    parser.add_argument(
        "--anime-id",
        type=_positive(int),
        default=HUNTER_X_HUNTER_2011,
        help="MyAnimeList anime id for jikan (default 11061, Hunter x Hunter 2011)",
    )
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--roles",
        type=_names,
        default=sorted(ROLES),
        help="jikan: which roles to collect, comma-separated (default main,supporting)",
    )
    chosen.add_argument(
        "--characters",
        type=_names,
        default=[],
        help='comma-separated names, e.g. "Gon Freecss,Killua Zoldyck" (Danbooru tags work too)',
    )
    parser.add_argument(
        "--per-character", type=_positive(int), default=25, help="images to collect per character (default 25)"
    )
    parser.add_argument("--out", type=Path, default=Path("data/gallery"), help="gallery folder (default data/gallery)")
    parser.add_argument("--base-url", help="API address of the source (default: the public one)")
    parser.add_argument("--timeout", type=_positive(float), default=30.0, help="seconds per request (default 30)")
    parser.add_argument(
        "--max-retries", type=_count, default=4, help="retries of a failed request: timeouts, 429, 5xx (default 4)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every failure and retry")
    options = parser.parse_args(argv)
    unknown = set(options.roles) - ROLES
    if unknown or not options.roles:
        parser.error(f"--roles takes main and/or supporting, not {', '.join(sorted(unknown)) or 'nothing'}")
    options.roles = frozenset(options.roles)
    if options.source == "danbooru" and not options.characters:
        parser.error('--source danbooru cannot list an anime\'s cast: name them with --characters "Gon Freecss,..."')
    if options.base_url is not None and not re.match(r"https?://[^/\s]+", options.base_url):
        parser.error(f"--base-url must start with http:// or https://, not {options.base_url!r}")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status."""
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO if options.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        summary = asyncio.run(run(options))
    except KeyboardInterrupt:
        print("Interrupted: what was saved is kept; run the same command again to resume.", file=sys.stderr)
        return 130
    except (CollectError, ManifestError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: cannot write {error.filename or options.out}: {error.strerror or error}", file=sys.stderr)
        return 1
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
