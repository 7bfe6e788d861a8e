"""Images posted in watched channels: react, and reply for the characters the bot is sure of."""

from __future__ import annotations

import logging

import discord
from discord.ext import commands

from hxhbot import attachments
from hxhbot.answers import Identification, Outcome
from hxhbot.attachments import AttachmentError, ImageSource
from hxhbot.bot import HxhBot
from hxhbot.images import ImageError
from hxhbot.search import BusyError, NotReadyError
from hxhbot.teach import FeedbackView
from hxhbot.wording import code

log = logging.getLogger(__name__)
LOOKING = "🔍"
UNSURE = "🤷"
BUSY = "⏳"  # too many images waiting: not the same as unsure
MAX_EMBEDS = 10  # Discord's limit per message
NOT_NAMED = {Outcome.UNSURE: "not sure who this is", Outcome.UNKNOWN: "no character I know"}
NEEDED = ("view_channel", "read_message_history", "send_messages", "send_messages_in_threads", "embed_links",
          "attach_files", "add_reactions")  # what replying to a picture, in a watched channel or its threads, takes


class Watch(commands.Cog):
    """Answer images in WATCH_CHANNEL_IDS, and in their threads, without being asked."""

    def __init__(self, bot: HxhBot) -> None:
        self.bot = bot
        self.checked = False  # the watched channels are checked at the first READY only

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Log each watched channel once: watched, missing a permission the replies need, or not to be seen."""
        if self.checked:
            return
        self.checked = True
        for channel_id in sorted(self.bot.settings.watch_channel_ids):
            channel = self.bot.get_channel(channel_id)
            guild = getattr(channel, "guild", None)
            if channel is None or guild is None:
                if not self.bot.settings.shard_ids:  # else it may be another process's shards' channel
                    log.warning("WATCH_CHANNEL_IDS: I see no channel %d in my servers; copy a channel's id "
                                "(right-click it → Copy Channel ID) and invite me to its server", channel_id)
                continue
            allowed = channel.permissions_for(guild.me)
            missing = [name.replace("_", " ").title() for name in NEEDED if not getattr(allowed, name)]
            if missing:
                log.warning("watching #%s in %s, but I lack %s there: give me them, or I cannot answer",
                            channel, guild, ", ".join(missing))
            else:
                log.info("watching #%s in %s", channel, guild)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Identify every image of a human's message in a watched channel (or a thread of one, a forum's posts
        included) but those marked as spoilers; name only the characters it is sure of."""
        watched = self.bot.settings.watch_channel_ids
        if message.author.bot or not {message.channel.id, getattr(message.channel, "parent_id", None)} & watched:
            return
        sources = [source for source in attachments.images_in(message) if not source.spoiler][:MAX_EMBEDS]
        if not sources or not self.bot.take_request():
            return
        await _react(message, LOOKING)
        embeds, files, problems, unsure, answered = [], [], [], [], []
        busy = False
        for number, source in enumerate(sources, 1):
            label = f"Image {number}" if len(sources) > 1 else ""
            try:
                result, sha256 = await self.bot.identify(source, "watch", message.guild.id if message.guild else None)
            except AttachmentError as error:  # its sentence names the file
                problems.append(str(error))
                continue
            except ImageError as error:
                problems.append(f"I couldn't read {code(source.filename)}: {error}")
                continue
            except (BusyError, NotReadyError) as error:
                log.info("skipped an image in #%s: %s", message.channel, error)
                busy = busy or isinstance(error, BusyError)
                continue
            reply = self.bot.render(result, filename=f"picture{number}.jpg", label=label, only_named=True)
            if reply.outcome is Outcome.NAMED:
                embeds.append(reply.embed)
                answered.append((result, source, sha256))
                if reply.file:
                    files.append(reply.file)
            else:
                unsure.append(f"{label}: {UNSURE} {NOT_NAMED[reply.outcome]}.")  # shown beside another's answer
        if embeds or problems:
            content = "\n".join(problems + (unsure if embeds else [])) or None  # no reply for unsure pictures alone
            view = self.feedback_view(*answered[0], message.author.id) if len(answered) == 1 else None
            try:
                sent = await message.reply(content=content, embeds=embeds, files=files, view=view)
                if view is not None:
                    view.message = sent
            except discord.HTTPException as error:
                log.warning("could not reply in #%s: %s", message.channel, error)
        if unsure:
            await _react(message, UNSURE)
        elif not embeds:
            await _react(message, BUSY if busy else UNSURE)

    def feedback_view(self, result: Identification, source: ImageSource, sha256: str, asker_id: int) -> FeedbackView:
        """Right / Wrong buttons for a reply that answers one picture."""
        view = FeedbackView(self.bot, result, source, sha256, reveal=False, asker_id=asker_id)
        self.bot.open_views.add(view)
        return view


async def _react(message: discord.Message, emoji: str) -> None:
    """Add a reaction, tolerating missing permissions."""
    try:
        await message.add_reaction(emoji)
    except discord.HTTPException as error:
        log.info("could not react in #%s: %s", message.channel, error)


async def setup(bot: HxhBot) -> None:
    """Extension entry point."""
    await bot.add_cog(Watch(bot))
