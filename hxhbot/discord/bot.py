"""The Discord bot: a `commands.AutoShardedBot` handed the engine, the answerer and the open views it serves with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from hxhbot.config import ConfigError, Settings, load_settings
from hxhbot.discord.api import pointed_at
from hxhbot.discord.attachments import Downloader
from hxhbot.discord.messages import Answerer
from hxhbot.discord.redaction import hide_tokens
from hxhbot.discord.tree import BotTree, send_private
from hxhbot.discord.views import OpenViews
from hxhbot.engine.facade import Engine, open_engine
from hxhbot.engine.feedback import FeedbackError
from hxhbot.engine.model_dir import ModelError, WeightsUnavailableError

log = logging.getLogger(__name__)
COGS = (
    "hxhbot.discord.cogs.whois",
    "hxhbot.discord.cogs.watch",
    "hxhbot.discord.cogs.admin",
    "hxhbot.discord.cogs.feedback",
    "hxhbot.discord.cogs.help",
    "hxhbot.discord.cogs.train",
)
SHUTDOWN_GRACE = 10.0  # seconds requests in flight get to finish after SIGTERM
STATUS = "Who is this hunter? /whois"  # the bot's custom status, under its name in the member list
EXPIRED = "These buttons no longer work (I have restarted, or they were left too long): ask me again."


class CommandSyncError(RuntimeError):
    """Discord refused to register the bot's commands; `str()` says what to fix."""


class HxhBot(commands.AutoShardedBot):
    """hxhbot: identifies Hunter × Hunter characters in images."""

    def __init__(
        self, settings: Settings, engine: Engine, answerer: Answerer, views: OpenViews, **options: Any
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = bool(settings.watch_channel_ids)  # privileged: only to watch channels
        if settings.user_install:  # members may add the app to their account and ask wherever they are
            options.update(
                allowed_installs=app_commands.AppInstallationType(guild=True, user=True),
                allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True),
            )
        if settings.shard_ids:  # this process's shards of SHARD_COUNT; else discord.py runs them all
            options["shard_ids"] = list(settings.shard_ids)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),  # a file name saying @everyone pings no one
            activity=discord.CustomActivity(STATUS),
            tree_cls=BotTree,
            shard_count=settings.shard_count,
            **options,
        )
        hide_tokens()  # discord.py's DEBUG lines carry interaction tokens
        self.settings = settings
        self.engine = engine
        self.answerer = answerer
        self.views = views
        self.in_flight: set[asyncio.Task] = set()  # the tasks handling requests taken
        self.draining = False

    async def setup_hook(self) -> None:
        """Add the cogs and sync their commands."""
        for cog in COGS:
            await self.load_extension(cog)
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        if guild:
            self.tree.copy_global_to(guild=guild)
        try:
            synced = await self.tree.sync(guild=guild)
        except discord.Forbidden as error:
            where = f"in DEV_GUILD_ID {guild.id}" if guild else "globally"
            raise CommandSyncError(
                f"Discord refused to register the commands {where} ({error.text}): invite the bot "
                f"{'to that server ' if guild else ''}with the bot and applications.commands scopes"
                f"{', or fix the id (right-click the server → Copy Server ID)' if guild else ''}"
            ) from None
        log.info("synced %d commands %s", len(synced), f"to guild {guild.id}" if guild else "globally")

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: messages go to the cogs' listeners only, so "@hxhbot hi" is no command error."""

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A button or menu of no view this process made (one from before a restart): say so, privately."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        if not self.views.has_component(data.get("custom_id")):
            await send_private(interaction, EXPIRED)

    async def on_ready(self) -> None:
        """Log who we are once connected."""
        log.info(
            "connected as %s (%s) to %d servers on shards %s of %s",
            self.user,
            getattr(self.user, "id", "?"),
            len(self.guilds),
            ",".join(map(str, sorted(self.shards))),
            self.shard_count,
        )

    def take_request(self) -> bool:
        """Count the current task as a request in flight; False once the bot is shutting down."""
        if self.draining:
            return False
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        return True

    async def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop taking requests, abandon any index build, give requests in flight `grace` seconds, then close."""
        if self.draining:
            return
        self.draining = True
        log.info("shutting down: finishing %d requests in flight (at most %.0f s)", len(self.in_flight), grace)
        self.engine.abandon_builds()
        if self.in_flight:
            _, unfinished = await asyncio.wait(set(self.in_flight), timeout=grace)
            if unfinished:
                log.warning("%d requests were still running after %.0f s: stopping anyway", len(unfinished), grace)
        await self.close()

    async def close(self) -> None:
        """Stop the open views, then close Discord (the engine and the downloader are closed by their opener)."""
        self.views.stop_all()
        await super().close()

    async def is_owner(self, user: discord.abc.User) -> bool:
        """The application's owner (or team) and everyone in OWNER_IDS."""
        return user.id in self.settings.owner_ids or await super().is_owner(user)


@contextlib.asynccontextmanager
async def assembled(settings: Settings, **options: object) -> AsyncIterator[HxhBot]:
    """The bot, not yet logged in, and what it is handed, built before it starts: the engine (model, index, feedback
    store; a first gallery collected if due), the downloader and the open views; all closed on leaving."""
    async with open_engine(settings) as engine, Downloader(settings, engine) as downloader:
        views = OpenViews()
        async with HxhBot(settings, engine, Answerer(engine, downloader, views), views, **options) as bot:
            yield bot


async def run(settings: Settings) -> None:
    """Run the bot until it is closed or the process gets SIGINT/SIGTERM."""
    with pointed_at(settings.discord_api_base):
        async with assembled(settings) as bot:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, lambda: asyncio.create_task(bot.shutdown()))
            await bot.start(settings.discord_token)
    log.info("shut down cleanly")


def main() -> int:
    """Entry point of `bot.py`."""
    discord.utils.setup_logging(level=logging.INFO)
    try:
        settings = load_settings(require_token=True)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    logging.getLogger().setLevel(settings.log_level)
    try:
        asyncio.run(run(settings))
    except discord.LoginFailure:
        log.error("Discord refused DISCORD_TOKEN: check the token in .env")
        return 2
    except discord.PrivilegedIntentsRequired:
        log.error(
            "Discord refused the Message Content intent that WATCH_CHANNEL_IDS needs: turn it on "
            "(https://discord.com/developers/applications → your app → Bot → Privileged Gateway Intents), "
            "or leave WATCH_CHANNEL_IDS empty"
        )
        return 2
    except (FeedbackError, CommandSyncError) as error:
        log.error("%s", error)
        return 2
    except (aiohttp.ClientConnectionError, discord.GatewayNotFound) as error:
        log.error(
            "cannot reach Discord at %s (%s): check the network or DISCORD_API_BASE", settings.discord_api_base, error
        )
        return 2
    except WeightsUnavailableError as error:
        log.error("cannot start: %s", " ".join(str(error).split()))
        return 2
    except ModelError as error:
        log.error(
            "cannot start: %s. Restore or retrain the model in MODEL_DIR (training/README.md), "
            "or empty MODEL_DIR to use ImageNet features.",
            " ".join(str(error).split()).rstrip("."),
        )
        return 2
    return 0
