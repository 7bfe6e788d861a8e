"""Where discord.py talks to: Discord itself, or a Discord-compatible server (the end-to-end tests' fake)."""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl

from hxhbot.config import DISCORD_API

_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss"}


def point_discord_at(api_base: str) -> None:
    """Send discord.py's REST calls to `api_base` and open its gateway at `/gateway` on the same host."""
    base = api_base.rstrip("/")
    if base == DISCORD_API:
        return
    url = yarl.URL(base)
    if url.scheme not in _WEBSOCKET_SCHEMES:
        raise ValueError(f"expected an http:// or https:// API base, got {api_base!r}")
    discord.http.Route.BASE = base
    # The bot connects here when SHARD_COUNT is set (else to GET /gateway/bot's url, asked at `api_base`);
    # RESUMEs use READY's resume_gateway_url.
    gateway = url.with_scheme(_WEBSOCKET_SCHEMES[url.scheme]).with_path("/gateway")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
