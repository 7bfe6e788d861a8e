"""Where discord.py talks to: Discord itself, or a Discord-compatible server (the end-to-end tests' fake)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import discord
import discord.gateway
import discord.http
import yarl

from hxhbot.config import DISCORD_API

_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss"}


@contextlib.contextmanager
def pointed_at(api_base: str) -> Iterator[None]:
    """While inside, send discord.py's REST calls to `api_base`, open its gateway at `/gateway` and take its assets
    (stickers) from the same host; discord.py's own addresses again on leaving."""
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.Asset.BASE
    base = api_base.rstrip("/")
    url = yarl.URL(base)
    if base != DISCORD_API and url.scheme not in _WEBSOCKET_SCHEMES:
        raise ValueError(f"expected an http:// or https:// API base, got {api_base!r}")
    try:
        if base != DISCORD_API:
            discord.http.Route.BASE = base
            # The bot connects here when SHARD_COUNT is set (else to GET /gateway/bot's url, asked at `api_base`);
            # RESUMEs use READY's resume_gateway_url.
            gateway = url.with_scheme(_WEBSOCKET_SCHEMES[url.scheme]).with_path("/gateway")
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
            discord.Asset.BASE = str(url.origin())
        yield
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.Asset.BASE = saved
