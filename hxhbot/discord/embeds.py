"""How answers look: a card (embed and numbered preview) per picture, a line per character; candidates, characters."""

from __future__ import annotations

import io
from dataclasses import dataclass

import discord

from hxhbot.engine.identification import Identification, Outcome, Sighting
from hxhbot.wording import counted, cut

COLOUR = {
    Outcome.NAMED: discord.Colour.from_rgb(46, 160, 67),
    Outcome.UNSURE: discord.Colour.from_rgb(230, 162, 60),
    Outcome.UNKNOWN: discord.Colour.from_rgb(120, 120, 120),
}
PREVIEW = "picture.jpg"
TITLE_LENGTH = 256  # Discord refuses a longer embed title
DESCRIPTION_LENGTH = 4096  # ... and a longer description
EMBEDS_LENGTH = 6000  # ... and more characters across a message's embeds
TITLE = {Outcome.UNSURE: "Not sure who this is", Outcome.UNKNOWN: "No character I know"}


@dataclass
class Card:
    """How one identified picture is shown: its embed, the preview file the embed shows, the picture's outcome (named
    when any character is), and whether some character in it is not named (then Show candidates offers them)."""

    embed: discord.Embed
    file: discord.File | None
    outcome: Outcome
    unnamed: bool


def percent(score: float) -> str:
    """A score as a percentage for people."""
    return f"{score * 100:.0f}%"


def picture_outcome(result: Identification, threshold: float, unknown: float) -> Outcome:
    """Named when any character is named, else unsure when any is unsure, else unknown."""
    outcomes = {sighting.outcome(threshold, unknown) for sighting in result.sightings}
    return next(outcome for outcome in Outcome if outcome in outcomes)


def card(
    result: Identification,
    threshold: float,
    unknown: float,
    filename: str = PREVIEW,
    label: str = "",
    only_named: bool = False,
) -> Card:
    """The embed for one identified picture (`label` names it when a message has several; `only_named`: leave out
    the characters not named confidently, as in watched channels)."""
    outcome = picture_outcome(result, threshold, unknown)
    numbered = list(enumerate(result.sightings, 1))
    if only_named:
        numbered = [(n, s) for n, s in numbered if s.outcome(threshold, unknown) is Outcome.NAMED]
    if len(result.sightings) == 1:
        embed = _single(result.sightings[0], outcome, threshold)
    else:
        named = [s.best.character for _, s in numbered if s.outcome(threshold, unknown) is Outcome.NAMED]
        title = cut(", ".join(named), TITLE_LENGTH) if named else TITLE[outcome]
        embed = discord.Embed(
            title=title,
            colour=COLOUR[outcome],
            description="\n".join(_line(n, s, threshold, unknown) for n, s in numbered),
        )
        if any(s.outcome(threshold, unknown) is not Outcome.NAMED for _, s in numbered):
            embed.set_footer(text="Show candidates reveals my guesses for those I can't name.")
    if label:
        embed.set_author(name=label)
    file = None
    if result.preview:
        file = discord.File(io.BytesIO(result.preview), filename=filename)
        embed.set_thumbnail(url=f"attachment://{filename}")
    unnamed = any(s.outcome(threshold, unknown) is not Outcome.NAMED for s in result.sightings)
    return Card(embed, file, outcome, unnamed)


def _single(sighting: Sighting, outcome: Outcome, threshold: float) -> discord.Embed:
    """The embed of a picture with one character."""
    best = sighting.best
    if outcome is Outcome.NAMED:
        embed = discord.Embed(
            title=best.character, colour=COLOUR[outcome], description=f"**{percent(best.score)}** sure"
        )
        others = sighting.matches[1:]
        if others:
            embed.add_field(name="Also possible", value=_candidates(others), inline=False)
        return embed
    if outcome is Outcome.UNSURE:
        text = (
            f"No character reaches {percent(threshold)} (best guess {percent(best.score)}). "
            f"Press **Show candidates** to see the guesses."
        )
    else:
        text = f"This looks like no character in my gallery (best guess only {percent(best.score)})."
    return discord.Embed(title=TITLE[outcome], colour=COLOUR[outcome], description=text)


def _line(number: int, sighting: Sighting, threshold: float, unknown: float) -> str:
    """`**1.** Gon Freecss — 97%`, or what the bot makes of a character it cannot name."""
    outcome = sighting.outcome(threshold, unknown)
    if outcome is Outcome.NAMED:
        return f"**{number}.** {sighting.best.character} — {percent(sighting.best.score)}"
    if outcome is Outcome.UNSURE:
        return f"**{number}.** not sure (best guess {percent(sighting.best.score)})"
    return f"**{number}.** no character I know"


def candidates_embed(result: Identification, label: str = "") -> discord.Embed:
    """Every character's candidates, revealed on request (`label` names the picture when a message has several)."""
    embed = discord.Embed(title="Low-confidence candidates", colour=COLOUR[Outcome.UNSURE])
    if len(result.sightings) == 1:
        embed.description = _candidates(result.sightings[0].matches)
    else:
        for number, sighting in enumerate(result.sightings, 1):
            embed.add_field(name=f"{number}.", value=_candidates(sighting.matches), inline=False)
    if label:
        embed.set_author(name=label)
    return embed


def characters_embed(counts: dict[str, int]) -> discord.Embed:
    """The known characters and their gallery image counts."""
    if not counts:
        return discord.Embed(
            title="No characters yet", description="The gallery has not been indexed: the owner can run /reindex."
        )
    lines = [f"{name} — {count}" for name, count in counts.items()]
    room, shown = DESCRIPTION_LENGTH - len("\n… and 99999 more"), 0
    for line in lines:
        room -= len(line) + 1
        if room < 0:
            break
        shown += 1
    text = "\n".join(lines[:shown]) + (f"\n… and {len(lines) - shown} more" if shown < len(lines) else "")
    return discord.Embed(
        title=f"{counted(len(counts), 'character')}, {counted(sum(counts.values()), 'gallery image')}", description=text
    )


def fitted(embeds: list[discord.Embed]) -> list[discord.Embed]:
    """A message's embeds, each cut to an equal share of Discord's `EMBEDS_LENGTH` when together they exceed it:
    footer dropped, title, description and field values shortened, labels and field names kept."""
    if sum(map(len, embeds)) <= EMBEDS_LENGTH:
        return embeds
    share = EMBEDS_LENGTH // len(embeds)
    for embed in embeds:
        if len(embed) <= share:
            continue
        embed.remove_footer()
        embed.title = cut(embed.title, share // 4) if embed.title else embed.title
        names = sum(len(field.name or "") for field in embed.fields)
        room = share - len(embed.title or "") - len(embed.author.name or "") - names
        each = max(room // max(int(bool(embed.description)) + len(embed.fields), 1), 1)
        if embed.description:
            embed.description = cut(embed.description, each)
        for number, field in enumerate(embed.fields):
            embed.set_field_at(number, name=field.name, value=cut(field.value or "", each), inline=bool(field.inline))
    return embeds


def _candidates(matches: list) -> str:
    """`Name — 12%` lines."""
    return "\n".join(f"{match.character} — {percent(match.score)}" for match in matches)[:1024]
