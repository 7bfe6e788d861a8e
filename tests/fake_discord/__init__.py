"""A fake Discord (REST API, gateway, attachment CDN) on 127.0.0.1 for end-to-end tests of the bot."""

from tests.fake_discord.server import (
    GUILD_READY_TIMEOUT,
    FakeDiscord,
    FakeInteraction,
    RecordedRequest,
    UploadedFile,
    bot_ready,
)

__all__ = ["GUILD_READY_TIMEOUT", "FakeDiscord", "FakeInteraction", "RecordedRequest", "UploadedFile", "bot_ready"]
