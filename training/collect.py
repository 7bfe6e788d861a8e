"""Fill data/gallery/<Character Name>/ with pictures from a public source: `python -m training.collect --help`."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from hxhbot.engine.images import DEFAULT_MAX_BYTES, ImageError, decode_image
from hxhbot.engine.manifest import MANIFEST_NAME, Manifest, ManifestError, gallery_path, safe_folder_name, write_jpeg
from training.sources import (
    DANBOORU_RATE,
    DOWNLOAD_RATE,
    JIKAN_RATE,
    USER_AGENT,
    Character,
    DanbooruSource,
    FetchError,
    HttpClient,
    JikanSource,
    Picture,
    PictureSource,
    Rate,
    RateLimiter,
    RetryPolicy,
)

log = logging.getLogger(__name__)

ROLES = frozenset({"main", "supporting"})
FAILURES_SHOWN = 20


class CollectError(RuntimeError):
    """A run that cannot go on; `str()` is one line for the user."""


@dataclass
class Summary:
    """What a run did, for the final report."""

    source: str
    characters: int = 0
    characters_done_before: int = 0
    saved: int = 0
    duplicates: int = 0
    already_present: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (what, why)

    def lines(self) -> list[str]:
        """The summary as lines of text."""
        skipped = self.duplicates + self.already_present
        lines = [
            f"Collected from {self.source}: {self.characters} characters"
            f" ({self.characters_done_before} already complete from an earlier run).",
            f"Saved {self.saved} new images; skipped {skipped} ({self.duplicates} duplicates,"
            f" {self.already_present} already present or rejected before); {len(self.failed)} failed.",
        ]
        lines += [f"  failed: {what}: {why}" for what, why in self.failed[:FAILURES_SHOWN]]
        if len(self.failed) > FAILURES_SHOWN:
            lines.append(f"  … and {len(self.failed) - FAILURES_SHOWN} more (run with -v to see them all).")
        return lines


class Collector:
    """Downloads, validates, dedupes and saves pictures into the gallery, recording each in the manifest."""

    def __init__(
        self,
        source: PictureSource,
        http: HttpClient,
        out: Path,
        per_character: int,
        progress: Callable[[str], None],
        download_rate: Rate,
    ) -> None:
        self.source = source
        self.http = http
        self.out = out
        self.per_character = per_character
        self.progress = progress
        self.downloads = RateLimiter(download_rate)
        self.manifest = Manifest.load(out / MANIFEST_NAME)
        self.summary = Summary(source.name)
        self._listed_any = False  # whether any picture list came back: until one does, a failure ends the run

    async def run(self, names: Sequence[str], roles: frozenset[str]) -> Summary:
        """Collect every chosen character in turn."""
        try:
            characters = await self.source.characters(names=names, roles=roles)
        except FetchError as error:
            raise CollectError(f"Could not get the character list from {self.source.base_url}: {error}.") from None
        if not characters:
            raise CollectError(f"No characters matched on {self.source.name}: check --characters or --roles.")
        self.summary.characters = len(characters)
        for number, character in enumerate(characters, 1):
            folder = safe_folder_name(character.name)
            self.progress(f"[{number}/{len(characters)}] {folder}")
            if self.manifest.is_done(self.source.name, folder, self.per_character):
                self.summary.characters_done_before += 1
                continue
            if await self._collect_character(character, folder, f"[{number}/{len(characters)}]"):
                self.manifest.mark_done(self.source.name, folder, self.per_character)
                self.manifest.save()
        for line in self.summary.lines():
            log.info("%s", line)
        return self.summary

    async def _collect_character(self, character: Character, folder: str, position: str) -> bool:
        """Fill one character's folder; True unless something failed that a re-run could fix."""
        try:
            pictures = await self.source.pictures(character, 2 * self.per_character)  # spares for rejects
        except FetchError as error:
            if not self._listed_any:
                raise CollectError(f"Could not get pictures from {self.source.base_url}: {error}.") from None
            self._fail(f"{character.name} (picture list)", str(error))
            return False
        self._listed_any = True
        complete = True
        for picture in pictures:
            have = self.manifest.count(folder)
            if have >= self.per_character:
                break
            self.progress(f"{position} {folder}: {have}/{self.per_character} {self._tally()}")
            complete = await self._collect_picture(picture, character, folder) and complete
        log.info("%s: %d images", folder, self.manifest.count(folder))
        return complete

    async def _collect_picture(self, picture: Picture, character: Character, folder: str) -> bool:
        """Download, check and save one picture unless done before; False after a transient failure."""
        if self.manifest.url(picture.url) is not None:
            self.summary.already_present += 1
            return True
        try:
            data = await self.http.get_bytes(picture.url, self.downloads, max_bytes=DEFAULT_MAX_BYTES)
        except FetchError as error:
            self._fail(picture.url, str(error))
            return False
        sha256 = hashlib.sha256(data).hexdigest()
        if self.manifest.image(sha256) is not None:
            self.summary.duplicates += 1
            self.manifest.mark_url(picture.url, "duplicate", sha256=sha256)
        else:
            self._save(data, sha256, picture, character, folder)
        self.manifest.save()
        return True

    def _save(self, data: bytes, sha256: str, picture: Picture, character: Character, folder: str) -> None:
        """Validate the bytes with the engine's loader and save them as JPEG, or record why not."""
        try:
            image = decode_image(data, max_decode_bytes=1 << 30)  # full resolution, offline
        except ImageError as error:
            self._fail(picture.url, str(error))
            self.manifest.mark_url(picture.url, "rejected", reason=str(error))
            return
        path = gallery_path(self.out, folder, sha256)
        if path.exists():
            self.summary.already_present += 1
        else:
            write_jpeg(image, path)
            self.summary.saved += 1
        self.manifest.add_image(
            sha256,
            {
                "file": f"{folder}/{path.name}",
                "character": folder,
                "source": self.source.name,
                "source_id": character.key,
                "url": picture.url,
                "page_url": picture.page_url,
                "sha256": sha256,
            },
        )

    def _fail(self, what: str, why: str) -> None:
        """Count and log one failure."""
        self.summary.failed.append((what, why))
        log.info("failed: %s: %s", what, why)

    def _tally(self) -> str:
        """The running counts for the progress line."""
        summary = self.summary
        skipped = summary.duplicates + summary.already_present
        return f"(saved {summary.saved}, skipped {skipped}, failed {len(summary.failed)})"


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


@dataclass(frozen=True)
class Pacing:
    """Request rates and back-off: the sources' documented limits unless a test needs speed."""

    api: Rate | None = None  # None: the source's own rate
    downloads: Rate = DOWNLOAD_RATE
    retry_delay: float = 1.0


def make_source(options: argparse.Namespace, http: HttpClient, api_rate: Rate | None) -> PictureSource:
    """The source the options name."""
    if options.source == "danbooru":
        return DanbooruSource(http, options.base_url or DanbooruSource.DEFAULT_BASE_URL, api_rate or DANBOORU_RATE)
    return JikanSource(http, options.base_url or JikanSource.DEFAULT_BASE_URL, options.anime_id, api_rate or JIKAN_RATE)


async def run(
    options: argparse.Namespace, pacing: Pacing = Pacing(), progress: Callable[[str], None] | None = None
) -> Summary:
    """Collect as the command-line options say; progress on the terminal's status line unless `progress` is given."""
    retry = RetryPolicy(max_retries=options.max_retries, base_delay=pacing.retry_delay)
    line = ProgressLine(sys.stderr)
    async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
        http = HttpClient(session, retry, options.timeout)
        try:
            options.out.mkdir(parents=True, exist_ok=True)
            source = make_source(options, http, pacing.api)
            collector = Collector(source, http, options.out, options.per_character, progress or line, pacing.downloads)
            return await collector.run(options.characters, options.roles)
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
        default=11061,
        help="MyAnimeList anime id for jikan (default 11061, Hunter x Hunter 2011)",
    )
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--roles",
        type=_names,
        default=["main", "supporting"],
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
