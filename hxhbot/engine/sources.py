"""Where gallery pictures come from: a polite HTTP client and two public, key-free sources (Jikan, Danbooru)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urljoin, urlsplit

import aiohttp

from hxhbot.engine.public_net import PrivateAddressError

log = logging.getLogger(__name__)

USER_AGENT = "hxhbot-gallery-collector/0.1 (Hunter x Hunter character gallery for a Discord bot)"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_JSON_BYTES = 16 * 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3  # followed, each within the allowed hosts
COLLECTED_FROM = "pictures are collected from"


class FetchError(RuntimeError):
    """A request that failed for good; `str()` says why in one line."""


class _TransientError(Exception):
    """A failure worth retrying, with the wait the server asked for, if any."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Rate:
    """A request rate: `per_second` sustained, up to `burst` at once."""

    per_second: float
    burst: int = 1


# Jikan documents 3 requests/s and 60/min: a burst of 3 then 0.9/s stays under both (3 + 54 per minute).
JIKAN_RATE = Rate(per_second=0.9, burst=3)
DANBOORU_RATE = Rate(per_second=1.0, burst=1)
DOWNLOAD_RATE = Rate(per_second=2.0, burst=4)  # image CDNs document no limit: stay modest


class RateLimiter:
    """A token bucket for one service; a 429 or 503 pauses it for every request."""

    def __init__(self, rate: Rate) -> None:
        self._interval = 1.0 / rate.per_second
        self._burst = float(rate.burst)
        self._tokens = float(rate.burst)
        self._updated = time.monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._burst, self._tokens + (now - self._updated) / self._interval)
                self._updated = now
                wait = max(self._paused_until - now, (1.0 - self._tokens) * self._interval)
                if wait <= 0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Send nothing for `seconds`, as the server asked."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how patiently transient failures are retried."""

    max_retries: int = 4
    base_delay: float = 1.0
    max_delay: float = 300.0

    def backoff(self, attempt: int) -> float:
        """Exponential back-off with jitter before retry number `attempt` (0-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class HttpClient:
    """GET requests with a timeout, a rate limiter per service and bounded retries of transient failures."""

    def __init__(
        self, session: aiohttp.ClientSession, retry: RetryPolicy, timeout: float, hosts: frozenset[str]
    ) -> None:
        self._session = session
        self._retry = retry
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._hosts = hosts  # the only hosts fetched from, redirects included

    async def get_json(self, url: str, limiter: RateLimiter, params: dict[str, str] | None = None) -> Any:
        """Fetch and parse a JSON document."""
        body = await self.get_bytes(url, limiter, max_bytes=MAX_JSON_BYTES, params=params)
        try:
            return json.loads(body)
        except ValueError:
            raise FetchError("the answer was not JSON") from None

    async def get_bytes(
        self, url: str, limiter: RateLimiter, *, max_bytes: int, params: dict[str, str] | None = None
    ) -> bytes:
        """Fetch a body of at most `max_bytes`, retrying transient failures."""
        attempt = 0
        while True:
            await limiter.acquire()
            try:
                return await self._get_once(url, params, max_bytes)
            except _TransientError as error:
                if attempt == self._retry.max_retries:
                    tries = f"{attempt + 1} attempts" if attempt else "1 attempt"
                    raise FetchError(f"{error} (gave up after {tries})") from None
                delay = self._delay(error, attempt, limiter)
                log.info("%s: %s; retrying in %.1f s", url, error, delay)
                await asyncio.sleep(delay)
                attempt += 1

    def _delay(self, error: _TransientError, attempt: int, limiter: RateLimiter) -> float:
        """The wait before the next attempt: the server's Retry-After if it gave one, else back-off."""
        if error.retry_after is None:
            return self._retry.backoff(attempt)
        if error.retry_after > self._retry.max_delay:
            raise FetchError(f"{error}: the server asked to wait {error.retry_after:.0f} s; try again later")
        limiter.pause(error.retry_after)
        return error.retry_after

    async def _get_once(self, url: str, params: dict[str, str] | None, max_bytes: int) -> bytes:
        """One attempt, following up to `MAX_REDIRECTS` redirects within the allowed hosts: the body, a
        `_TransientError` worth retrying, or a `FetchError`."""
        refused = self._refused(url)
        if refused:
            raise FetchError(f"{refused} is not a host {COLLECTED_FROM}")
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with self._session.get(
                    url, params=params, timeout=self._timeout, allow_redirects=False
                ) as response:
                    if response.status in REDIRECT_STATUSES:
                        url, params = urljoin(str(response.url), response.headers.get("Location", "")), None
                        refused = self._refused(url)
                        if refused:
                            raise FetchError(
                                f"redirected to {refused}, which is not a host pictures are collected from"
                            )
                        continue
                    if response.status in RETRY_STATUSES:
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                        raise _TransientError(f"HTTP {response.status} {response.reason}", retry_after)
                    if response.status >= 400:
                        raise FetchError(f"HTTP {response.status} {response.reason}")
                    return await _read_limited(response, max_bytes)
            raise FetchError(f"more than {MAX_REDIRECTS} redirects")
        except TimeoutError:
            raise _TransientError(f"no answer within {self._timeout.total:g} s") from None
        except aiohttp.ClientConnectorError as error:
            if isinstance(error.os_error, PrivateAddressError):  # no retry makes it public
                raise FetchError(str(error.os_error)) from None
            raise _TransientError(str(error) or type(error).__name__) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise _TransientError(str(error) or type(error).__name__) from None
        except aiohttp.ClientError as error:
            raise FetchError(str(error) or type(error).__name__) from None

    def _refused(self, url: str) -> str | None:
        """The host (else the URL) when `url` is not http(s) on one of the allowed hosts; None when it is."""
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.hostname in self._hosts:
            return None
        return parts.hostname or url


async def _read_limited(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """Read a response body, refusing one larger than `max_bytes`."""
    too_large = FetchError(f"the file is larger than the {max_bytes / (1024 * 1024):.1f} MB limit")
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Character:
    """A character as a source knows it."""

    name: str  # the display name, as the bot shows it
    key: str  # the source's own id: a MyAnimeList id or a Danbooru tag
    page_url: str
    role: str = ""
    image_url: str = ""


@dataclass(frozen=True)
class Picture:
    """One picture of a character: the file's URL and the page to credit."""

    url: str
    page_url: str


class PictureSource(Protocol):
    """A public, key-free place with pictures of an anime's characters."""

    name: str
    base_url: str

    async def characters(self, *, names: Sequence[str], roles: frozenset[str]) -> list[Character]:
        """The characters named, or else those with one of `roles`."""
        ...

    async def pictures(self, character: Character, limit: int) -> list[Picture]:
        """Up to `limit` pictures of `character`, best first."""
        ...


def mal_display_name(name: str) -> str:
    """MyAnimeList's "Family, Given" as "Given Family"; other names unchanged."""
    family, comma, given = name.partition(",")
    return f"{given.strip()} {family.strip()}".strip() if comma and given.strip() else " ".join(name.split())


def tag_display_name(tag: str) -> str:
    """A Danbooru tag such as `hisoka_(hunter_x_hunter)` as a name: "Hisoka"."""
    words = re.sub(r"_\([^)]*\)$", "", tag.strip()).split("_")
    return " ".join(word[:1].upper() + word[1:] for word in words if word)


def name_tag(name: str) -> str:
    """A display name or tag as a Danbooru tag: "Gon Freecss" → `gon_freecss`."""
    return "_".join(name.strip().lower().split())


def _is_web_url(url: str) -> bool:
    """Whether `url` is an absolute http(s) URL."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _dig(value: Any, *keys: str) -> Any:
    """`value[k1][k2]...`, or None where the shape differs."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _select(listed: list[Character], names: Sequence[str], roles: frozenset[str], where: str) -> list[Character]:
    """The characters named (warning about unknown names), or else those with one of `roles`."""
    if not names:
        return [character for character in listed if character.role.casefold() in roles]
    by_name = {character.name.casefold(): character for character in listed}
    chosen = []
    for name in names:
        character = by_name.get(" ".join(name.split()).casefold())
        if character is None:
            log.warning("%s is not among the characters of %s; skipped", name, where)
        elif character not in chosen:
            chosen.append(character)
    return chosen


class JikanSource:
    """MyAnimeList through the Jikan v4 API: an anime's cast and each character's pictures."""

    name = "jikan"
    DEFAULT_BASE_URL = "https://api.jikan.moe/v4"
    PICTURE_HOSTS = frozenset({"cdn.myanimelist.net"})  # where MyAnimeList serves pictures, besides the API's host
    PLACEHOLDERS = ("questionmark", "apple-touch-icon")  # MAL's stand-ins for "no picture"

    def __init__(self, http: HttpClient, base_url: str, anime_id: int, rate: Rate) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self.anime_id = anime_id
        self._limiter = RateLimiter(rate)

    async def characters(self, *, names: Sequence[str], roles: frozenset[str]) -> list[Character]:
        """The anime's characters, by name or role."""
        url = f"{self.base_url}/anime/{self.anime_id}/characters"
        payload = await self._http.get_json(url, self._limiter)
        entries = _dig(payload, "data")
        if not isinstance(entries, list):
            raise FetchError("the character list had no `data` array")
        listed = [character for entry in entries if (character := self._character(entry))]
        return _select(listed, names, roles, f"anime {self.anime_id} on {self.name}")

    async def pictures(self, character: Character, limit: int) -> list[Picture]:
        """The character's MyAnimeList pictures; its main picture if it has no others."""
        url = f"{self.base_url}/characters/{quote(character.key)}/pictures"
        entries = _dig(await self._http.get_json(url, self._limiter), "data")
        if not isinstance(entries, list):
            raise FetchError("the picture list had no `data` array")
        urls = [_dig(entry, "jpg", "image_url") for entry in entries] or [character.image_url]
        usable = [u for u in dict.fromkeys(urls) if isinstance(u, str) and self._usable(u)]
        page = f"{character.page_url}/pictures" if character.page_url else ""
        return [Picture(picture_url, page) for picture_url in usable[:limit]]

    def _character(self, entry: Any) -> Character | None:
        """A `data[]` entry of /anime/{id}/characters as a Character, or None if malformed."""
        mal_id, name = _dig(entry, "character", "mal_id"), _dig(entry, "character", "name")
        if not isinstance(mal_id, int) or not isinstance(name, str) or not name.strip():
            return None
        return Character(
            name=mal_display_name(name),
            key=str(mal_id),
            page_url=str(_dig(entry, "character", "url") or ""),
            role=str(_dig(entry, "role") or ""),
            image_url=str(_dig(entry, "character", "images", "jpg", "image_url") or ""),
        )

    def _usable(self, url: str) -> bool:
        """Whether `url` is a real picture (not MAL's placeholder)."""
        return _is_web_url(url) and not any(mark in url for mark in self.PLACEHOLDERS)


class DanbooruSource:
    """A Danbooru-compatible image board: general-rated posts that show only the one character."""

    name = "danbooru"
    DEFAULT_BASE_URL = "https://danbooru.donmai.us"
    PICTURE_HOSTS = frozenset({"cdn.donmai.us"})  # where Danbooru serves files, besides the board's host
    PAGE_SIZE = 100
    MAX_PAGES = 5
    IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp"})

    def __init__(self, http: HttpClient, base_url: str, rate: Rate) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self._limiter = RateLimiter(rate)

    async def characters(self, *, names: Sequence[str], roles: frozenset[str]) -> list[Character]:
        """One character per name (a display name or a tag); boards have no roles."""
        tags = dict.fromkeys(name_tag(name) for name in names if name.strip())
        return [Character(tag_display_name(tag), tag, f"{self.base_url}/posts?tags={quote(tag)}") for tag in tags]

    async def pictures(self, character: Character, limit: int) -> list[Picture]:
        """Up to `limit` solo, general-rated image posts of the character's tag."""
        pictures: dict[str, Picture] = {}
        for page in range(1, self.MAX_PAGES + 1):
            params = {"tags": f"{character.key} rating:general", "limit": str(self.PAGE_SIZE), "page": str(page)}
            posts = await self._http.get_json(f"{self.base_url}/posts.json", self._limiter, params)
            if not isinstance(posts, list):
                raise FetchError("the post search did not answer with a list")
            for post in posts:
                picture = self._picture(post, character.key)
                if picture is not None:
                    pictures.setdefault(picture.url, picture)
            if len(pictures) >= limit or len(posts) < self.PAGE_SIZE:
                break
        return list(pictures.values())[:limit]

    def _picture(self, post: Any, tag: str) -> Picture | None:
        """A post as a Picture, or None unless it is a general-rated image of `tag` alone."""
        if not isinstance(post, dict) or post.get("rating", "g") not in ("g", "general"):
            return None
        if str(post.get("tag_string_character", tag)).split() != [tag]:
            return None
        if str(post.get("file_ext", "jpg")).lower() not in self.IMAGE_EXTENSIONS:
            return None
        file_url = post.get("large_file_url") or post.get("file_url")  # the sample is plenty and lighter
        if not isinstance(file_url, str):
            return None  # some posts hide their files from anonymous users
        url = urljoin(self.base_url + "/", file_url)
        return Picture(url, f"{self.base_url}/posts/{post.get('id')}") if _is_web_url(url) else None
