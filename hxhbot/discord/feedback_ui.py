"""The buttons under an answer: Show candidates; Right / Wrong, and a menu to name who it really is."""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, cast

import discord
from discord import app_commands

from hxhbot.discord.attachments import ImageSource
from hxhbot.discord.embeds import candidates_embed, fitted
from hxhbot.discord.views import BotView, OpenViews
from hxhbot.engine.feedback import FeedbackStore, Verdict
from hxhbot.engine.identification import Identification
from hxhbot.errors import UserError

if TYPE_CHECKING:
    from hxhbot.discord.messages import Answerer

MENU_SIZE = 25  # Discord's limit of options in a select menu
SOMEONE_ELSE = "someone-else"


class RevealCandidates(BotView):
    """A button under an answer that shows its candidates, privately, to the member who asked: those of each
    picture in `results` (label, picture: the label names it when a message has several)."""

    def __init__(
        self, views: OpenViews, results: list[tuple[str, Identification]], asker_id: int, timeout: float = 900
    ) -> None:
        super().__init__(views, timeout)
        self.results = results
        self.asker_id = asker_id
        self.message: discord.Message | discord.WebhookMessage | None = None

    @discord.ui.button(label="Show candidates", style=discord.ButtonStyle.secondary, emoji="🔎")
    async def reveal(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Send the candidates privately to the member who asked; anyone else is told so, privately."""
        if interaction.user.id != self.asker_id:
            await interaction.response.send_message("Only the member who asked can see the candidates.", ephemeral=True)
            return
        embeds = fitted([candidates_embed(result, label) for label, result in self.results])
        await interaction.response.send_message(embeds=embeds, ephemeral=True)

    async def on_timeout(self) -> None:
        """Grey the button out once it stops working."""
        self.reveal.disabled = True
        if self.message is not None:
            try:
                await self.message.edit(view=self)
            except discord.HTTPException:
                pass


def candidates(ranked: Identification, answer: str, known: list[str]) -> list[str]:
    """Who else it may be, for the correction menu: the ranked characters, then the other known ones."""
    names = [match.character for match in ranked.matches] + known
    return [name for name in dict.fromkeys(names) if name != answer][: MENU_SIZE - 1]


class FeedbackView(RevealCandidates):
    """Right / Wrong under an answer (about the picture's top answer), plus "Show candidates" when `reveal`."""

    def __init__(
        self,
        answerer: Answerer,
        result: Identification,
        source: ImageSource,
        sha256: str,
        reveal: bool,
        asker_id: int,
        timeout: float = 900,
    ) -> None:
        super().__init__(answerer.views, [("", result)], asker_id, timeout)
        self.answerer = answerer
        self.result = result
        self.source = source  # the picture's bytes are not kept: "Wrong", and a correction, download them again
        self.sha256 = sha256
        self.names: list[str] | None = None  # the correction menu: ranked on the first Wrong, then kept
        self.ranking = asyncio.Lock()  # Wrong pressed by many at once: one download, one ranking
        if not reveal:
            self.remove_item(self.reveal)

    @discord.ui.button(label="Right", style=discord.ButtonStyle.success, emoji="✅")
    async def right(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Record that the answer was right."""
        recorded = await self.store.call(self.store.record, self.verdict(interaction, right=True))
        text = "Thanks, noted!" if recorded else "You already told me about this answer, thanks."
        await interaction.response.send_message(text, ephemeral=True)

    @discord.ui.button(label="Wrong", style=discord.ButtonStyle.danger, emoji="✖️")
    async def wrong(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Ask, privately, who it really is, offering the characters closest to the picture first; a member may ask
        once every COOLDOWN_SECONDS."""
        bucket = self.answerer.wrong_presses.get_bucket(interaction)
        retry_after = bucket.update_rate_limit() if bucket else None
        if bucket and retry_after:
            raise app_commands.CommandOnCooldown(bucket, retry_after)
        await interaction.response.defer(ephemeral=True, thinking=True)
        menu = CorrectionView(self, interaction.message, await self.candidates())
        await interaction.followup.send(f"Who is it, if not {self.result.best.character}?", view=menu, ephemeral=True)

    async def candidates(self) -> list[str]:
        """Who else it may be, the characters closest to the picture first: downloaded and ranked once per answer,
        however many press Wrong."""
        async with self.ranking:
            if self.names is None:
                engine = self.answerer.engine
                ranked = await engine.identify(await self.picture(), top_k=MENU_SIZE)
                self.names = candidates(ranked, self.result.best.character, list(engine.characters()))
        return self.names

    async def picture(self) -> bytes:
        """The picture, downloaded again; refused when it has changed since the answer."""
        data = await self.answerer.downloader.download(self.source)
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise UserError("That picture has changed since I answered; ask me about it again.")
        return data

    @property
    def store(self) -> FeedbackStore:
        """The engine's feedback database."""
        return self.answerer.engine.feedback

    def verdict(
        self,
        interaction: discord.Interaction,
        right: bool,
        correction: str | None = None,
        message: discord.Message | None = None,
    ) -> Verdict:
        """A member's verdict on this answer."""
        best = self.result.best
        answer = message or interaction.message
        return Verdict(
            interaction.guild_id,
            interaction.channel_id,
            answer.id if answer else 0,
            interaction.user.id,
            self.sha256,
            self.source.url,
            best.character,
            best.score,
            right,
            correction,
        )

    async def on_timeout(self) -> None:
        """Grey every button out once they stop working."""
        for item in self.children:
            item.disabled = True  # type: ignore[attr-defined]
        if self.message is not None:
            try:
                await self.message.edit(view=self)
            except discord.HTTPException:
                pass


class CorrectionView(BotView):
    """A private menu of who else it may be, with "someone else" last."""

    def __init__(self, answer: FeedbackView, message: discord.Message | None, names: list[str]) -> None:
        super().__init__(answer.views, answer.timeout)
        self.answer = answer
        self.message = message
        self.names = names  # no picture held: it is downloaded again once a character is chosen
        menu = cast(discord.ui.Select, self.choose)  # the decorated callback is the Select itself at run time
        menu.options = [discord.SelectOption(label=name[:100], value=str(number)) for number, name in enumerate(names)]
        menu.options.append(discord.SelectOption(label="Someone else", value=SOMEONE_ELSE, emoji="❔"))

    @discord.ui.select(placeholder="Who is it?")
    async def choose(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        """Store the correction (with the picture, downloaded again, when a character is named) and thank the member."""
        value = select.values[0]
        name = None if value == SOMEONE_ELSE else self.names[int(value)]
        await interaction.response.defer()  # the download may take longer than Discord waits for an answer
        store = self.answer.store
        verdict = self.answer.verdict(interaction, right=False, correction=name, message=self.message)
        recorded = await store.call(store.record, verdict, await self.answer.picture() if name else None)
        if not recorded:
            text = "You already told me about this answer, thanks."
        elif name:
            text = f"Thanks! The owner will check whether this is {name}."
        else:
            text = "Thanks, noted: I don't know that character yet."
        self.stop()
        await interaction.edit_original_response(content=text, view=None)
