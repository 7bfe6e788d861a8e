"""The bot's command tree: who may run a command, and what a member is told when a command or a button fails."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

import discord
from discord import app_commands

from hxhbot.config import Settings
from hxhbot.errors import UserError
from hxhbot.wording import slow_down

if TYPE_CHECKING:
    from hxhbot.discord.bot import HxhBot

log = logging.getLogger(__name__)
T = TypeVar("T")  # what owner_only decorates
APOLOGY = "Something went wrong on my side; it has been logged."  # for every failure no member can mend
UPDATES = (
    discord.InteractionResponseType.deferred_message_update,  # a button's click answered by (deferring) an
    discord.InteractionResponseType.message_update,
)  # edit of its message: that message is no placeholder


class NotOwnerError(UserError, app_commands.CheckFailure):
    """The user is not the bot's owner."""

    def __init__(self) -> None:
        super().__init__("Only the bot's owner can do that.")


class ShuttingDownError(UserError, app_commands.CheckFailure):
    """The bot is stopping and takes no new requests."""

    def __init__(self) -> None:
        super().__init__("I'm restarting right now; try again in a minute.")


class BotTree(app_commands.CommandTree):
    """The bot's app commands (`tree_cls`): each a request in flight, none taken while shutting down; a failure is
    told to the member privately."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Count the command as a request in flight; refuse it once the bot is shutting down."""
        if not cast("HxhBot", self.client).take_request():
            raise ShuttingDownError()
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        """Every command error ends here."""
        name = getattr(interaction.command, "name", "?")
        await tell_failure(interaction, getattr(error, "original", error), f"command {name}")


def sentence_for(error: BaseException) -> str | None:
    """What a member is told of `error`, or None when it is no fault of theirs nor anything they can mend."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, app_commands.CommandOnCooldown):
        return slow_down(error.retry_after)
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    return None


async def tell_failure(interaction: discord.Interaction, error: BaseException, what: str) -> None:
    """Tell the member privately why `what` (a command, a button) failed; the unexpected is logged with its
    traceback and answered with the one apology."""
    text = sentence_for(error)
    if text is None:
        log.error("%s failed", what, exc_info=error)
        text = APOLOGY
    await send_private(interaction, text)


async def send_private(interaction: discord.Interaction, text: str) -> None:
    """Tell only the user: as the response, else in a follow-up, dropping first a public "thinking…" placeholder
    (the message of a button whose click updates it stays)."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if interaction.response.type not in UPDATES:
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as error:
        log.warning("could not tell %s: %s", interaction.user, error)


async def check_owner(interaction: discord.Interaction) -> bool:
    """True for the application's owner (or team) and OWNER_IDS; anyone else raises `NotOwnerError`."""
    if await interaction.client.is_owner(interaction.user):  # type: ignore[attr-defined]
        return True
    raise NotOwnerError()


def owner_only() -> Callable[[T], T]:
    """App-command check: only the application owner or OWNER_IDS."""
    return app_commands.check(check_owner)


def cooldown(settings: Settings) -> app_commands.Cooldown | None:
    """One request per COOLDOWN_SECONDS (none when 0)."""
    per = settings.cooldown_seconds
    return app_commands.Cooldown(1, per) if per > 0 else None


def member_cooldown(interaction: discord.Interaction) -> app_commands.Cooldown | None:
    """Per-user cooldown of an app command."""
    return cooldown(interaction.client.settings)  # type: ignore[attr-defined]
