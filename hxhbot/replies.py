"""How answers look: one embed per image, a thumbnail of the closest gallery image, a reveal button."""

from __future__ import annotations

import io
from dataclasses import dataclass

import discord

from hxhbot.search import Identification

COLOUR_SURE = discord.Colour.from_rgb(46, 160, 67)
COLOUR_UNSURE = discord.Colour.from_rgb(230, 162, 60)
THUMBNAIL = "match.jpg"


@dataclass
class Answer:
    """An embed, the file its thumbnail refers to, and whether the bot is confident."""

    embed: discord.Embed
    file: discord.File | None
    confident: bool


def percent(score: float) -> str:
    """A score as a percentage for people."""
    return f"{score * 100:.0f}%"


def answer(
    result: Identification, threshold: float, thumbnail: bytes | None, filename: str = THUMBNAIL, label: str = ""
) -> Answer:
    """The embed for one identified image (`label` names the image when a message has several)."""
    best = result.best
    confident = best.score >= threshold
    if confident:
        embed = discord.Embed(title=best.character, colour=COLOUR_SURE,
                              description=f"**{percent(best.score)}** match")
        others = result.matches[1:]
        if others:
            embed.add_field(name="Also possible", value=_lines(others), inline=False)
        embed.set_footer(text="Thumbnail: the closest gallery image, to check by eye.")
    else:
        embed = discord.Embed(
            title="Not sure who this is", colour=COLOUR_UNSURE,
            description=f"No character reaches {percent(threshold)} confidence "
                        f"(best guess {percent(best.score)}). Press **Show candidates** to see the guesses.",
        )
    if label:
        embed.set_author(name=label)
    file = None
    if thumbnail and confident:
        file = discord.File(io.BytesIO(thumbnail), filename=filename)
        embed.set_thumbnail(url=f"attachment://{filename}")
    return Answer(embed, file, confident)


def candidates_embed(result: Identification) -> discord.Embed:
    """The low-confidence candidates, revealed on request."""
    return discord.Embed(title="Low-confidence candidates", colour=COLOUR_UNSURE,
                         description=_lines(result.matches))


def characters_embed(counts: dict[str, int]) -> discord.Embed:
    """The known characters and their gallery image counts."""
    if not counts:
        return discord.Embed(title="No characters yet",
                             description="The gallery has not been indexed: the owner can run /reindex.")
    lines = [f"{name} — {count}" for name, count in counts.items()]
    text = "\n".join(lines)
    if len(text) > 4000:
        text = text[:3990].rsplit("\n", 1)[0] + "\n…"
    return discord.Embed(title=f"{len(counts)} characters, {sum(counts.values())} gallery images",
                         description=text)


def _lines(matches: list) -> str:
    """`Name — 12%` lines."""
    return "\n".join(f"{match.character} — {percent(match.score)}" for match in matches)


class RevealCandidates(discord.ui.View):
    """A button under an unsure answer that shows its candidates to whoever presses it."""

    def __init__(self, result: Identification, timeout: float = 900) -> None:
        super().__init__(timeout=timeout)
        self.result = result
        self.message: discord.Message | discord.WebhookMessage | None = None

    @discord.ui.button(label="Show candidates", style=discord.ButtonStyle.secondary, emoji="🔎")
    async def reveal(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Send the candidates privately to the presser."""
        await interaction.response.send_message(embed=candidates_embed(self.result), ephemeral=True)

    async def on_timeout(self) -> None:
        """Grey the button out once it stops working."""
        self.reveal.disabled = True
        if self.message is not None:
            try:
                await self.message.edit(view=self)
            except discord.HTTPException:
                pass
