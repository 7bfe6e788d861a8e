"""`/characters` for everyone, owner-only `/reindex`."""

from __future__ import annotations

import asyncio
import logging
import time

import discord
from discord import app_commands
from discord.ext import commands

from hxhbot.discord.bot import HxhBot
from hxhbot.discord.embeds import characters_embed
from hxhbot.discord.tree import member_cooldown, owner_only
from hxhbot.engine.facade import Engine
from hxhbot.engine.search import ReindexInProgressError

log = logging.getLogger(__name__)
PROGRESS_EVERY = 2.0  # seconds between progress edits (Discord rate-limits edits)


class Admin(commands.Cog):
    """What the gallery holds, and rebuilding its index."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @app_commands.command(name="characters", description="The characters I know and their gallery images")
    @app_commands.checks.dynamic_cooldown(member_cooldown)
    async def characters(self, interaction: discord.Interaction) -> None:
        """List the known characters."""
        await interaction.response.send_message(embed=characters_embed(self.engine.characters()), ephemeral=True)

    @app_commands.command(name="reindex", description="Rebuild the index from the gallery (owner only)")
    @app_commands.default_permissions(manage_guild=True)  # hidden from members; server managers see it
    @app_commands.allowed_installs(guilds=True, users=False)  # never on a member's account (USER_INSTALL)
    @owner_only()
    async def reindex(self, interaction: discord.Interaction) -> None:
        """Rebuild in the background, report progress, swap the new index in."""
        if self.engine.reindexing:
            raise ReindexInProgressError("An index rebuild is already running; wait for it to finish.")
        if self.engine.search.training:
            raise ReindexInProgressError("The model is training (/train): the index is rebuilt when it is done.")
        await interaction.response.send_message("Rebuilding the index from the gallery…", ephemeral=True)
        last_edit = 0.0
        edits: set[asyncio.Task] = set()

        def progress(done: int, total: int) -> None:
            nonlocal last_edit
            if time.monotonic() - last_edit < PROGRESS_EVERY or edits:
                return
            last_edit = time.monotonic()
            task = asyncio.create_task(_edit(interaction, f"Rebuilding the index… {done}/{total} images"))
            edits.add(task)
            task.add_done_callback(edits.discard)

        summary = await self.engine.reindex(progress)
        await asyncio.gather(*edits)
        lines = [f"Index rebuilt: {summary.describe()}."]
        lines += [f"• skipped `{path}`: {reason}" for path, reason in summary.skipped[:10]]
        if len(summary.skipped) > 10:
            lines.append(f"• … and {len(summary.skipped) - 10} more (see the log)")
        await _edit(interaction, "\n".join(lines)[:2000])


async def _edit(interaction: discord.Interaction, text: str) -> None:
    """Edit the private status message; a lapsed token only loses the update."""
    try:
        await interaction.edit_original_response(content=text)
    except discord.HTTPException as error:
        log.info("could not update /reindex status: %s", error)


async def setup(bot: HxhBot) -> None:
    """Extension entry point."""
    await bot.add_cog(Admin(bot.engine))
