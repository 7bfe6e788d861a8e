"""Images posted in watched channels: react, and reply for the characters the bot is sure of."""

from __future__ import annotations

import logging
from collections import OrderedDict

import discord
from discord.ext import commands

from hxhbot.discord import attachments
from hxhbot.discord.bot import HxhBot
from hxhbot.discord.embeds import fitted
from hxhbot.discord.messages import Answerer, Taken
from hxhbot.discord.tree import cooldown
from hxhbot.engine.identification import Outcome
from hxhbot.engine.search import BusyError

log = logging.getLogger(__name__)
LOOKING = "🔍"
UNSURE = "🤷"
BUSY = "⏳"  # too many images waiting: not the same as unsure
SLOW = "🐢"  # the member's pictures were answered less than COOLDOWN_SECONDS ago: these are not looked at
DECISIONS_KEPT = 1000  # messages whose admission is remembered, as `Taken` remembers their pictures
NOT_NAMED = {Outcome.UNSURE: "not sure who this is", Outcome.UNKNOWN: "no character I know"}
NEEDED = (
    "view_channel",
    "read_message_history",
    "send_messages",
    "send_messages_in_threads",
    "embed_links",
    "attach_files",
    "add_reactions",
)  # what replying to a picture, in a watched channel or its threads, takes


class Watch(commands.Cog):
    """Answer images in WATCH_CHANNEL_IDS, and in their threads, without being asked."""

    def __init__(self, bot: HxhBot, answerer: Answerer) -> None:
        self.bot = bot
        self.answerer = answerer
        self.checked = False  # the watched channels are checked at the first READY only
        self.taken = Taken()
        self.cooldowns = commands.DynamicCooldownMapping(
            lambda message: cooldown(bot.settings), commands.BucketType.user
        )
        self.decisions: OrderedDict[int, bool] = OrderedDict()  # message id → whether its pictures are answered

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
                    log.warning(
                        "WATCH_CHANNEL_IDS: I see no channel %d in my servers; copy a channel's id "
                        "(right-click it → Copy Channel ID) and invite me to its server",
                        channel_id,
                    )
                continue
            if isinstance(channel, discord.abc.PrivateChannel):  # a DM channel's id: no server, nothing to watch
                continue
            allowed = channel.permissions_for(guild.me)
            missing = [name.replace("_", " ").title() for name in NEEDED if not getattr(allowed, name)]
            if missing:
                log.warning(
                    "watching #%s in %s, but I lack %s there: give me them, or I cannot answer",
                    channel,
                    guild,
                    ", ".join(missing),
                )
            else:
                log.info("watching #%s in %s", channel, guild)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Identify every image of a human's message in a watched channel (or a thread of one, a forum's posts
        included) but those marked as spoilers; name only the characters it is sure of."""
        if self.watched(message):
            await self.answer(message, attachments.images_in(message))

    @commands.Cog.listener()
    async def on_message_edit(self, before: discord.Message, after: discord.Message) -> None:
        """The same for the images an edit adds (those answered are taken): a link's preview comes so when Discord
        has not seen the link yet."""
        if self.watched(after):
            await self.answer(after, attachments.images_in(after))

    async def admitted(self, message: discord.Message) -> bool:
        """Whether a message's pictures may be answered: one message per member every COOLDOWN_SECONDS, decided when
        it first shows pictures (a preview an edit adds later follows the message); a 🐢 on a message refused."""
        if message.id not in self.decisions:
            moment = message.created_at.timestamp()
            bucket = self.cooldowns.get_bucket(message, moment)
            self.decisions[message.id] = not (bucket and bucket.update_rate_limit(moment))
            while len(self.decisions) > DECISIONS_KEPT:
                self.decisions.popitem(last=False)
            if not self.decisions[message.id]:
                log.info(
                    "not looking at %s's pictures in #%s: within COOLDOWN_SECONDS", message.author, message.channel
                )
                await _react(message, SLOW)
        return self.decisions[message.id]

    def watched(self, message: discord.Message) -> bool:
        """A human's message in a watched channel or in a thread of one."""
        channels = {message.channel.id, getattr(message.channel, "parent_id", None)}
        return not message.author.bot and bool(channels & self.bot.settings.watch_channel_ids)

    async def answer(self, message: discord.Message, found: list[attachments.ImageSource]) -> None:
        """React, identify the images not marked as spoilers, and reply for the characters named."""
        sources = self.taken.new(message.id, [source for source in found if not source.spoiler])
        if not sources or not await self.admitted(message) or not self.bot.take_request():
            return
        await _react(message, LOOKING)
        done = await self.answerer.answer_pictures(
            sources, "watch", message.guild.id if message.guild else None, only_named=True
        )
        named = [answered for answered in done.answered if answered.card.outcome is Outcome.NAMED]
        unsure = [
            f"{answered.label}: {UNSURE} {NOT_NAMED[answered.card.outcome]}."  # shown beside another's answer
            for answered in done.answered
            if answered.card.outcome is not Outcome.NAMED
        ]
        if named or done.problems:
            content = "\n".join(done.problems + (unsure if named else [])) or None  # no reply for unsure alone
            view = self.answerer.feedback_view(named[0], message.author.id, reveal=False) if len(named) == 1 else None
            embeds = fitted([answered.card.embed for answered in named])
            try:
                sent = await message.reply(
                    content=content,
                    embeds=embeds,
                    view=view or discord.utils.MISSING,
                    files=[answered.card.file for answered in named if answered.card.file],
                )
                if view is not None:
                    view.message = sent
            except discord.HTTPException as error:
                log.warning("could not reply in #%s: %s", message.channel, error)
        if unsure:
            await _react(message, UNSURE)
        elif not named:
            busy = any(isinstance(error, BusyError) for error in done.skipped)
            await _react(message, BUSY if busy else UNSURE)


async def _react(message: discord.Message, emoji: str) -> None:
    """Add a reaction, tolerating missing permissions."""
    try:
        await message.add_reaction(emoji)
    except discord.HTTPException as error:
        log.info("could not react in #%s: %s", message.channel, error)


async def setup(bot: HxhBot) -> None:
    """Extension entry point."""
    await bot.add_cog(Watch(bot, bot.answerer))
