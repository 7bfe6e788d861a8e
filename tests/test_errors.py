"""One root for what members are told: every error class is a `UserError` or one only an operator ever reads."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from discord import app_commands

import hxhbot
from hxhbot.discord.tree import NotOwnerError, ShuttingDownError, sentence_for
from hxhbot.errors import UserError

# Errors that stop a start or a command line, read in a log or a terminal by whoever runs the bot; never a member.
OPERATOR_ERRORS = {
    "hxhbot.config.ConfigError",
    "hxhbot.discord.bot.CommandSyncError",
    "hxhbot.engine.collect.CollectError",
    "hxhbot.engine.feedback.FeedbackError",
    "hxhbot.engine.gallery.GalleryError",
    "hxhbot.engine.index.GalleryIndexError",
    "hxhbot.engine.index.IndexMismatchError",
    "hxhbot.engine.index.IndexMissingError",
    "hxhbot.engine.index_lock.IndexBusyError",
    "hxhbot.engine.manifest.ManifestError",
    "hxhbot.engine.model_dir.ModelError",
    "hxhbot.engine.model_dir.WeightsUnavailableError",
    "hxhbot.engine.public_net.PrivateAddressError",
    "hxhbot.engine.sources.FetchError",
}


def _error_classes() -> dict[str, type]:
    """Every public exception class defined in a module of the hxhbot package, by dotted name."""
    found = {}
    for module_info in pkgutil.walk_packages(hxhbot.__path__, "hxhbot."):
        if module_info.name == "hxhbot.__main__":  # runs the command line when imported
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            public = not name.startswith("_")
            if (
                public
                and inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_error_a_member_can_meet_derives_from_user_error() -> None:
    classes = _error_classes()
    unsorted = sorted(
        name for name, kind in classes.items() if not issubclass(kind, UserError) and name not in OPERATOR_ERRORS
    )
    assert not unsorted, (
        f"{unsorted}: derive from hxhbot.errors.UserError if a member may read str() of it, "
        "else list it in OPERATOR_ERRORS"
    )
    assert not [name for name in OPERATOR_ERRORS if issubclass(classes[name], UserError)]
    for name in (
        "hxhbot.discord.attachments.AttachmentError",
        "hxhbot.engine.images.TruncatedImageError",
        "hxhbot.engine.memory_budget.BusyError",
        "hxhbot.engine.search.ReindexAbandonedError",
    ):
        assert issubclass(classes[name], UserError), name


@pytest.mark.parametrize(
    ("error", "told"),
    [
        (
            UserError("That picture has changed since I answered; ask me about it again."),
            "That picture has changed since I answered; ask me about it again.",
        ),
        (NotOwnerError(), "Only the bot's owner can do that."),
        (ShuttingDownError(), "I'm restarting right now; try again in a minute."),
        (app_commands.CommandOnCooldown(app_commands.Cooldown(1, 30), 12.4), "Slow down a little: try again in 12 s."),
        (app_commands.CheckFailure("no"), "You can't use this command here."),
        (RuntimeError("a bug"), None),
        (KeyError("x"), None),
    ],
)
def test_a_member_is_told_their_error_and_nothing_of_the_others(error: BaseException, told: str | None) -> None:
    assert sentence_for(error) == told
