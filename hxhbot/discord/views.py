"""The bot's buttons and menus: every view it sends is open until it stops, and a failure in one is told."""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import discord

from hxhbot.discord.tree import tell_failure


class OpenViews:
    """The views this process has made and not yet dropped: a click on any other is on a message from before a
    restart. A view that answers a click is still here (its callback holds it), even once it has stopped."""

    def __init__(self) -> None:
        self._views: weakref.WeakSet[discord.ui.View] = weakref.WeakSet()

    def __iter__(self) -> Iterator[discord.ui.View]:
        """The open views."""
        return iter(list(self._views))

    def add(self, view: discord.ui.View) -> None:
        """Remember a view."""
        self._views.add(view)

    def has_component(self, custom_id: object) -> bool:
        """Whether a button or menu with `custom_id` belongs to one of the open views."""
        return any(getattr(item, "custom_id", None) == custom_id for view in self for item in view.children)

    def stop_all(self) -> None:
        """Stop every open view (the bot is closing)."""
        for view in self:
            view.stop()


class BotView(discord.ui.View):
    """A view of this bot: among the open views from the start, and its failures told privately to whoever clicked."""

    def __init__(self, views: OpenViews, timeout: float | None) -> None:
        super().__init__(timeout=timeout)
        self.views = views  # where the views this one opens go
        views.add(self)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item, /) -> None:
        """A failed button or menu: the member told privately; the unexpected logged."""
        await tell_failure(interaction, error, type(self).__name__)
