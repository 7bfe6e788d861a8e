"""Every setting of hxhbot: read once from the environment (and `.env`), then passed down."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from dotenv import load_dotenv

DISCORD_API = "https://discord.com/api/v10"
T = TypeVar("T")


class ConfigError(ValueError):
    """A missing or malformed setting; the message names it in one line."""


@dataclass(frozen=True)
class Settings:
    """The bot's and the engine's configuration."""

    discord_token: str = field(default="", repr=False)  # never in a log line or a traceback
    gallery_dir: Path = Path("data/gallery")
    model_dir: Path = Path("model")
    index_dir: Path = Path("model/index")
    feedback_db: Path = Path("data/feedback.sqlite3")
    correction_retention_days: int = 30
    collect_on_start: bool = True
    collect_base_url: str | None = None
    collect_per_character: int = 25
    train_after_collect: bool = False
    top_k: int = 5
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    decode_memory_bytes: int = 256 * 1024 * 1024
    decode_wait_seconds: float = 10.0
    confidence_threshold: float | None = None  # the owner's override; None: fitted to the gallery at each build
    unknown_threshold: float = 0.2
    discord_api_base: str = DISCORD_API
    watch_channel_ids: frozenset[int] = field(default_factory=frozenset)
    owner_ids: frozenset[int] = field(default_factory=frozenset)
    dev_guild_id: int | None = None
    user_install: bool = False
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    workers: int = 2
    model_threads: int = 2  # for a picture alone; under load one a call (hxhbot.engine.embedder)
    batch_size: int = 8
    queue_size: int = 512
    cooldown_seconds: float = 3.0
    download_timeout: float = 15.0
    log_level: str = "INFO"


def load_settings(
    environ: Mapping[str, str] | None = None, *, require_token: bool = False, dotenv: bool = True
) -> Settings:
    """Build `Settings` from the environment (after loading `.env`); raise `ConfigError` on bad values."""
    if environ is None:
        if dotenv:
            load_dotenv()
        environ = os.environ
    read = _Reader(environ)
    settings = Settings(
        discord_token=read("DISCORD_TOKEN", str, ""),
        gallery_dir=read("GALLERY_DIR", Path, Path("data/gallery")),
        model_dir=read("MODEL_DIR", Path, Path("model")),
        index_dir=read("INDEX_DIR", Path, Path("model/index")),
        feedback_db=read("FEEDBACK_DB", Path, Path("data/feedback.sqlite3")),
        correction_retention_days=read("CORRECTION_RETENTION_DAYS", _ranged(int, 1, 3650), 30),
        collect_on_start=read("COLLECT_ON_START", _flag, True),
        collect_base_url=read("COLLECT_BASE_URL", _url, None),
        collect_per_character=read("COLLECT_PER_CHARACTER", _ranged(int, 1, 1000), 25),
        train_after_collect=read("TRAIN_AFTER_COLLECT", _flag, False),
        top_k=read("TOP_K", _ranged(int, 1, 25), 5),
        max_image_bytes=read("MAX_IMAGE_BYTES", _ranged(int, 1024, 1 << 30), 10 * 1024 * 1024),
        max_image_pixels=read("MAX_IMAGE_PIXELS", _ranged(int, 4096, 1 << 32), 40_000_000),
        decode_memory_bytes=read("DECODE_MEMORY_BYTES", _ranged(int, 16 << 20, 1 << 40), 256 * 1024 * 1024),
        decode_wait_seconds=read("DECODE_WAIT_SECONDS", _ranged(float, 0.0, 600.0), 10.0),
        confidence_threshold=read("CONFIDENCE_THRESHOLD", _ranged(float, 0.0, 1.0), None),
        unknown_threshold=read("UNKNOWN_THRESHOLD", _ranged(float, 0.0, 1.0), 0.2),
        discord_api_base=read("DISCORD_API_BASE", _api_base, DISCORD_API),
        watch_channel_ids=read("WATCH_CHANNEL_IDS", _id_set, frozenset()),
        owner_ids=read("OWNER_IDS", _id_set, frozenset()),
        dev_guild_id=read("DEV_GUILD_ID", _snowflake, None),
        user_install=read("USER_INSTALL", _flag, False),
        shard_count=read("SHARD_COUNT", _ranged(int, 1, 100_000), None),
        shard_ids=read("SHARD_IDS", _shard_ids, None),
        workers=read("WORKERS", _ranged(int, 1, 64), 2),
        model_threads=read("MODEL_THREADS", _ranged(int, 1, 64), 2),
        batch_size=read("BATCH_SIZE", _ranged(int, 1, 1024), 8),
        queue_size=read("QUEUE_SIZE", _ranged(int, 1, 100_000), 512),
        cooldown_seconds=read("COOLDOWN_SECONDS", _ranged(float, 0.0, 3600.0), 3.0),
        download_timeout=read("DOWNLOAD_TIMEOUT", _ranged(float, 0.1, 600.0), 15.0),
        log_level=read("LOG_LEVEL", _log_level, "INFO"),
    )
    if settings.shard_ids is not None:
        if settings.shard_count is None:
            raise ConfigError("SHARD_IDS needs SHARD_COUNT: the total number of shards over every process.")
        if max(settings.shard_ids) >= settings.shard_count:
            raise ConfigError(
                f"SHARD_IDS={','.join(map(str, settings.shard_ids))} is not valid: "
                f"shard ids go from 0 to SHARD_COUNT - 1 ({settings.shard_count - 1})."
            )
    if require_token and not settings.discord_token:
        raise ConfigError("DISCORD_TOKEN is not set: put your bot token in .env (see .env.example).")
    return settings


class _Reader:
    """Parse one variable at a time, turning any parse failure into a `ConfigError` naming it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def __call__(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return parse(raw)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{name}={raw!r} is not valid: {error}") from None


def _ranged(kind: Callable[[str], T], low: T, high: T) -> Callable[[str], T]:
    """A parser for a number that must lie in [low, high]."""

    def parse(raw: str) -> T:
        value = kind(raw)
        if not low <= value <= high:  # type: ignore[operator]
            raise ValueError(f"expected a value from {low} to {high}")
        return value

    return parse


def _flag(raw: str) -> bool:
    """On or off: 1/0, true/false, yes/no, on/off."""
    value = raw.lower()
    if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("expected 1 or 0")
    return value in ("1", "true", "yes", "on")


def _snowflake(raw: str) -> int:
    """A Discord id: a positive whole number."""
    if not raw.isdigit() or int(raw) == 0:
        raise ValueError("expected a Discord id (digits only)")
    return int(raw)


def _id_set(raw: str) -> frozenset[int]:
    """Comma- or space-separated Discord ids."""
    return frozenset(_snowflake(part) for part in raw.replace(",", " ").split())


def _shard_ids(raw: str) -> tuple[int, ...]:
    """Shard ids and ranges, comma- or space-separated: `0-3`, `4,5`."""
    ids: set[int] = set()
    for part in raw.replace(",", " ").split():
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or int(high or low) < int(low):
            raise ValueError(f"expected shard ids or ranges such as 0-3,5, not {part!r}")
        ids.update(range(int(low), int(high or low) + 1))
    return tuple(sorted(ids))


def _url(raw: str) -> str:
    """An http(s) base URL without a trailing slash."""
    if not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/")


def _api_base(raw: str) -> str:
    """Discord's API base: https, or plain http to this machine only (a local test server); the token goes there."""
    url = _url(raw)
    host = urlsplit(url).hostname or ""
    if url.startswith("http://") and not _is_loopback(host):
        raise ValueError("the bot token is sent there: use https://, or http:// to 127.0.0.1 or localhost only")
    return url


def _is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine: localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_level(raw: str) -> str:
    """One of logging's level names."""
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level
