"""`/whois image:` and the "Who is this?" message command."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from hxhbot import attachments
from hxhbot.attachments import AttachmentError, ImageSource
from hxhbot.bot import HxhBot, member_cooldown
from hxhbot.pictures import answer_each
from hxhbot.replies import RevealCandidates, fitted
from hxhbot.teach import FeedbackView
from hxhbot.wording import counted


class Whois(commands.Cog):
    """Identify the character in an image someone asks about."""

    def __init__(self, bot: HxhBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Who is this?", callback=self.whois_message)
        app_commands.checks.dynamic_cooldown(member_cooldown)(self.menu)
        bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        """Remove the context-menu command with the cog."""
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="whois", description="Which Hunter × Hunter character is in this image?")
    @app_commands.describe(image="A screenshot, fan art or cosplay photo")
    @app_commands.checks.dynamic_cooldown(member_cooldown)
    async def whois(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        """Answer with the best matching characters for the attached image."""
        await self.respond(interaction, [attachments.from_attachment(image)], "whois")

    async def whois_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Answer for each image of the chosen message, its stickers included."""
        found = attachments.images_in(message) + attachments.stickers_in(message)
        if not found:
            raise AttachmentError("That message has no image attachment, image embed or sticker I can read.")
        await self.respond(interaction, found, "who-is-this")

    async def respond(self, interaction: discord.Interaction, sources: list[ImageSource], command: str) -> None:
        """Defer within Discord's 3 s, then answer the pictures (their first `MAX_PICTURES`) in one reply: an embed
        each, a line for each that could not be looked at; Right / Wrong when one is answered, Show candidates for
        those with a character not named. Privately when any picture is marked as a spoiler: the answer shows it."""
        if len(sources) == 1:
            attachments.check(sources[0], self.bot.settings.max_image_bytes)  # refuse before deferring: privately
        private = any(source.spoiler for source in sources)
        await interaction.response.defer(thinking=True, ephemeral=private)
        done = await answer_each(self.bot, sources, command, interaction.guild_id)
        if not done.answered:  # said privately
            raise AttachmentError("\n".join(done.problems)) if done.problems else done.skipped[0]
        lines = list(done.problems)
        if done.skipped:
            lines.append(f"{counted(len(done.skipped), 'picture')} not looked at. {done.skipped[0]}")
        unnamed = [(answered.label, answered.result) for answered in done.answered if answered.reply.unnamed]
        view: RevealCandidates | None = None
        if len(done.answered) == 1:
            first = done.answered[0]
            view = FeedbackView(self.bot, first.result, first.source, first.sha256, first.reply.unnamed,
                                interaction.user.id)
        elif unnamed:
            view = RevealCandidates(unnamed, interaction.user.id)
        if view is not None:
            self.bot.open_views.add(view)
        sent = await interaction.followup.send(
            content="\n".join(lines) or discord.utils.MISSING,
            embeds=fitted([answered.reply.embed for answered in done.answered]),
            files=[answered.reply.file for answered in done.answered if answered.reply.file],
            view=view or discord.utils.MISSING, ephemeral=private, wait=True)
        if view is not None:
            view.message = sent


async def setup(bot: HxhBot) -> None:
    """Extension entry point."""
    await bot.add_cog(Whois(bot))
