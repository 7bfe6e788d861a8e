"""`/whois image:` and the "Who is this?" message command."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from hxhbot import attachments
from hxhbot.attachments import AttachmentError, ImageSource
from hxhbot.bot import HxhBot, member_cooldown
from hxhbot.teach import FeedbackView


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
        await self.respond(interaction, attachments.from_attachment(image), "whois")

    async def whois_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Answer for the first image of the chosen message."""
        found = attachments.images_in(message)
        if not found:
            raise AttachmentError("That message has no image attachment or image embed.")
        await self.respond(interaction, found[0], "who-is-this")

    async def respond(self, interaction: discord.Interaction, source: ImageSource, command: str) -> None:
        """Check the image, defer within Discord's 3 s, then follow up with the answer and its feedback buttons
        (privately for a picture marked as a spoiler: the answer shows it and names who is in it)."""
        attachments.check(source, self.bot.settings.max_image_bytes)  # refuse before deferring: privately
        await interaction.response.defer(thinking=True, ephemeral=source.spoiler)
        result, sha256 = await self.bot.identify(source, command, interaction.guild_id)
        reply = self.bot.render(result)
        view = FeedbackView(self.bot, result, source, sha256, reply.unnamed, interaction.user.id)
        self.bot.open_views.add(view)
        view.message = await interaction.followup.send(
            embed=reply.embed, file=reply.file or discord.utils.MISSING, view=view, ephemeral=source.spoiler, wait=True)


async def setup(bot: HxhBot) -> None:
    """Extension entry point."""
    await bot.add_cog(Whois(bot))
