"""`/help`: what the bot does, its commands and how sure it must be to name a character."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from hxhbot.discord.bot import HxhBot
from hxhbot.discord.embeds import percent
from hxhbot.engine.facade import Engine
from hxhbot.engine.model_dir import describe_model


class Help(commands.Cog):
    """Tell members what to expect."""

    def __init__(self, bot: HxhBot, engine: Engine) -> None:
        self.bot = bot
        self.engine = engine

    @app_commands.command(name="help", description="What I do and how to use me")
    async def help(self, interaction: discord.Interaction) -> None:
        """Explain the bot privately."""
        await interaction.response.send_message(
            embed=help_embed(self.bot, self.engine, interaction.guild_id), ephemeral=True
        )


def help_embed(bot: HxhBot, engine: Engine, guild_id: int | None) -> discord.Embed:
    """The help page, with this bot's settings and the watched channels of the server asking (none in a DM)."""
    settings = bot.settings
    known = len(engine.characters())
    embed = discord.Embed(
        title="Who's that Hunter?",
        description=f"I tell which *Hunter × Hunter* character is in a picture: screenshots, fan art, cosplay. "
        f"I compare each character in it with a gallery of {known} characters and answer for each, "
        f"numbered on a thumbnail of your picture.",
    )
    embed.add_field(
        name="Commands",
        inline=False,
        value="\n".join(
            [
                "`/whois image:` — who is in the attached picture (a spoiler's answer is for you only)",
                "**Apps → Who is this?** (right-click a message) — the same for every picture or sticker of a message",
                "Or send me the picture in a direct message.",
                "`/characters` — the characters I know",
                "`/help` — this page",
                "Owners: `/reindex` rebuilds the index, `/train` trains me on the gallery, `/review` checks "
                "members' corrections, `/stats` shows how I do.",
                f"Model: {describe_model(settings.model_dir)}.",
            ]
        ),
    )
    embed.add_field(
        name="How sure I am",
        inline=False,
        value=(
            f"A score is how likely my answer is right. I name a character from "
            f"**{percent(engine.threshold)}**; below that I say I'm not sure and **Show candidates** "
            f"reveals my guesses to whoever asked; below **{percent(settings.unknown_threshold)}** I say it is no "
            f"character I know. Several characters in one picture each get a numbered box and a line."
        ),
    )
    embed.add_field(
        name="Teach me",
        inline=False,
        value=(
            "Press **Right** or **Wrong** under an answer. After **Wrong**, pick who it really is: once the owner "
            "approves, I recognise that picture from then on."
        ),
    )
    guilds = {channel: getattr(bot.get_channel(channel), "guild", None) for channel in settings.watch_channel_ids}
    here = sorted(channel for channel, guild in guilds.items() if guild is not None and guild.id == guild_id)
    if here:  # another server's channels are not this one's business
        channels = " ".join(f"<#{channel}>" for channel in here)
        embed.add_field(
            name="Watched channels",
            inline=False,
            value=f"In {channels} and their threads I look at every picture posted (not those marked "
            "as spoilers) and answer when I'm sure.",
        )
    embed.set_footer(text=f"Members wait {settings.cooldown_seconds:g} s between two commands.")
    return embed


async def setup(bot: HxhBot) -> None:
    """Extension entry point."""
    await bot.add_cog(Help(bot, bot.engine))
