"""Fill a gallery (one folder per character) with pictures from a public source: the collector's library API.

`collect(CollectRequest(out=Path("data/gallery")))` is what the bot's first start and `python -m training.collect` run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from hxhbot.engine.images import DEFAULT_MAX_BYTES, ImageError, decode_image
from hxhbot.engine.manifest import MANIFEST_NAME, Manifest, gallery_path, safe_folder_name, write_jpeg
from hxhbot.engine.public_net import public_session
from hxhbot.engine.sources import (
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
HUNTER_X_HUNTER_2011 = 11061  # MyAnimeList's id of the anime whose cast is collected by default


@dataclass(frozen=True)
class CollectRequest:
    """What to collect and where: the default is Hunter × Hunter (2011)'s main and supporting cast from Jikan."""

    out: Path
    source: str = "jikan"  # or "danbooru", which needs `characters`
    anime_id: int = HUNTER_X_HUNTER_2011
    roles: frozenset[str] = ROLES
    characters: Sequence[str] = ()
    per_character: int = 25
    base_url: str | None = None  # None: the source's public API
    timeout: float = 30.0  # seconds per request
    max_retries: int = 4


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
            lines.append(f"  … and {len(self.failed) - FAILURES_SHOWN} more (the log has them all).")
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


@dataclass(frozen=True)
class Pacing:
    """Request rates and back-off: the sources' documented limits unless a test needs speed."""

    api: Rate | None = None  # None: the source's own rate
    downloads: Rate = DOWNLOAD_RATE
    retry_delay: float = 1.0


DEFAULT_PACING = Pacing()


def _source_class(request: CollectRequest) -> type[JikanSource] | type[DanbooruSource]:
    """The kind of source the request names."""
    return DanbooruSource if request.source == "danbooru" else JikanSource


def make_source(request: CollectRequest, http: HttpClient, api_rate: Rate | None) -> PictureSource:
    """The source the request names."""
    if request.source == "danbooru":
        return DanbooruSource(http, request.base_url or DanbooruSource.DEFAULT_BASE_URL, api_rate or DANBOORU_RATE)
    return JikanSource(http, request.base_url or JikanSource.DEFAULT_BASE_URL, request.anime_id, api_rate or JIKAN_RATE)


async def collect(request: CollectRequest, progress: Callable[[str], None], pacing: Pacing = DEFAULT_PACING) -> Summary:
    """Collect as the request says, resuming an earlier run; `progress` gets one short line at each step."""
    retry = RetryPolicy(max_retries=request.max_retries, base_delay=pacing.retry_delay)
    base_url = request.base_url or _source_class(request).DEFAULT_BASE_URL
    api_host = urlsplit(base_url).hostname or ""
    trusted = frozenset({api_host}) if request.base_url else frozenset()  # a local API the operator named
    async with public_session(trusted, USER_AGENT) as session:
        http = HttpClient(session, retry, request.timeout, _source_class(request).PICTURE_HOSTS | {api_host})
        request.out.mkdir(parents=True, exist_ok=True)
        source = make_source(request, http, pacing.api)
        collector = Collector(source, http, request.out, request.per_character, progress, pacing.downloads)
        return await collector.run(request.characters, request.roles)
