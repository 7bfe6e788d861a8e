"""Images from Discord: checked before download, downloaded from Discord only, with a deadline and a byte cap."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import aiohttp
import discord
import yarl

from hxhbot.config import Settings
from hxhbot.engine.facade import Engine
from hxhbot.engine.images import IMAGE_SUFFIXES, READABLE
from hxhbot.engine.public_net import PrivateAddressError, public_session
from hxhbot.errors import UserError
from hxhbot.wording import code

PARALLEL_DOWNLOADS = 8  # images downloaded at once; the others wait their turn holding no bytes
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/avif", "image/gif", "image/bmp"})
STICKER_TYPES = {"png": "image/png", "gif": "image/gif"}  # by discord.py's file extension of a sticker's format
# attachments, and Discord's proxy of the pictures that links preview (an embed's image `proxy_url`)
DISCORD_CDN_HOSTS = frozenset(
    {"cdn.discordapp.com", "media.discordapp.net", "images-ext-1.discordapp.net", "images-ext-2.discordapp.net"}
)
SPOILER = re.compile(r"\|\|(.+?)\|\|", re.DOTALL)  # Discord's spoiler mark: ||hidden||
LINK = re.compile(r"https?://[^\s<>|]+")


class AttachmentError(UserError):
    """An attachment we will not or cannot fetch."""


@dataclass(frozen=True)
class ImageSource:
    """Where an image of a message lives, and what Discord says about it before download."""

    url: str
    filename: str
    size: int | None = None
    content_type: str | None = None
    spoiler: bool = False  # marked as a spoiler by whoever posted it
    preview: bool = False  # a link's preview picture: an image by Discord's word, often with no type in its name


def from_attachment(attachment: discord.Attachment) -> ImageSource:
    """The image source of an attachment."""
    return ImageSource(
        attachment.url, attachment.filename, attachment.size, attachment.content_type, attachment.is_spoiler()
    )


def is_image(source: ImageSource) -> bool:
    """Whether the attachment says it is an image (by content type, else by file name); a link's preview is one."""
    if source.preview:
        return True
    if source.content_type:
        return source.content_type.split(";")[0].strip().lower().startswith("image/")
    return PurePosixPath(source.filename.lower()).suffix in IMAGE_SUFFIXES


def images_in(message: discord.Message) -> list[ImageSource]:
    """Every image of a message: its image attachments, then its embeds' images (a spoiler when the link is marked
    as one, `||https://…||`); those of a forwarded message too."""
    found: list[ImageSource] = []
    parts: list[discord.Message | discord.MessageSnapshot] = [message, *message.message_snapshots]
    for part in parts:
        found += [source for source in map(from_attachment, part.attachments) if is_image(source)]
        hidden = spoilered_links(part.content)
        for embed in part.embeds:
            for media in (embed.image, embed.thumbnail):
                url = media.proxy_url or media.url
                if url:
                    name = PurePosixPath(url.split("?")[0]).name or "image"
                    spoiler = bool({embed.url, media.url} & hidden)
                    found.append(ImageSource(url, name, spoiler=spoiler, preview=True))
                    break
    return found


def spoilered_links(content: str) -> set[str]:
    """The links a message's text marks as spoilers: those between `||` pairs."""
    return {link for hidden in SPOILER.findall(content or "") for link in LINK.findall(hidden)}


def stickers_in(message: discord.Message) -> list[ImageSource]:
    """A message's stickers drawn as pictures (PNG, APNG, GIF; a Lottie sticker is vector animation, not a picture),
    a forwarded message's too."""
    parts: list[discord.Message | discord.MessageSnapshot] = [message, *message.message_snapshots]
    stickers = [sticker for part in parts for sticker in part.stickers]
    return [
        ImageSource(
            sticker.url,
            f"{sticker.name}.{sticker.format.file_extension}",
            content_type=STICKER_TYPES[sticker.format.file_extension],
        )
        for sticker in stickers
        if sticker.format.file_extension in STICKER_TYPES
    ]


def check(source: ImageSource, max_bytes: int) -> None:
    """Refuse, before downloading, what is declared too big or not an image in a format we read."""
    if not is_image(source):
        raise AttachmentError(f"{code(source.filename)} is not an image: attach a {READABLE}.")
    kind = (source.content_type or "").split(";")[0].strip().lower()
    if kind and kind not in IMAGE_TYPES:
        raise AttachmentError(f"{code(source.filename)} is {kind}, which I can't read: send a {READABLE}.")
    if source.size is not None and source.size > max_bytes:
        raise AttachmentError(
            f"{code(source.filename)} is {source.size / 1048576:.1f} MB; the limit is {max_bytes / 1048576:.1f} MB."
        )


def download_hosts(api_base: str) -> frozenset[str]:
    """The hosts images may come from: Discord's CDN, and the host of DISCORD_API_BASE (a local test server)."""
    return DISCORD_CDN_HOSTS | {yarl.URL(api_base).host or ""}


def open_session(api_base: str) -> aiohttp.ClientSession:
    """The download session: it connects to public addresses only, but for DISCORD_API_BASE's host."""
    return public_session(frozenset({yarl.URL(api_base).host or ""}), "hxhbot")


async def download(
    session: aiohttp.ClientSession,
    source: ImageSource,
    max_bytes: int,
    timeout: float,
    hosts: frozenset[str] = DISCORD_CDN_HOSTS,
) -> bytes:
    """Download an image from one of `hosts`, stopping at `max_bytes` and after `timeout` seconds in all."""
    url = yarl.URL(source.url)
    if url.scheme not in ("http", "https") or url.host not in hosts:
        raise AttachmentError(f"{code(source.filename)} is not on Discord; I only download images from Discord.")
    try:
        async with asyncio.timeout(timeout):
            async with session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise AttachmentError(
                        f"Discord did not hand over {code(source.filename)} (HTTP {response.status})."
                    )
                if (response.content_length or 0) > max_bytes:
                    raise AttachmentError(
                        f"{code(source.filename)} is larger than the {max_bytes / 1048576:.1f} MB limit."
                    )
                data = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > max_bytes:
                        raise AttachmentError(
                            f"{code(source.filename)} is larger than the {max_bytes / 1048576:.1f} MB limit."
                        )
                return bytes(data)
    except TimeoutError:
        raise AttachmentError(f"Downloading {code(source.filename)} took too long; try again.") from None
    except aiohttp.ClientConnectorError as error:
        if isinstance(error.os_error, PrivateAddressError):
            raise AttachmentError(
                f"{code(source.filename)} is not on a public address; I only download from Discord."
            ) from None
        raise AttachmentError(f"{code(source.filename)} could not be downloaded; try again.") from None
    except aiohttp.ClientError:
        raise AttachmentError(f"{code(source.filename)} could not be downloaded; try again.") from None


class Downloader:
    """Members' pictures fetched from Discord, `PARALLEL_DOWNLOADS` at a time, none while the engine is full."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.session = open_session(settings.discord_api_base)
        self.hosts = download_hosts(settings.discord_api_base)
        self.slots = asyncio.Semaphore(PARALLEL_DOWNLOADS)

    async def __aenter__(self) -> Downloader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.session.close()

    async def download(self, source: ImageSource) -> bytes:
        """Check and download one image (at most MAX_IMAGE_BYTES, within DOWNLOAD_TIMEOUT); refused as busy, before
        a byte is fetched, while QUEUE_SIZE images are being identified."""
        check(source, self.settings.max_image_bytes)
        self.engine.check_room()
        async with self.slots:
            self.engine.check_room()  # it may have filled up during the wait
            return await download(
                self.session, source, self.settings.max_image_bytes, self.settings.download_timeout, self.hosts
            )
