"""The Discord bot: a `commands.AutoShardedBot` that owns the search service and the download session."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
import weakref

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from hxhbot.config import ConfigError, Settings, load_settings
from hxhbot.discord import attachments
from hxhbot.discord.api import pointed_at
from hxhbot.discord.attachments import ImageSource
from hxhbot.discord.redaction import hide_tokens
from hxhbot.discord.replies import Answer, answer
from hxhbot.discord.tree import BotTree, cooldown, send_private
from hxhbot.engine import first_run
from hxhbot.engine.feedback import FeedbackError, FeedbackStore
from hxhbot.engine.fitted_threshold import in_force
from hxhbot.engine.identification import Identification
from hxhbot.engine.model_dir import ModelError, WeightsUnavailableError
from hxhbot.engine.search import NotReadyError, SearchService
from hxhbot.engine.stats import AnswerStats

log = logging.getLogger(__name__)
COGS = (
    "hxhbot.discord.cogs.whois",
    "hxhbot.discord.cogs.watch",
    "hxhbot.discord.cogs.admin",
    "hxhbot.discord.cogs.feedback",
    "hxhbot.discord.cogs.help",
)
SHUTDOWN_GRACE = 10.0  # seconds requests in flight get to finish after SIGTERM
PARALLEL_DOWNLOADS = 8  # images downloaded at once; the others wait their turn holding no bytes
STATUS = "Who is this hunter? /whois"  # the bot's custom status, under its name in the member list
EXPIRED = "These buttons no longer work (I have restarted, or they were left too long): ask me again."


class CommandSyncError(RuntimeError):
    """Discord refused to register the bot's commands; `str()` says what to fix."""


class HxhBot(commands.AutoShardedBot):
    """hxhbot: identifies Hunter × Hunter characters in images."""

    def __init__(self, settings: Settings, search: SearchService | None = None, **options: object) -> None:
        intents = discord.Intents.default()
        intents.message_content = bool(settings.watch_channel_ids)  # privileged: only to watch channels
        if settings.user_install:  # members may add the app to their account and ask wherever they are
            options.update(
                allowed_installs=app_commands.AppInstallationType(guild=True, user=True),
                allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True),
            )
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),  # a file name saying @everyone pings no one
            activity=discord.CustomActivity(STATUS),
            tree_cls=BotTree,
            shard_count=settings.shard_count,
            shard_ids=list(settings.shard_ids or ()) or None,
            **options,
        )
        hide_tokens()  # discord.py's DEBUG lines carry interaction tokens
        self.settings = settings
        self.search = search
        self.feedback: FeedbackStore | None = None
        self.stats = AnswerStats()
        self.preparing: asyncio.Task | None = None  # the first start's gallery collection
        self.session: aiohttp.ClientSession | None = None
        self.download_hosts = attachments.download_hosts(settings.discord_api_base)
        self.download_slots = asyncio.Semaphore(PARALLEL_DOWNLOADS)
        self.open_views: weakref.WeakSet[discord.ui.View] = weakref.WeakSet()
        # Wrong under an answer, per member: one press every COOLDOWN_SECONDS (feedback_ui)
        self.wrong_presses = commands.DynamicCooldownMapping(
            lambda interaction: cooldown(self.settings), lambda interaction: interaction.user.id
        )
        self.in_flight: set[asyncio.Task] = set()  # the tasks handling requests taken
        self.draining = False

    async def setup_hook(self) -> None:
        """Load model, index and feedback store off the loop; collect a first gallery if due; add cogs; sync."""
        if self.search is None:
            self.search = await asyncio.to_thread(SearchService.open, self.settings)
        await self.search.start()
        self.feedback = await asyncio.to_thread(FeedbackStore.open, self.settings.feedback_db)
        if first_run.needs_collection(self.settings):
            self.preparing = asyncio.create_task(
                first_run.prepare_gallery(self.settings, self.search), name="hxhbot-first-run"
            )
        self.session = attachments.open_session(self.settings.discord_api_base)
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
        """A button or menu of no view this process made (one from before a restart): say so, privately.

        A view that answers a click is still in `open_views` (its callback holds it), even once it has stopped."""
        if interaction.type is not discord.InteractionType.component:
            return
        custom_id = (interaction.data or {}).get("custom_id")
        items = (item for view in list(self.open_views) for item in view.children)
        if not any(getattr(item, "custom_id", None) == custom_id for item in items):
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
        if self.search:
            self.search.abandon_builds()
        if self.in_flight:
            _, unfinished = await asyncio.wait(set(self.in_flight), timeout=grace)
            if unfinished:
                log.warning("%d requests were still running after %.0f s: stopping anyway", len(unfinished), grace)
        await self.close()

    async def close(self) -> None:
        """Stop live views, close Discord, then the download session and the search service."""
        for view in list(self.open_views):
            view.stop()
        if self.preparing is not None:
            self.preparing.cancel()  # what was collected stays; the next start resumes
            await asyncio.gather(self.preparing, return_exceptions=True)
        await super().close()
        if self.session:
            await self.session.close()
        if self.search:
            await self.search.close()
        if self.feedback:
            await asyncio.to_thread(self.feedback.close)

    async def is_owner(self, user: discord.abc.User) -> bool:
        """The application's owner (or team) and everyone in OWNER_IDS."""
        return user.id in self.settings.owner_ids or await super().is_owner(user)

    async def download(self, source: ImageSource) -> bytes:
        """Check and download one image (at most MAX_IMAGE_BYTES, within DOWNLOAD_TIMEOUT), `PARALLEL_DOWNLOADS` at
        a time; refused as busy, before a byte is fetched, while QUEUE_SIZE images are being identified."""
        attachments.check(source, self.settings.max_image_bytes)
        assert self.session is not None and self.search is not None
        self.search.check_room()
        async with self.download_slots:
            self.search.check_room()  # it may have filled up during the wait
            return await attachments.download(
                self.session, source, self.settings.max_image_bytes, self.settings.download_timeout, self.download_hosts
            )

    async def identify(self, source: ImageSource, command: str, guild_id: int | None) -> tuple[Identification, str]:
        """Check, download and identify one image, logging and counting its top answer; also the image's SHA-256."""
        started = time.perf_counter()
        assert self.search is not None
        if self.preparing is not None and not self.preparing.done() and not self.search.characters():
            raise NotReadyError(first_run.PREPARING)
        data = await self.download(source)
        result = await self.search.identify(data)
        seconds = time.perf_counter() - started
        best = result.best
        self.stats.add(best.character, best.score >= self.threshold, seconds)
        log.info(
            "answer server=%s command=%s latency_ms=%.0f top=%r score=%.3f characters=%d",
            guild_id,
            command,
            seconds * 1000,
            best.character,
            best.score,
            len(result.sightings),
        )
        return result, hashlib.sha256(data).hexdigest()

    def render(
        self, result: Identification, filename: str = "picture.jpg", label: str = "", only_named: bool = False
    ) -> Answer:
        """The embed (and preview file) answering one identified picture, at this bot's thresholds."""
        return answer(result, self.threshold, self.settings.unknown_threshold, filename, label, only_named)

    @property
    def threshold(self) -> float:
        """The score from which a character is named: CONFIDENCE_THRESHOLD when set, else the one fitted to the
        gallery at its last index build."""
        return in_force(self.search.confidence if self.search else None, self.settings.confidence_threshold)


async def run(settings: Settings) -> None:
    """Run the bot until it is closed or the process gets SIGINT/SIGTERM."""
    with pointed_at(settings.discord_api_base):
        async with HxhBot(settings) as bot:
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
