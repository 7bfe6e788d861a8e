"""A Discord-compatible REST API and gateway on 127.0.0.1: one bot, a guild per shard, everything recorded for tests.

Shapes follow what discord.py 2.7.1 reads (state.py, interactions.py, message.py, app_commands/namespace.py).
Behaviours a test may rely on, as Discord has them: a REST body is JSON only under exactly `application/json`;
an interaction must be answered within `interaction_deadline` seconds, once; the first follow-up after a
deferral replaces the "thinking" message; MESSAGE_CREATE needs the GUILD_MESSAGES intent and carries content,
embeds, attachments and a forward's snapshot only with MESSAGE_CONTENT (or when the bot is mentioned), and an
IDENTIFY asking for that intent is closed with 4014 when the application has it off (`message_content_intent=False`);
uploads over `ATTACHMENT_SIZE_LIMIT` are refused with 413; a dropped gateway connection can RESUME and gets the
missed events; a shard gets only its guilds' events, `(guild_id >> 22) % shard_count`; buttons and select menus are
clicked with `send_component`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import mimetypes
import re
import secrets
import socket
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from urllib.parse import quote

from aiohttp import BodyPartReader, WSMsgType, web

log = logging.getLogger(__name__)

Json = dict[str, Any]
T = TypeVar("T")

API_PREFIX = "/api/v10"
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
DISCORD_EPOCH_MS = 1_420_070_400_000
# The bot's (and everyone's) permissions: add reactions, view channel, send messages, embed links,
# attach files, read message history, use application commands, send messages in threads.
PERMISSIONS = str(sum(1 << bit for bit in (6, 10, 11, 14, 15, 16, 31, 38)))
# GATEWAY_PRESENCE_LIMITED | GATEWAY_GUILD_MEMBERS_LIMITED | GATEWAY_MESSAGE_CONTENT_LIMITED: privileged intents on.
APPLICATION_FLAGS = (1 << 13) | (1 << 15) | (1 << 19)
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
EPHEMERAL = 1 << 6
BOT_DM = 1  # an interaction context: the bot's direct messages (0 a guild, 2 other private channels)
USER_INSTALL = 1  # an integration type: the app added to a member's account (0: to a server, with its bot)
# what a forwarded message's snapshot keeps of the original
SNAPSHOT_KEYS = (
    "type",
    "content",
    "embeds",
    "attachments",
    "timestamp",
    "edited_timestamp",
    "flags",
    "mentions",
    "mention_roles",
    "components",
    "sticker_items",
)
LOADING = 1 << 7
_MENTION = re.compile(r"<@!?(\d+)>")
# discord.py waits this long after the last GUILD_CREATE before `on_ready` (2 s by default, for real Discord's
# trickle); this server sends them at once, and `bot_ready` waits for them rather than for a clock
GUILD_READY_TIMEOUT = 0.1
_ids = itertools.count()


def _snowflake() -> int:
    """A new Discord id whose timestamp is now."""
    return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(_ids) % 4096)


def _guild_snowflake(shard_id: int, shard_count: int) -> int:
    """A new guild id that Discord routes to `shard_id`: `(guild_id >> 22) % shard_count`."""
    stamp = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return ((stamp - stamp % shard_count + shard_id) << 22) | (next(_ids) % 4096)


def _shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard that carries a guild's events (shard 0 for events outside guilds)."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


def _now() -> str:
    """The current time as Discord writes timestamps."""
    return datetime.now(UTC).isoformat()


def _json(data: Any, status: int = 200) -> web.Response:
    """A JSON response typed exactly `application/json` (no charset), which is what discord.py parses."""
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def _error(status: int, code: int, message: str) -> web.Response:
    """A Discord-shaped JSON error."""
    return _json({"message": message, "code": code}, status)


@dataclass
class UploadedFile:
    """One file part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One HTTP request the bot made, with its body parsed."""

    method: str
    path: str  # below the API base ("/channels/1/messages"), or the full path of an attachment download
    route: str  # the matched pattern, e.g. "/channels/{channel_id}/messages"
    params: dict[str, str]
    query: dict[str, str]
    json: Any = None  # the JSON body, or a multipart request's payload_json
    files: list[UploadedFile] = field(default_factory=list)
    status: int = 0  # the answer's HTTP status
    response: Any = None  # the answer's JSON body, e.g. the message the server created


@dataclass
class FakeInteraction:
    """An interaction sent to the bot and every callback, follow-up and edit the bot made for it."""

    id: int
    token: str
    payload: Json
    created: float = field(default_factory=time.monotonic)
    requests: list[RecordedRequest] = field(default_factory=list)
    response_type: int | None = None
    original_message_id: int | None = None
    message_ids: set[int] = field(default_factory=set)


@dataclass
class _StoredFile:
    """An attachment's bytes and how to serve them."""

    data: bytes
    content_type: str
    content_length: int | None
    body_delay: float


class _GatewayConnection:
    """One gateway websocket, compressed as one zlib stream when the client asked for `zlib-stream`."""

    def __init__(self, ws: web.WebSocketResponse, zlib_stream: bool) -> None:
        self.ws = ws
        self.live = False  # identified or resumed: dispatches go out
        self._zlib = zlib.compressobj() if zlib_stream else None
        self._lock = asyncio.Lock()

    async def send(self, payload: Json) -> None:
        """Send one gateway payload; with zlib-stream each ends in a sync flush, as discord.py expects."""
        raw = json.dumps(payload)
        async with self._lock:
            if self._zlib is None:
                await self.ws.send_str(raw)
            else:
                await self.ws.send_bytes(self._zlib.compress(raw.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH))


@dataclass
class _Session:
    """One shard's gateway session: its connection, intents and numbered dispatches (replayed on RESUME)."""

    shard_id: int
    conn: _GatewayConnection | None = None
    session_id: str | None = None
    intents: int = 0
    seq: int = 0
    events: list[Json] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FakeDiscord:
    """Discord's REST API and gateway for one bot in one guild with a few text channels (one guild per shard), and its
    direct messages with users (`open_dm`).

    With `shard_count` > 1, GET /gateway/bot recommends that many shards, IDENTIFY must name `[id, count]`,
    and each shard gets its own guild (`guild_ids[shard]`, with one channel, `guild_channel_ids[guild]`) and
    the events of its guilds only, routed as Discord does by `(guild_id >> 22) % shard_count`.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        heartbeat_interval_ms: int = 1000,
        interaction_deadline: float = 3.0,
        channel_names: Sequence[str] = ("general", "hunters"),
        shard_count: int = 1,
        message_content_intent: bool = True,
    ) -> None:
        self.token = token
        self.message_content_intent = message_content_intent  # off: IDENTIFY asking for it is closed with 4014
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.interaction_deadline = interaction_deadline
        self.application_id = _snowflake()
        self.bot_user_id = self.application_id  # as for every application created since 2020
        self.owner_id = _snowflake()
        self.member_id = _snowflake()  # the default human who writes messages and runs commands
        self.shard_count = shard_count
        self.guild_ids = [_guild_snowflake(shard, shard_count) for shard in range(shard_count)]
        self.guild_id = self.guild_ids[0]
        self.channel_ids = [_snowflake() for _ in channel_names]
        self.guild_channel_ids = {self.guild_id: self.channel_ids}
        self.guild_channel_ids.update({guild_id: [_snowflake()] for guild_id in self.guild_ids[1:]})
        self._channel_guild: dict[int, int | None] = {  # None: a direct message channel
            channel: guild for guild, channels in self.guild_channel_ids.items() for channel in channels
        }
        names = {channel: name for channel, name in zip(self.channel_ids, channel_names, strict=True)}
        self.requests: list[RecordedRequest] = []
        self.gateway_connections: list[dict[str, str]] = []  # each websocket's query: v, encoding, compress
        self.gateway_received: list[Json] = []
        self.commands: dict[int | None, list[Json]] = {}  # synced commands by guild id; None holds the global ones
        self.messages: dict[int, Json] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        self.downloading = self.most_downloading = 0  # attachment downloads under way, and the most at once
        self.port = 0
        self._users: dict[int, Json] = {}
        self._user(self.bot_user_id, "hxhbot-test", bot=True)
        self._user(self.owner_id, "owner")
        self._user(self.member_id, "gon")
        self._channels: dict[int, Json] = {
            channel_id: {
                "id": str(channel_id),
                "type": 0,
                "name": name,
                "position": position,
                "parent_id": None,
                "topic": None,
                "nsfw": False,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "permission_overwrites": [],
                "flags": 0,
            }
            for channels in self.guild_channel_ids.values()
            for position, channel_id in enumerate(channels)
            for name in [names.get(channel_id, "general")]
        }
        self._files: dict[int, _StoredFile] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._sessions = [_Session(shard) for shard in range(shard_count)]
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    # ---- lifecycle and addresses

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application(client_max_size=4 * ATTACHMENT_SIZE_LIMIT, middlewares=[self._middleware])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{attachment_id}/{filename}", self._download)
        app.router.add_get(r"/stickers/{attachment_id:\d+}.{extension:[a-z]+}", self._download)  # Asset.BASE's
        for method, path, handler in self._api_routes():
            app.router.add_route(method, API_PREFIX + path, handler)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._unknown_route)
        # handler_cancellation: a stalled download stops when its client hangs up, leaving no task behind.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        log.info("fake Discord listening on %s", self.base_url)

    async def stop(self) -> None:
        """Close every websocket and stop listening."""
        for ws in list(self._sockets):
            await ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """The server's root URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """What `discord.http.Route.BASE` must be."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """The gateway websocket's URL."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ---- what tests do

    def add_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str,
        *,
        declared_size: int | None = None,
        content_length: int | None = None,
        body_delay: float = 0.0,
    ) -> Json:
        """Serve `data` as an attachment and return its Discord object (`size` is `declared_size` if given).

        `content_length` makes the download's Content-Length header lie; `body_delay` stalls the body that long.
        """
        attachment = self._store_file(
            data, filename, content_type, content_length=content_length, body_delay=body_delay
        )
        if declared_size is not None:
            attachment["size"] = declared_size
        return attachment

    def add_sticker(self, data: bytes, name: str, format_type: int = 1) -> Json:
        """Serve `data` as a sticker's image (format 1 PNG, 2 APNG, 3 Lottie) and return its sticker item."""
        sticker_id = _snowflake()
        self._files[sticker_id] = _StoredFile(data, "application/json" if format_type == 3 else "image/png", None, 0.0)
        return {"id": str(sticker_id), "name": name, "format_type": format_type}

    def deny(self, channel_id: int, permissions: int) -> None:
        """Deny everyone (the bot included) `permissions` in a channel, as an overwrite; before the bot connects."""
        everyone = self._channel_guild[channel_id]
        self._channels[channel_id]["permission_overwrites"] = [
            {"id": str(everyone), "type": 0, "allow": "0", "deny": str(permissions)}
        ]

    def add_foreign_channel(self) -> int:
        """A text channel of a server the bot was never invited to, where a member who added the app to their
        account may still use its commands (a user install); its messages never reach the bot's gateway."""
        guild_id, channel_id = _snowflake(), _snowflake()
        self._channel_guild[channel_id] = guild_id
        self._channels[channel_id] = {
            "id": str(channel_id),
            "type": 0,
            "name": "elsewhere",
            "position": 0,
            "parent_id": None,
            "nsfw": False,
            "last_message_id": None,
            "flags": 0,
            "rate_limit_per_user": 0,
            "permission_overwrites": [],
        }
        return channel_id

    async def add_thread(self, parent_id: int, name: str = "thread") -> int:
        """A member opens a public thread in a channel: dispatch THREAD_CREATE and return the thread's id."""
        guild_id = self._channel_guild[parent_id]
        self._require_session(guild_id)
        thread_id = _snowflake()
        self._channel_guild[thread_id] = guild_id
        self._channels[thread_id] = {
            "id": str(thread_id),
            "guild_id": str(guild_id),
            "parent_id": str(parent_id),
            "owner_id": str(self.member_id),
            "name": name,
            "type": 11,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "flags": 0,
            "newly_created": True,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _now(),
                "locked": False,
            },
        }
        await self._dispatch("THREAD_CREATE", self._channels[thread_id])
        return thread_id

    def open_dm(self, user_id: int | None = None) -> int:
        """The direct message channel between the bot and a user (the default member unless `user_id`)."""
        user = self._user(user_id or self.member_id)
        for channel_id, channel in self._channels.items():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == user["id"]:
                return channel_id
        channel_id = _snowflake()
        self._channel_guild[channel_id] = None
        self._channels[channel_id] = {
            "id": str(channel_id),
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [user],
        }
        return channel_id

    async def post_message(
        self,
        channel_id: int,
        content: str = "",
        *,
        author_id: int | None = None,
        attachments: Sequence[Json] = (),
        embeds: Sequence[Json] = (),
        stickers: Sequence[Json] = (),
        bot: bool = False,
        reply_to: Json | None = None,
        forward: Json | None = None,
    ) -> Json:
        """A user (the default member unless `author_id`) posts a message (`stickers`: `add_sticker` items), or
        forwards one (its content, attachments, embeds and stickers then come as a snapshot); dispatch MESSAGE_CREATE
        and return it."""
        self._require_session(self._channel_guild[channel_id])
        author = self._user(author_id or self.member_id)
        if bot:
            author = {**author, "bot": True}
        body: Json = {"content": content, "embeds": list(embeds), "sticker_items": list(stickers)}
        if reply_to is not None:
            body["message_reference"] = {"message_id": reply_to["id"], "channel_id": reply_to["channel_id"]}
        if forward is not None:
            body["message_reference"] = {"type": 1, "message_id": forward["id"], "channel_id": forward["channel_id"]}
        return await self._create_message(channel_id, body, author=author, attachments=list(attachments))

    async def unfurl(self, message: Json, embeds: Sequence[Json]) -> None:
        """Add a link's preview to a posted message, as Discord does a moment later when it had not seen the link:
        MESSAGE_UPDATE with the embeds, and no edit time."""
        message["embeds"] = list(message["embeds"]) + list(embeds)
        await self._dispatch_message("MESSAGE_UPDATE", message)

    async def send_slash_command(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
    ) -> FakeInteraction:
        """Run the synced slash command `name`; an attachment option takes an `add_attachment` object."""
        channel_id = channel_id or self.channel_ids[0]
        scope, command = self._find_command(name, 1, self._channel_guild[channel_id])
        schema = {option["name"]: option for option in command.get("options", [])}
        data_options: list[Json] = []
        attachments: Json = {}
        for option_name, value in (options or {}).items():
            if option_name not in schema:
                raise ValueError(f"/{name} has no option {option_name!r}")
            kind = schema[option_name]["type"]
            if kind == 11:
                attachments[value["id"]] = value
                value = value["id"]
            elif kind not in (3, 4, 5, 10):
                raise ValueError(f"option type {kind} of {option_name!r} is not supported by the fake")
            data_options.append({"name": option_name, "type": kind, "value": value})
        data: Json = {"id": command["id"], "name": name, "type": 1}
        if data_options:
            data["options"] = data_options
        if attachments:
            data["resolved"] = {"attachments": attachments}
        return await self._interact(2, data, scope, user_id, channel_id)

    async def send_message_command(
        self, name: str, target_message: Json, *, user_id: int | None = None
    ) -> FakeInteraction:
        """Run the synced message context-menu command `name` on `target_message`."""
        guild_id = target_message.get("guild_id")
        scope, command = self._find_command(name, 3, int(guild_id) if guild_id else None)
        data: Json = {
            "id": command["id"],
            "name": name,
            "type": 3,
            "target_id": target_message["id"],
            "resolved": {"messages": {target_message["id"]: target_message}},
        }
        return await self._interact(2, data, scope, user_id, int(target_message["channel_id"]))

    async def send_component(
        self,
        custom_id: str,
        message: Json,
        *,
        component_type: int = 2,
        values: Sequence[str] | None = None,
        user_id: int | None = None,
    ) -> FakeInteraction:
        """Click a button (or pick `values` of a select menu) on `message`."""
        data: Json = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = list(values)
        return await self._interact(3, data, None, user_id, int(message["channel_id"]), message=message)

    async def drop_connection(self, code: int = 4000, shard_id: int = 0) -> None:
        """Close a shard's gateway socket as Discord does on a fault; the session stays resumable."""
        conn = self._sessions[shard_id].conn
        if conn is None:
            raise RuntimeError("the bot has no gateway connection")
        conn.live = False
        await conn.ws.close(code=code)

    async def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Wait until the bot has identified and been sent READY and GUILD_CREATE."""
        await self._wait(
            lambda: all(any(e["t"] == "GUILD_CREATE" for e in session.events) for session in self._sessions),
            timeout,
            "IDENTIFY",
        )

    async def wait_for(self, predicate: Callable[[RecordedRequest], bool], timeout: float = 30.0) -> RecordedRequest:
        """The first recorded request (past or coming) matching `predicate`."""
        return await self._wait(lambda: next(filter(predicate, self.requests), None), timeout, "a matching request")

    async def wait_for_callback(self, token: str, timeout: float = 30.0) -> RecordedRequest:
        """The bot's interaction callback (initial response) for the interaction with `token`."""
        return await self.wait_for(
            lambda r: r.route == "/interactions/{interaction_id}/{token}/callback" and r.params["token"] == token,
            timeout,
        )

    async def wait_for_followup(self, token: str, timeout: float = 30.0, index: int = 0) -> RecordedRequest:
        """The bot's `index`-th follow-up message for the interaction with `token`."""

        def find() -> RecordedRequest | None:
            followups = [
                r
                for r in self.requests
                if r.method == "POST" and r.route == "/webhooks/{app_id}/{token}" and r.params["token"] == token
            ]
            return followups[index] if len(followups) > index else None

        return await self._wait(find, timeout, f"follow-up #{index}")

    async def wait_for_gateway_op(self, op: int, timeout: float = 30.0) -> Json:
        """The first gateway payload with opcode `op` the bot sent (2 IDENTIFY, 6 RESUME, ...)."""
        return await self._wait(
            lambda: next((p for p in self.gateway_received if p.get("op") == op), None), timeout, f"gateway op {op}"
        )

    # ---- users, guild, commands

    def _user(self, user_id: int, name: str | None = None, *, bot: bool = False) -> Json:
        """The user object for `user_id`, made up on first sight."""
        if user_id not in self._users:
            self._users[user_id] = {
                "id": str(user_id),
                "username": name or f"user{len(self._users)}",
                "discriminator": "0",
                "global_name": None,
                "avatar": None,
                "bot": bot,
                "public_flags": 0,
                "flags": 0,
            }
        return self._users[user_id]

    def _member(self, user_id: int, *, with_user: bool = True) -> Json:
        """The guild member object for `user_id`."""
        member: Json = {
            "nick": None,
            "avatar": None,
            "roles": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            member["user"] = self._user(user_id)
        return member

    def _me(self) -> Json:
        """The bot's own user object, as GET /users/@me and READY give it."""
        return {**self._users[self.bot_user_id], "verified": True, "mfa_enabled": False, "email": None}

    def _guild(self, guild_id: int) -> Json:
        """The GUILD_CREATE payload."""
        channels = self.guild_channel_ids[guild_id]
        everyone = {
            "id": str(guild_id),
            "name": "@everyone",
            "permissions": PERMISSIONS,
            "position": 0,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        members = [self._member(user_id) for user_id in (self.bot_user_id, self.owner_id, self.member_id)]
        return {
            "id": str(guild_id),
            "name": "Hunter Association" if guild_id == self.guild_id else f"Hunter Guild {guild_id % 1000}",
            "icon": None,
            "owner_id": str(self.owner_id),
            "unavailable": False,
            "large": False,
            "member_count": len(members),
            "joined_at": _now(),
            "roles": [everyone],
            "channels": [self._channels[channel] for channel in channels],
            "members": members,
            "threads": [],
            "presences": [],
            "voice_states": [],
            "emojis": [],
            "stickers": [],
            "features": [],
            "preferred_locale": "en-US",
            "system_channel_id": str(channels[0]),
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "afk_timeout": 300,
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _find_command(self, name: str, kind: int, guild_id: int | None) -> tuple[int | None, Json]:
        """The synced command `name` of type `kind` in a guild (None: the bot's DMs, where only global commands
        allowed there are offered), and its scope (None if global); guild ones win."""
        installed = guild_id is None or guild_id in self.guild_ids  # else: only through a member's user install
        for scope in (guild_id, None) if guild_id and installed else (None,):
            for command in self.commands.get(scope, []):
                if command["name"] == name and command["type"] == kind:
                    if guild_id is None and (
                        command.get("dm_permission") is False or BOT_DM not in (command.get("contexts") or [BOT_DM])
                    ):
                        raise LookupError(f"the command {name!r} is not offered in direct messages")
                    if not installed and USER_INSTALL not in (command.get("integration_types") or []):
                        raise LookupError(f"the command {name!r} cannot be added to a member's account")
                    return scope, command
        raise LookupError(f"the bot has not synced a command {name!r} of type {kind}")

    # ---- gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.gateway_connections.append(dict(request.query))
        compress = request.query.get("compress")
        if request.query.get("encoding", "json") != "json" or compress not in (None, "zlib-stream"):
            log.error("unsupported gateway query %s (only json and zlib-stream are)", dict(request.query))
            await ws.close(code=4012)  # discord.py gives up on 4012 instead of reconnecting forever
            return ws
        conn = _GatewayConnection(ws, zlib_stream=compress == "zlib-stream")
        self._sockets.add(ws)
        try:
            await conn.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._on_gateway_payload(conn, json.loads(message.data))
        except ConnectionError:
            log.info("gateway connection lost while answering")
        finally:
            conn.live = False
            self._sockets.discard(ws)
        log.info("gateway connection closed with code %s", ws.close_code)
        return ws

    async def _on_gateway_payload(self, conn: _GatewayConnection, payload: Json) -> None:
        async with self._changed:
            self.gateway_received.append(payload)
            self._changed.notify_all()
        op = payload.get("op")
        data: Any = payload.get("d")
        if op == 1:
            await conn.send({"op": 11})
        elif op == 2:
            await self._identify(conn, data)
        elif op == 6:
            await self._resume(conn, data)
        else:
            log.debug("ignoring gateway op %s", op)

    async def _identify(self, conn: _GatewayConnection, data: Json) -> None:
        if data.get("token") != self.token:
            await conn.ws.close(code=4004)  # Authentication failed
            return
        shard_id, shard_count = data.get("shard") or (0, 1)
        if shard_count < self.shard_count:
            await conn.ws.close(code=4011)  # Sharding required
            return
        if shard_count != self.shard_count or not 0 <= shard_id < shard_count:
            await conn.ws.close(code=4010)  # Invalid shard
            return
        if data.get("intents", 0) & INTENT_MESSAGE_CONTENT and not self.message_content_intent:
            await conn.ws.close(code=4014)  # Disallowed intent(s): not turned on in the developer portal
            return
        session = self._sessions[shard_id]
        async with session.lock:
            if session.conn is not None and session.conn is not conn:
                session.conn.live = False
            session.conn = conn
            session.session_id = secrets.token_hex(16)
            session.seq = 0
            session.events = []
            session.intents = data.get("intents", 0)
            conn.live = True
            guilds = [guild for guild in self.guild_ids if _shard_of(guild, self.shard_count) == shard_id]
            ready: Json = {
                "v": 10,
                "user": self._me(),
                "guilds": [{"id": str(guild), "unavailable": True} for guild in guilds],
                "session_id": session.session_id,
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": APPLICATION_FLAGS},
                "private_channels": [],
                "relationships": [],
            }
            if "shard" in data:
                ready["shard"] = data["shard"]
            await self._emit(session, "READY", ready)
            for guild in guilds:
                await self._emit(session, "GUILD_CREATE", self._guild(guild))
        async with self._changed:
            self._changed.notify_all()

    async def _resume(self, conn: _GatewayConnection, data: Json) -> None:
        session = next((s for s in self._sessions if s.session_id and s.session_id == data.get("session_id")), None)
        if data.get("token") != self.token or session is None:
            await conn.send({"op": 9, "d": False})
            return
        async with session.lock:
            session.conn = conn
            for payload in session.events:
                if payload["s"] > (data.get("seq") or 0):
                    await conn.send(payload)
            conn.live = True
            await self._emit(session, "RESUMED", {})

    async def _dispatch(self, event: str, data: Json) -> None:
        """Dispatch an event to the shard of its guild now, or on its RESUME if it is disconnected."""
        guild_id = data.get("guild_id")
        session = self._sessions[_shard_of(int(guild_id) if guild_id else None, self.shard_count)]
        async with session.lock:
            await self._emit(session, event, data)

    async def _emit(self, session: _Session, event: str, data: Json) -> None:
        """Number, log and send one dispatch; the caller holds the session's lock."""
        if session.session_id is None:
            log.debug("no gateway session on shard %d: dropping %s", session.shard_id, event)
            return
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.events.append(payload)
        conn = session.conn
        if conn is None or not conn.live:
            return
        try:
            await conn.send(payload)
        except ConnectionError:
            conn.live = False  # the event stays logged for the RESUME

    def _session(self, guild_id: int | None) -> _Session:
        """The gateway session of the shard that carries `guild_id`."""
        return self._sessions[_shard_of(guild_id, self.shard_count)]

    def _require_session(self, guild_id: int | None) -> None:
        if self._session(guild_id).session_id is None:
            raise RuntimeError("the bot has not identified on the gateway yet (for that guild's shard)")

    async def _dispatch_message(self, event: str, message: Json) -> None:
        """MESSAGE_CREATE/UPDATE as the bot's intents let it see the message."""
        guild_id = message.get("guild_id")
        if guild_id and int(guild_id) not in self.guild_ids:  # a server the bot is not in
            return
        intents = self._session(int(guild_id) if guild_id else None).intents
        needed = INTENT_GUILD_MESSAGES if guild_id else INTENT_DIRECT_MESSAGES
        if message["flags"] & EPHEMERAL or not intents & needed:
            return
        if not guild_id:  # a DM: no member, and its content is the bot's to read without the intent
            await self._dispatch(event, message)
            return
        data = {**message, "member": self._member(int(message["author"]["id"]), with_user=False)}
        involved = {int(message["author"]["id"]), *(int(user["id"]) for user in message["mentions"])}
        if not intents & INTENT_MESSAGE_CONTENT and self.bot_user_id not in involved:
            data.update(content="", embeds=[], attachments=[], components=[], message_snapshots=[])
        await self._dispatch(event, data)

    async def _interact(
        self,
        kind: int,
        data: Json,
        scope: int | None,
        user_id: int | None,
        channel_id: int,
        message: Json | None = None,
    ) -> FakeInteraction:
        """Build an interaction from `user_id` in `channel_id`, as Discord shapes it, and dispatch it."""
        guild_id = self._channel_guild[channel_id]
        self._require_session(guild_id)
        if scope is not None:
            data["guild_id"] = str(scope)
        interaction_id = _snowflake()
        token = secrets.token_urlsafe(48)
        payload: Json = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "channel_id": str(channel_id),
            "channel": {**self._channels[channel_id], "permissions": PERMISSIONS},
            "app_permissions": PERMISSIONS,
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id or 0)},  # a guild install; "0" in the bot's DMs
            "context": 0,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if guild_id is None:
            payload.update(user=self._user(user_id or self.member_id), context=BOT_DM)
        else:
            payload.update(
                guild_id=str(guild_id),
                guild={"id": str(guild_id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member={**self._member(user_id or self.member_id), "permissions": PERMISSIONS},
            )
            payload["channel"]["guild_id"] = str(guild_id)
            if guild_id not in self.guild_ids:  # a server without the bot: the member's own install answers
                payload["authorizing_integration_owners"] = {str(USER_INSTALL): str(user_id or self.member_id)}
        if message is not None:
            payload["message"] = message
        interaction = FakeInteraction(interaction_id, token, payload)
        self.interactions[token] = interaction
        await self._dispatch("INTERACTION_CREATE", payload)
        return interaction

    # ---- messages and files

    def _store_file(
        self,
        data: bytes,
        filename: str,
        content_type: str,
        *,
        content_length: int | None = None,
        body_delay: float = 0.0,
    ) -> Json:
        """Serve `data` under /attachments/ and return its attachment object."""
        attachment_id = _snowflake()
        self._files[attachment_id] = _StoredFile(data, content_type, content_length, body_delay)
        url = f"{self.base_url}/attachments/{attachment_id}/{quote(filename)}"
        return {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    def _attachments(self, body: Json, files: list[UploadedFile], existing: list[Json]) -> list[Json]:
        """A message's attachments after a create or edit: the uploads and kept ones `attachments` lists, in order.

        discord.py names upload n `files[n]` and lists it as `{"id": n}`; without `attachments`, uploads are added.
        """
        entries = body.get("attachments")
        if entries is None:
            return existing + [self._store_upload(upload, upload.filename) for upload in files]
        uploads = {upload.field: upload for upload in files}
        kept = {attachment["id"]: attachment for attachment in existing}
        result = []
        for entry in entries:
            upload = uploads.get(f"files[{entry['id']}]")
            if upload is not None:
                result.append(self._store_upload(upload, entry.get("filename") or upload.filename))
            elif str(entry["id"]) in kept:
                result.append(kept[str(entry["id"])])
        return result

    def _store_upload(self, upload: UploadedFile, filename: str) -> Json:
        """Serve an uploaded file; like Discord, take its content type from the file name."""
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return self._store_file(upload.data, filename, content_type)

    async def _create_message(
        self,
        channel_id: int,
        body: Json,
        *,
        author: Json | None = None,
        files: list[UploadedFile] | None = None,
        attachments: list[Json] | None = None,
        flags: int = 0,
        interaction: FakeInteraction | None = None,
    ) -> Json:
        """Store a new message (by the bot unless `author`), dispatch MESSAGE_CREATE and return it."""
        content = body.get("content") or ""
        mentions = [
            {**self._user(int(user_id)), "member": self._member(int(user_id), with_user=False)}
            for user_id in dict.fromkeys(_MENTION.findall(content))
        ]
        message: Json = {
            "id": str(_snowflake()),
            "type": 0,
            "channel_id": str(channel_id),
            "author": author or self._users[self.bot_user_id],
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": attachments if attachments is not None else self._attachments(body, files or [], []),
            "embeds": body.get("embeds") or [],
            "sticker_items": body.get("sticker_items") or [],
            "components": body.get("components") or [],
            "pinned": False,
            "flags": flags,
        }
        if self._channel_guild[channel_id] is not None:
            message["guild_id"] = str(self._channel_guild[channel_id])
        reference = body.get("message_reference")
        if reference is not None and reference.get("type") == 1:  # a forward: type DEFAULT, the original as snapshot
            original = self.messages[int(reference["message_id"])]
            message["message_reference"] = {
                "type": 1,
                "message_id": original["id"],
                "channel_id": original["channel_id"],
                "guild_id": original.get("guild_id"),
            }
            message["message_snapshots"] = [{"message": {key: original[key] for key in SNAPSHOT_KEYS}}]
        elif reference is not None:
            message["type"] = 19
            referenced = self.messages.get(int(reference["message_id"]))
            message["message_reference"] = {
                "type": 0,
                "message_id": str(reference["message_id"]),
                "channel_id": str(reference.get("channel_id", channel_id)),
                "guild_id": message.get("guild_id"),
            }
            message["referenced_message"] = referenced
        if interaction is not None:
            # CHAT_INPUT_COMMAND, or CONTEXT_MENU_COMMAND for user and message commands
            message["type"] = 23 if interaction.payload["data"].get("type") in (2, 3) else 20
            message["webhook_id"] = message["application_id"] = str(self.application_id)
            message["interaction_metadata"] = {
                "id": str(interaction.id),
                "type": interaction.payload["type"],
                "user": interaction.payload["member"]["user"]
                if "member" in interaction.payload
                else interaction.payload["user"],
                "authorizing_integration_owners": interaction.payload["authorizing_integration_owners"],
            }
            interaction.message_ids.add(int(message["id"]))
        self.messages[int(message["id"])] = message
        self._channels[channel_id]["last_message_id"] = message["id"]
        await self._dispatch_message("MESSAGE_CREATE", message)
        return message

    async def _edit_message(self, message: Json, body: Json, files: list[UploadedFile]) -> Json:
        """Apply an edit (or the follow-up that ends a deferral), dispatch MESSAGE_UPDATE and return the message."""
        for key, empty in (("content", ""), ("embeds", []), ("components", [])):
            if key in body:
                message[key] = body[key] or empty
        message["attachments"] = self._attachments(body, files, message["attachments"])
        if message["flags"] & LOADING:
            message["flags"] &= ~LOADING
        else:
            message["edited_timestamp"] = _now()
        await self._dispatch_message("MESSAGE_UPDATE", message)
        return message

    # ---- HTTP plumbing

    def _api_routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        return [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/applications/{app_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/commands", self._put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self._followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._get_webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._edit_webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._delete_webhook_message),
            ("POST", "/channels/{channel_id}/messages", self._post_channel_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_channel_message),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._react),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user}", self._react),
            ("POST", "/channels/{channel_id}/typing", self._typing),
        ]

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Record the request, check auth and upload size, and turn a handler's crash into a 400."""
        if not request.path.startswith((API_PREFIX + "/", "/attachments/", "/stickers/")):
            return await handler(request)
        recorded = await _read_request(request)
        request["recorded"] = recorded
        log.debug("%s %s %s", recorded.method, recorded.path, recorded.json)
        # Webhook and interaction routes authenticate by their token, attachment downloads not at all.
        needs_auth = not recorded.route.startswith(("/webhooks/", "/interactions/", "/attachments/", "/stickers/"))
        response: web.StreamResponse
        try:
            if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                response = _error(401, 0, "401: Unauthorized")
            elif any(len(upload.data) > ATTACHMENT_SIZE_LIMIT for upload in recorded.files):
                response = _error(413, 40005, "Request entity too large")
            elif over := _over_limits(recorded.json):
                log.warning("fake Discord refused %s %s: %s", recorded.method, recorded.path, over)
                response = _error(400, 50035, f"Invalid Form Body: {over}")
            else:
                response = await handler(request)
        except Exception:
            log.exception("fake Discord failed on %s %s", recorded.method, recorded.path)
            response = _error(400, 50035, "Invalid Form Body")
        recorded.status = response.status
        if isinstance(response, web.Response) and response.content_type == "application/json":
            recorded.response = json.loads(cast(bytes, response.body))
        async with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()
        return response

    async def _wait(self, find: Callable[[], T | None], timeout: float, what: str) -> T:
        """Wait until `find` returns something; fail the test after `timeout` seconds."""
        async with self._changed:
            try:
                found = await asyncio.wait_for(self._changed.wait_for(find), timeout)
            except TimeoutError:
                raise AssertionError(f"fake Discord: no {what} within {timeout} s") from None
        assert found is not None
        return found

    async def _unknown_route(self, request: web.Request) -> web.Response:
        log.warning("fake Discord has no route for %s %s", request.method, request.path)
        return _error(404, 0, "404: Not Found")

    async def _download(self, request: web.Request) -> web.StreamResponse:
        stored = self._files.get(int(request.match_info["attachment_id"]))
        if stored is None:
            return web.Response(status=404)
        response = web.StreamResponse(headers={"Content-Type": stored.content_type})
        response.content_length = len(stored.data) if stored.content_length is None else stored.content_length
        self.downloading += 1
        self.most_downloading = max(self.most_downloading, self.downloading)
        try:
            await response.prepare(request)
            await asyncio.sleep(stored.body_delay)
            await response.write(stored.data)
        finally:
            self.downloading -= 1
        return response

    # ---- REST handlers

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json(self._me())

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(self.application_id),
                "name": "hxhbot-test",
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": APPLICATION_FLAGS,
                "owner": self._users[self.owner_id],
                "team": None,
                "bot": self._users[self.bot_user_id],
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "tags": [],
                "approximate_guild_count": 1,
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": limit})

    def _command_scope(self, request: web.Request) -> int | web.Response | None:
        """The guild id (None for global) of a commands route, or the error for a wrong app or guild."""
        if int(request.match_info["app_id"]) != self.application_id:
            return _error(404, 10002, "Unknown Application")
        if "guild_id" not in request.match_info:
            return None
        guild_id = int(request.match_info["guild_id"])
        if guild_id not in self.guild_ids:
            return _error(403, 50001, "Missing Access")
        return guild_id

    async def _get_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        return scope if isinstance(scope, web.Response) else _json(self.commands.get(scope, []))

    async def _put_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        if isinstance(scope, web.Response):
            return scope
        previous = {(c["name"], c["type"]): c["id"] for c in self.commands.get(scope, [])}
        synced = []
        for command in request["recorded"].json:
            kind = command.get("type", 1)
            stored = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                "type": kind,
                "id": previous.get((command["name"], kind)) or str(_snowflake()),
                "application_id": str(self.application_id),
                "version": str(_snowflake()),
            }
            if scope is not None:
                stored["guild_id"] = str(scope)
            synced.append(stored)
        self.commands[scope] = synced
        return _json(synced)

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        recorded: RecordedRequest = request["recorded"]
        interaction = self.interactions.get(request.match_info["token"])
        if interaction is None or str(interaction.id) != request.match_info["interaction_id"]:
            return _error(404, 10062, "Unknown interaction")
        if time.monotonic() - interaction.created > self.interaction_deadline:
            return _error(404, 10062, "Unknown interaction")
        if interaction.response_type is not None:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        interaction.requests.append(recorded)
        kind = recorded.json["type"]
        data = recorded.json.get("data") or {}
        interaction.response_type = kind
        message: Json | None = None
        if kind in (4, 5):
            flags = (data.get("flags") or 0) | (LOADING if kind == 5 else 0)
            body = data if kind == 4 else {}
            channel_id = int(interaction.payload["channel_id"])
            message = await self._create_message(
                channel_id, body, files=recorded.files, flags=flags, interaction=interaction
            )
            interaction.original_message_id = int(message["id"])
        elif kind in (6, 7) and "message" in interaction.payload:
            interaction.original_message_id = int(interaction.payload["message"]["id"])
            if kind == 7:
                message = await self._edit_message(self.messages[interaction.original_message_id], data, recorded.files)
        response: Json = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.payload["type"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(message and message["flags"] & EPHEMERAL),
            }
        }
        if interaction.original_message_id is not None:
            response["interaction"]["response_message_id"] = str(interaction.original_message_id)
        if message is not None:
            response["resource"] = {"type": kind, "message": message}
        return _json(response)

    def _acknowledged(self, request: web.Request) -> FakeInteraction | None:
        """The interaction a webhook route's token belongs to, if the bot has answered it; files the request there."""
        interaction = self.interactions.get(request.match_info["token"])
        if interaction is None or interaction.response_type is None:
            return None
        if int(request.match_info["app_id"]) != self.application_id:
            return None
        interaction.requests.append(request["recorded"])
        return interaction

    async def _followup(self, request: web.Request) -> web.Response:
        interaction = self._acknowledged(request)
        if interaction is None:
            return _error(404, 10015, "Unknown Webhook")
        recorded: RecordedRequest = request["recorded"]
        original = self.messages.get(interaction.original_message_id or 0)
        if original is not None and original["flags"] & LOADING:
            return _json(await self._edit_message(original, recorded.json, recorded.files))
        channel_id = int(interaction.payload["channel_id"])
        flags = recorded.json.get("flags") or 0
        message = await self._create_message(
            channel_id, recorded.json, files=recorded.files, flags=flags, interaction=interaction
        )
        return _json(message)

    def _webhook_message(self, request: web.Request) -> Json | web.Response:
        """The message (`@original` or an id) named by a webhook message route, or Discord's 404."""
        interaction = self._acknowledged(request)
        if interaction is None:
            return _error(404, 10015, "Unknown Webhook")
        raw_id = request.match_info["message_id"]
        if raw_id == "@original":
            message_id = interaction.original_message_id
        else:
            message_id = int(raw_id) if int(raw_id) in interaction.message_ids else None
        message = None if message_id is None else self.messages.get(message_id)
        return _error(404, 10008, "Unknown Message") if message is None else message

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        message = self._webhook_message(request)
        return message if isinstance(message, web.Response) else _json(message)

    async def _edit_webhook_message(self, request: web.Request) -> web.Response:
        message = self._webhook_message(request)
        if isinstance(message, web.Response):
            return message
        recorded: RecordedRequest = request["recorded"]
        return _json(await self._edit_message(message, recorded.json, recorded.files))

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        message = self._webhook_message(request)
        if isinstance(message, web.Response):
            return message
        del self.messages[int(message["id"])]
        if not message["flags"] & EPHEMERAL:
            deleted = {"id": message["id"], "channel_id": message["channel_id"], "guild_id": message.get("guild_id")}
            await self._dispatch("MESSAGE_DELETE", deleted)
        return web.Response(status=204)

    async def _post_channel_message(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel_id"])
        if channel_id not in self._channels:
            return _error(404, 10003, "Unknown Channel")
        recorded: RecordedRequest = request["recorded"]
        reference = recorded.json.get("message_reference")
        if reference is not None and int(reference["message_id"]) not in self.messages:
            return _error(400, 50035, "Invalid Form Body: Unknown message")
        return _json(await self._create_message(channel_id, recorded.json, files=recorded.files))

    async def _get_channel_message(self, request: web.Request) -> web.Response:
        message = self.messages.get(int(request.match_info["message_id"]))
        if message is None or message["channel_id"] != request.match_info["channel_id"]:
            return _error(404, 10008, "Unknown Message")
        return _json(message)

    async def _react(self, request: web.Request) -> web.Response:
        message = self.messages.get(int(request.match_info["message_id"]))
        if message is None or message["channel_id"] != request.match_info["channel_id"]:
            return _error(404, 10008, "Unknown Message")
        return web.Response(status=204)

    async def _typing(self, request: web.Request) -> web.Response:
        if int(request.match_info["channel_id"]) not in self._channels:
            return _error(404, 10003, "Unknown Channel")
        return web.Response(status=204)


async def bot_ready(client: Any, timeout: float = 60.0) -> None:
    """Wait until a discord.py client is ready and every guild READY announced has arrived (no longer unavailable)."""

    async def arrived() -> None:
        await client.wait_until_ready()
        while not client.guilds or any(guild.unavailable for guild in client.guilds):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(arrived(), timeout)


def _over_limits(body: Any) -> str:
    """What in a message body (wherever it sits: a callback's data, a webhook, a message) Discord would refuse as too
    long or too many, or "" (its documented limits on content, embeds and components)."""
    if isinstance(body, list):
        return next(filter(None, map(_over_limits, body)), "")
    if not isinstance(body, dict):
        return ""
    problems = [
        f"{key} over {most}"
        for key, most in (("content", 2000), ("custom_id", 100), ("placeholder", 150))
        if isinstance(body.get(key), str) and len(body[key]) > most
    ]
    if body.get("type") == 2 and len(body.get("label") or "") > 80:  # a button
        problems.append("button label over 80")
    for option in body.get("options") or []:  # a select menu's; a slash command's options have no label
        if isinstance(option, dict) and "label" in option and not 1 <= len(option["label"]) <= 100:
            problems.append("select option label not 1 to 100")
    if len(body.get("options") or []) > 25:
        problems.append("over 25 options")
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        problems.append("over 10 embeds")
    total = 0  # Discord's 6000 characters count across a message's embeds
    for embed in embeds:
        fields = embed.get("fields") or []
        parts = {
            "title": (embed.get("title"), 256),
            "description": (embed.get("description"), 4096),
            "footer": ((embed.get("footer") or {}).get("text"), 2048),
            "author": ((embed.get("author") or {}).get("name"), 256),
        }
        parts.update(
            {
                f"field {number} {key}": (field_.get(key), most)
                for number, field_ in enumerate(fields)
                for key, most in (("name", 256), ("value", 1024))
            }
        )
        problems += [f"embed {part} over {most}" for part, (text, most) in parts.items() if text and len(text) > most]
        problems += [
            f"embed {part} empty" for part, (text, _) in parts.items() if part.startswith("field") and not text
        ]
        total += sum(len(text or "") for text, _ in parts.values())
        if len(fields) > 25:
            problems.append("embed over 25 fields")
    if total > 6000:
        problems.append(f"embeds over 6000 characters together ({total})")
    problems += filter(None, (_over_limits(value) for key, value in body.items() if key != "embeds"))
    return "; ".join(problems)


async def _read_request(request: web.Request) -> RecordedRequest:
    """Parse a request's JSON body, or a multipart body's payload_json and files."""
    body: Any = None
    files: list[UploadedFile] = []
    if request.content_type == "application/json":
        body = await request.json()
    elif request.content_type == "multipart/form-data":
        async for part in await request.multipart():
            assert isinstance(part, BodyPartReader)
            if part.name == "payload_json":
                body = json.loads(await part.text())
            else:
                content_type = part.headers.get("Content-Type", "application/octet-stream")
                files.append(UploadedFile(part.name or "", part.filename or "", content_type, bytes(await part.read())))
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
    return RecordedRequest(
        method=request.method,
        path=request.path.removeprefix(API_PREFIX),
        route=route.removeprefix(API_PREFIX),
        params=dict(request.match_info),
        query=dict(request.query),
        json=body,
        files=files,
    )
