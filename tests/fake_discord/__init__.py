"""A fake Discord (REST API, gateway, attachment CDN) on 127.0.0.1 for end-to-end tests of the bot."""

from tests.fake_discord.server import FakeDiscord, FakeInteraction, RecordedRequest, UploadedFile

__all__ = ["FakeDiscord", "FakeInteraction", "RecordedRequest", "UploadedFile"]
