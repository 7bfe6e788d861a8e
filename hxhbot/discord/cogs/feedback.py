"""Owner-only `/review` of members' corrections and `/stats` of the answers."""

from __future__ import annotations

import io
import logging
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import discord
from discord import app_commands
from discord.ext import commands, tasks

from hxhbot.discord.bot import HxhBot
from hxhbot.discord.embeds import percent
from hxhbot.discord.tree import check_owner, owner_only
from hxhbot.discord.views import BotView, OpenViews
from hxhbot.engine.facade import Engine
from hxhbot.engine.feedback import Correction
from hxhbot.engine.images import IMAGE_SUFFIXES, ImageError
from hxhbot.engine.index import GalleryIndexError
from hxhbot.engine.model_dir import describe_model
from hxhbot.wording import counted

log = logging.getLogger(__name__)
STATS_CHARACTERS = 20  # characters listed by /stats, most answered first


class Feedback(commands.Cog):
    """What members said about the answers, and what the owner does with it."""

    def __init__(self, engine: Engine, views: OpenViews) -> None:
        self.engine = engine
        self.views = views

    async def cog_load(self) -> None:
        """Start expiring unreviewed corrections (at once, then hourly)."""
        self.expire.start()

    async def cog_unload(self) -> None:
        """Stop expiring."""
        self.expire.cancel()

    @tasks.loop(hours=1)
    async def expire(self) -> None:
        """Delete the pictures of corrections left unreviewed for CORRECTION_RETENTION_DAYS."""
        store = self.engine.feedback
        expired = await store.call(store.expire, self.engine.settings.correction_retention_days)
        if expired:
            log.info(
                "%d corrections left unreviewed for %d days expired; their pictures were deleted",
                expired,
                self.engine.settings.correction_retention_days,
            )

    @app_commands.command(name="review", description="Approve or reject members' corrections (owner only)")
    @app_commands.default_permissions()
    @app_commands.allowed_installs(guilds=True, users=False)  # never on a member's account (USER_INSTALL)
    @owner_only()
    async def review(self, interaction: discord.Interaction) -> None:
        """Show the oldest pending correction with Approve / Reject."""
        store = self.engine.feedback
        correction = await store.call(store.next_pending)
        if correction is None:
            await interaction.response.send_message("No corrections are waiting for review.", ephemeral=True)
            return
        embed, file = await self.review_page(correction)
        view = ReviewView(self, correction)
        await interaction.response.send_message(embed=embed, file=file, view=view, ephemeral=True)

    async def review_page(self, correction: Correction) -> tuple[discord.Embed, discord.File]:
        """The embed and picture that show one pending correction."""
        store = self.engine.feedback
        waiting = await store.call(store.pending_count)
        name = "picture" + _suffix(correction.picture_url)
        embed = discord.Embed(
            title=f"Is this {correction.correction}?",
            description=f"I answered **{correction.answer}**; <@{correction.user_id}> says "
            f"**{correction.correction}**.",
        )
        embed.set_image(url=f"attachment://{name}")
        embed.set_footer(text=f"{waiting} waiting · server {correction.guild_id or 'DM'} · {correction.created_at}")
        return embed, discord.File(io.BytesIO(correction.data), filename=name)

    @app_commands.command(name="stats", description="Answers, confidence, feedback and latency (owner only)")
    @app_commands.default_permissions()
    @app_commands.allowed_installs(guilds=True, users=False)  # never on a member's account (USER_INSTALL)
    @owner_only()
    async def stats(self, interaction: discord.Interaction) -> None:
        """Answers since start, share confident, feedback per character, latency, index size."""
        store = self.engine.feedback
        verdicts = await store.call(store.verdicts)
        pending = await store.call(store.pending_count)
        stats = self.engine.stats
        indexed = self.engine.index_size()
        confident = f"{percent(stats.confident / stats.answers)} confident" if stats.answers else "none yet"
        p50, p95 = stats.latency(50), stats.latency(95)
        confidence = self.engine.describe_confidence()
        latency = (
            f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
            if p50 is not None and p95 is not None
            else "no answers yet"
        )
        size = f"{counted(indexed[0], 'image')}, {counted(indexed[1], 'character')}" if indexed else "no index"
        embed = discord.Embed(
            title="Since start",
            description="\n".join(
                [
                    f"**Answers:** {stats.answers} ({confident})",
                    f"**Latency:** {latency}",
                    f"**Index:** {size}",
                    f"**Confidence:** {confidence}",
                    f"**Model:** {describe_model(self.engine.settings.model_dir)}",
                    f"**Corrections waiting for /review:** {pending}",
                ]
            ),
        )
        names = sorted(
            set(stats.by_character) | set(verdicts),
            key=lambda name: (-stats.by_character[name], -sum(verdicts.get(name, (0, 0))), name),
        )
        lines = [
            _character_line(name, stats.by_character[name], *verdicts.get(name, (0, 0)))
            for name in names[:STATS_CHARACTERS]
        ]
        if lines:
            embed.add_field(
                name="By character (answers since start; members' verdicts, all time)",
                value="\n".join(lines)[:1024],
                inline=False,
            )
        await interaction.response.send_message(embed=embed, ephemeral=True)


class ReviewView(BotView):
    """Approve or Reject one correction, then show the next."""

    def __init__(self, cog: Feedback, correction: Correction, timeout: float = 900) -> None:
        super().__init__(cog.views, timeout)
        self.cog = cog
        self.correction = correction

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Only an owner approves or rejects; anyone else who clicks is told so, privately (`on_error`)."""
        return await check_owner(interaction)

    @discord.ui.button(label="Approve", style=discord.ButtonStyle.success, emoji="✅")
    async def approve(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Add the picture to the gallery and the live index, then show the next correction."""
        await interaction.response.defer()
        correction = self.correction
        source = {
            "source": "feedback",
            "url": correction.picture_url,
            "page_url": "",
            "source_id": str(correction.id),
            "suggested_by": str(correction.user_id),
            "approved_by": str(interaction.user.id),
        }
        try:
            await self.cog.engine.add_to_gallery(correction.correction, correction.data, source)
        except (ImageError, GalleryIndexError, OSError, ValueError) as error:  # another index build running, say
            log.error("could not add correction %d to the gallery: %s", correction.id, error)
            await interaction.followup.send(f"I couldn't add that picture to the gallery: {error}", ephemeral=True)
            return
        await self.resolve(
            interaction, approved=True, done=f"Added to {correction.correction}'s gallery and the live index."
        )

    @discord.ui.button(label="Reject", style=discord.ButtonStyle.secondary, emoji="✖️")
    async def reject(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Drop the correction, then show the next one."""
        await interaction.response.defer()
        await self.resolve(interaction, approved=False, done="Rejected.")

    async def resolve(self, interaction: discord.Interaction, approved: bool, done: str) -> None:
        """Store the decision and turn this message into the next pending correction, if any."""
        store = self.cog.engine.feedback
        await store.call(store.resolve, self.correction, approved, interaction.user.id)
        self.stop()
        following = await store.call(store.next_pending)
        if following is None:
            await interaction.edit_original_response(
                content=f"{done} No more corrections are waiting.", embed=None, attachments=[], view=None
            )
            return
        embed, file = await self.cog.review_page(following)
        view = ReviewView(self.cog, following)
        await interaction.edit_original_response(content=done, embed=embed, attachments=[file], view=view)


def _character_line(name: str, answers: int, right: int, wrong: int) -> str:
    """`Name — 12 answers · ✅ 3 (75%) · ✖️ 1 (25%)`."""
    marked = right + wrong
    if not marked:
        return f"{name} — {answers} answers · no verdicts"
    return (
        f"{name} — {answers} answers · ✅ {right} ({percent(right / marked)}) · ✖️ {wrong} ({percent(wrong / marked)})"
    )


def _suffix(url: str) -> str:
    """The picture's file suffix from its URL, `.jpg` when it has none we know."""
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES else ".jpg"


async def setup(bot: HxhBot) -> None:
    """Extension entry point."""
    await bot.add_cog(Feedback(bot.engine, bot.views))
