"""`/whois image:`, the "Who is this?" message command, and pictures sent to the bot in a direct message."""

from __future__ import annotations

import contextlib
import logging

import discord
from discord import app_commands
from discord.ext import commands

from hxhbot.discord import attachments
from hxhbot.discord.attachments import ImageSource
from hxhbot.discord.bot import HxhBot
from hxhbot.discord.messages import Answerer, Reply, Taken
from hxhbot.discord.tree import cooldown, member_cooldown
from hxhbot.errors import UserError
from hxhbot.wording import slow_down

log = logging.getLogger(__name__)


class Whois(commands.Cog):
    """Identify the character in an image someone asks about."""

    def __init__(self, bot: HxhBot, answerer: Answerer) -> None:
        self.bot = bot
        self.answerer = answerer
        self.cooldowns = commands.DynamicCooldownMapping(
            lambda message: cooldown(bot.settings),  # direct messages
            commands.BucketType.user,
        )
        self.taken = Taken()  # direct messages' pictures answered
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
            raise UserError("That message has no image attachment, image embed or sticker I can read.")
        await self.respond(interaction, found, "who-is-this")

    async def respond(self, interaction: discord.Interaction, sources: list[ImageSource], command: str) -> None:
        """Defer within Discord's 3 s, then answer the pictures (their first `MAX_PICTURES`) in one reply: an embed
        each, a line for each that could not be looked at; Right / Wrong when one is answered, Show candidates for
        those with a character not named. Privately when any picture is marked as a spoiler: the answer shows it."""
        if len(sources) == 1:
            attachments.check(sources[0], self.bot.settings.max_image_bytes)  # refuse before deferring: privately
        private = any(source.spoiler for source in sources)
        await interaction.response.defer(thinking=True, ephemeral=private)
        done = await self.answerer.answer_pictures(sources, command, interaction.guild_id)
        if not done.answered:  # said privately
            raise UserError("\n".join(done.problems)) if done.problems else done.skipped[0]
        reply = self.answerer.reply(done, interaction.user.id)
        sent = await interaction.followup.send(
            content=reply.content or discord.utils.MISSING,
            embeds=reply.embeds,
            files=reply.files,
            view=reply.view or discord.utils.MISSING,
            ephemeral=private,
            wait=True,
        )
        if reply.view is not None:
            reply.view.message = sent

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A picture sent to the bot in a direct message is a question: answered in full, as Who is this? answers."""
        if message.guild is None and not message.author.bot:
            await self.answer_direct(message, attachments.images_in(message) + attachments.stickers_in(message))

    @commands.Cog.listener()
    async def on_message_edit(self, before: discord.Message, after: discord.Message) -> None:
        """The same for the pictures an edit adds to a direct message (a link's preview, mostly; those answered are
        taken)."""
        if after.guild is None and not after.author.bot:
            await self.answer_direct(after, attachments.images_in(after), new_message=False)

    async def answer_direct(self, message: discord.Message, found: list[ImageSource], new_message: bool = True) -> None:
        """Answer a direct message's pictures in a reply, one new message every COOLDOWN_SECONDS per member (what an
        edit adds belongs to a question already let through)."""
        found = self.taken.new(message.id, found)
        if not found or not self.bot.take_request():
            return
        bucket = self.cooldowns.get_bucket(message, message.created_at.timestamp()) if new_message else None
        retry_after = bucket.update_rate_limit(message.created_at.timestamp()) if bucket else None
        if retry_after:
            await _reply(message, Reply(slow_down(retry_after)))
            return
        with contextlib.suppress(discord.HTTPException):  # "hxhbot is typing…" while the pictures are read
            await message.channel.typing()
        done = await self.answerer.answer_pictures(found, "direct-message", None)
        if done.answered:
            await _reply(message, self.answerer.reply(done, message.author.id))
        else:
            await _reply(message, Reply("\n".join(done.problems) or str(done.skipped[0])))


async def _reply(message: discord.Message, reply: Reply) -> None:
    """Reply to a direct message, tolerating a member who has closed their DMs since."""
    try:
        sent = await message.reply(
            content=reply.content, embeds=reply.embeds, files=reply.files, view=reply.view or discord.utils.MISSING
        )
    except discord.HTTPException as error:
        log.info("could not answer %s's direct message: %s", message.author, error)
        return
    if reply.view is not None:
        reply.view.message = sent


async def setup(bot: HxhBot) -> None:
    """Extension entry point."""
    await bot.add_cog(Whois(bot, bot.answerer))
