"""Owner-only `/train`: the model trained on the gallery while the bot keeps answering, put in service if better."""

from __future__ import annotations

import asyncio
import logging
import time

import discord
from discord import app_commands
from discord.ext import commands

from hxhbot.discord.bot import HxhBot
from hxhbot.discord.tree import owner_only
from hxhbot.engine.facade import Engine
from hxhbot.engine.owner_training import STAGES, OwnerTrainer, TrainingBusyError, TrainingError

log = logging.getLogger(__name__)
PROGRESS_EVERY = 5.0  # seconds between progress edits (Discord rate-limits edits; a run lasts minutes)


class Train(commands.Cog):
    """Training the model on the server's own gallery."""

    def __init__(self, engine: Engine) -> None:
        self.trainer = OwnerTrainer(engine.settings, engine.search)

    @app_commands.command(name="train", description="Train the model on the gallery; it serves only if better (owner)")
    @app_commands.default_permissions(manage_guild=True)  # hidden from members; server managers see it
    @app_commands.allowed_installs(guilds=True, users=False)  # never on a member's account (USER_INSTALL)
    @owner_only()
    async def train(self, interaction: discord.Interaction) -> None:
        """Train in a child process, edit its progress into a private reply, then say what serves."""
        try:
            self.trainer.check_free()
        except TrainingBusyError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        await interaction.response.send_message(
            "Training the model on the gallery: I keep answering meanwhile, and the new model serves only if it "
            "ranks held-out gallery pictures better than the current one.",
            ephemeral=True,
        )
        last_edit = 0.0
        edits: set[asyncio.Task] = set()

        def status(stage: str, done: int, total: int, left: float | None) -> None:
            nonlocal last_edit
            if time.monotonic() - last_edit < PROGRESS_EVERY or edits:
                return
            last_edit = time.monotonic()
            task = asyncio.create_task(_tell(interaction, progress_line(stage, done, total, left)))
            edits.add(task)
            task.add_done_callback(edits.discard)

        try:
            outcome = await self.trainer.train(status)
            text = outcome.describe()
        except (TrainingBusyError, TrainingError) as error:
            text = str(error)
        await asyncio.gather(*edits)
        await _tell(interaction, text[:2000])


def progress_line(stage: str, done: int, total: int, left: float | None) -> str:
    """'Training: 4/20 epochs at most, about 3 min left'."""
    unit = {"views": " pictures", "training": " epochs at most", "index": " images"}.get(stage, "")
    line = f"{STAGES.get(stage, stage).capitalize()}: {done}/{total}{unit}"
    if left is not None and done < total:
        line += f", about {left / 60:.0f} min left" if left >= 90 else f", about {max(left, 1):.0f} s left"
    return line + "…"


async def _tell(interaction: discord.Interaction, text: str) -> None:
    """Edit the private reply; once its token has lapsed (15 minutes), send the owner a direct message instead."""
    try:
        await interaction.edit_original_response(content=text)
        return
    except discord.HTTPException as error:
        log.info("could not update /train status (%s): sending a direct message", error)
    try:
        await interaction.user.send(f"/train: {text}"[:2000])
    except discord.HTTPException as error:
        log.warning("could not tell %s how /train went: %s", interaction.user, error)


async def setup(bot: HxhBot) -> None:
    """Extension entry point."""
    await bot.add_cog(Train(bot.engine))
