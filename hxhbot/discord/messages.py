"""The pictures of one message, answered in turn: an embed each, and a sentence for each that could not be."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import discord
from discord.ext import commands

from hxhbot.discord.attachments import AttachmentError, Downloader, ImageSource
from hxhbot.discord.embeds import Card, card, fitted
from hxhbot.discord.feedback_ui import FeedbackView, RevealCandidates
from hxhbot.discord.tree import member_cooldown
from hxhbot.discord.views import OpenViews
from hxhbot.engine.facade import Engine
from hxhbot.engine.identification import Identification
from hxhbot.engine.images import ImageError
from hxhbot.engine.search import BusyError, NotReadyError
from hxhbot.wording import code, counted

log = logging.getLogger(__name__)
MAX_PICTURES = 10  # Discord's limit of embeds per message


@dataclass(frozen=True)
class AnsweredPicture:
    """One picture answered: `Image N` when the message has several, its card, the identification behind it."""

    label: str
    card: Card
    identification: Identification
    source: ImageSource
    sha256: str


@dataclass
class AnswerSheet:
    """What the bot made of a message's pictures: those answered, a sentence for each it could not read, and those it
    did not look at."""

    answered: list[AnsweredPicture] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # a sentence per picture that could not be read
    skipped: list[BusyError | NotReadyError] = field(default_factory=list)  # not looked at: busy, or not ready


@dataclass
class Reply:
    """A reply answering a member's question about a message's pictures."""

    content: str | None
    embeds: list[discord.Embed] = field(default_factory=list)
    files: list[discord.File] = field(default_factory=list)
    view: RevealCandidates | None = None  # among the open views; its `message` is for the sender to set


class Taken:
    """The images of recent messages already answered: an edit adding a link's preview is asked about once, even when
    discord.py has updated the message before its `on_message` ran. Every message watched is remembered, so its
    1000 outlast discord.py's cache of 1000 messages of every kind, outside which no edit is dispatched."""

    def __init__(self, messages: int = 1000) -> None:
        self.messages = messages
        self.urls: OrderedDict[int, set[str]] = OrderedDict()

    def new(self, message_id: int, found: list[ImageSource]) -> list[ImageSource]:
        """Those of `found` not taken yet for this message; they are taken now."""
        taken = self.urls.setdefault(message_id, set())
        self.urls.move_to_end(message_id)
        while len(self.urls) > self.messages:
            self.urls.popitem(last=False)
        fresh = [source for source in found if source.url not in taken]
        taken.update(source.url for source in fresh)
        return fresh


class Answerer:
    """Answers the pictures members ask about: each downloaded from Discord, identified by the engine, counted and
    logged, and drawn as an embed at the engine's thresholds; the buttons under a reply among the open views."""

    def __init__(self, engine: Engine, downloader: Downloader, views: OpenViews) -> None:
        self.engine = engine
        self.downloader = downloader
        self.views = views
        # Wrong under an answer, per member: one press every COOLDOWN_SECONDS
        self.wrong_presses = commands.DynamicCooldownMapping(member_cooldown, lambda interaction: interaction.user.id)

    async def answer_pictures(
        self, sources: list[ImageSource], command: str, guild_id: int | None, only_named: bool = False
    ) -> AnswerSheet:
        """Identify a message's first `MAX_PICTURES` pictures one after another (`only_named`: as watched channels
        show them); a sentence says how many were left."""
        done = AnswerSheet()
        left = max(0, len(sources) - MAX_PICTURES)  # attachments, link previews and stickers together can pass 10
        sources = sources[:MAX_PICTURES]
        for number, source in enumerate(sources, 1):
            label = f"Image {number}" if len(sources) > 1 else ""
            try:
                identification, sha256 = await self.examine(source, command, guild_id)
            except AttachmentError as error:  # its sentence names the file
                done.problems.append(str(error))
                continue
            except ImageError as error:
                done.problems.append(f"I couldn't read {code(source.filename)}: {error}")
                continue
            except (BusyError, NotReadyError) as error:
                log.info("skipped %s of a message (%s): %s", label or "the image", command, error)
                done.skipped.append(error)
                continue
            filename = f"picture{number}.jpg" if label else "picture.jpg"
            shown = card(identification, *self.thresholds, filename=filename, label=label, only_named=only_named)
            done.answered.append(AnsweredPicture(label, shown, identification, source, sha256))
        if left:
            done.problems.append(
                f"{counted(left, 'more picture')} not looked at: I answer {MAX_PICTURES} pictures of a message at most."
            )
        return done

    async def examine(self, source: ImageSource, command: str, guild_id: int | None) -> tuple[Identification, str]:
        """Check, download and identify one image, logging and counting its top answer; also the image's SHA-256."""
        started = time.perf_counter()
        self.engine.check_ready()
        data = await self.downloader.download(source)
        result = await self.engine.identify(data)
        seconds = time.perf_counter() - started
        self.engine.count_answer(result, seconds)
        best = result.best
        log.info(
            "answer server=%s command=%s latency_ms=%.0f top=%r score=%.3f characters=%d",
            guild_id,
            command,
            seconds * 1000,
            best.character,
            best.score,
            len(result.sightings),
        )
        return result, hashlib.sha256(data).hexdigest()

    @property
    def thresholds(self) -> tuple[float, float]:
        """The score from which a character is named (the engine's threshold in force), and UNKNOWN_THRESHOLD."""
        return self.engine.threshold, self.engine.settings.unknown_threshold

    def reply(self, done: AnswerSheet, asker_id: int) -> Reply:
        """Every answered picture's embed and a line for each of the others; Right / Wrong when one picture is
        answered, else Show candidates for those with a character not named, for `asker_id` only."""
        lines = list(done.problems)
        if done.skipped:
            lines.append(f"{counted(len(done.skipped), 'picture')} not looked at. {done.skipped[0]}")
        unnamed = [(answered.label, answered.identification) for answered in done.answered if answered.card.unnamed]
        view: RevealCandidates | None = None
        if len(done.answered) == 1:
            view = self.feedback_view(done.answered[0], asker_id, reveal=done.answered[0].card.unnamed)
        elif unnamed:
            view = RevealCandidates(self.views, unnamed, asker_id)
        return Reply(
            "\n".join(lines) or None,
            fitted([answered.card.embed for answered in done.answered]),
            [answered.card.file for answered in done.answered if answered.card.file],
            view,
        )

    def feedback_view(self, answered: AnsweredPicture, asker_id: int, reveal: bool) -> FeedbackView:
        """Right / Wrong under a reply that answers one picture, and Show candidates when `reveal`."""
        return FeedbackView(self, answered.identification, answered.source, answered.sha256, reveal, asker_id)
