"""Downloads: Discord's hosts only, public addresses only, and a byte cap and a deadline no server can stretch."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from hxhbot.discord.attachments import (
    DISCORD_CDN_HOSTS,
    AttachmentError,
    ImageSource,
    check,
    download,
    download_hosts,
    spoilered_links,
)
from hxhbot.engine.public_net import PublicResolver

pytestmark = pytest.mark.timeout(60)
PICTURE = b"\x89PNG\r\n\x1a\n" + b"\x00" * 1000
LIMIT = 64 * 1024
LOCAL = frozenset({"127.0.0.1"})


class Server:
    """A local HTTP server whose routes misbehave on purpose; counts the bytes it managed to send."""

    def __init__(self) -> None:
        self.sent = 0
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/picture.png", self.picture)
        app.router.add_get("/endless.png", self.endless)
        app.router.add_get("/trickle.png", self.trickle)
        app.router.add_get("/redirect.png", self.redirect)
        self.runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def picture(self, request: web.Request) -> web.Response:
        return web.Response(body=PICTURE, content_type="image/png")

    async def endless(self, request: web.Request) -> web.StreamResponse:
        """No Content-Length, and bytes without end."""
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        while True:
            await response.write(b"\x00" * 65536)
            self.sent += 65536

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        """A byte every 50 ms, for ever: every read succeeds, the whole never ends."""
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        while True:
            await response.write(b"\x00")
            self.sent += 1
            await asyncio.sleep(0.05)

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/picture.png")


@pytest.fixture
async def server():
    server = Server()
    await server.start()
    yield server
    await server.runner.cleanup()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


def _source(url: str) -> ImageSource:
    return ImageSource(url, url.rsplit("/", 1)[1])


def test_refused_before_download_with_a_sentence() -> None:
    for source, sentence in [
        (
            ImageSource("u", "photo.heic", 10, "image/heic"),
            "`photo.heic` is image/heic, which I can't read: send a JPEG, PNG, WebP, AVIF, GIF or BMP.",
        ),
        (
            ImageSource("u", "notes.txt", 10, "text/plain"),
            "`notes.txt` is not an image: attach a JPEG, PNG, WebP, AVIF, GIF or BMP.",
        ),
        (ImageSource("u", "big.png", 3 * LIMIT, "image/png"), "`big.png` is 0.2 MB; the limit is 0.1 MB."),
    ]:
        with pytest.raises(AttachmentError) as refused:
            check(source, LIMIT)
        assert str(refused.value) == sentence
    check(ImageSource("u", "gon.jpg", 10, "image/jpeg"), LIMIT)


async def test_downloads_from_an_allowed_host(server: Server, session: aiohttp.ClientSession) -> None:
    assert await download(session, _source(server.url("/picture.png")), LIMIT, 10, LOCAL) == PICTURE


async def test_only_discord_hosts(server: Server, session: aiohttp.ClientSession) -> None:
    assert download_hosts("http://127.0.0.1:5/api/v10") == DISCORD_CDN_HOSTS | LOCAL
    assert download_hosts("https://discord.com/api/v10") == DISCORD_CDN_HOSTS | {"discord.com"}
    for url in (
        server.url("/picture.png"),
        "https://example.com/a.png",
        "file:///etc/passwd",
        "https://cdn.discordapp.com.evil.example/a.png",
    ):
        with pytest.raises(AttachmentError, match="not on Discord"):
            await download(session, _source(url), LIMIT, 10)  # 127.0.0.1 is not the API host here
    assert server.sent == 0


async def test_link_previews_come_through_discords_image_proxy(server: Server) -> None:
    hosts = ("cdn.discordapp.com", "media.discordapp.net", "images-ext-1.discordapp.net", "images-ext-2.discordapp.net")
    resolver = PublicResolver(frozenset(hosts), inner=StubResolver("127.0.0.1"))  # every name: this local server
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver)) as session:
        for host in hosts:
            assert await download(session, _source(server.url("/picture.png", host=host)), LIMIT, 10) == PICTURE


class StubResolver(PublicResolver):
    """Resolves every name to one chosen address (no DNS)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.7", "192.168.1.1", "169.254.169.254", "0.0.0.0"])
async def test_a_cdn_name_resolving_to_a_private_address_is_refused(server: Server, address: str) -> None:
    url = server.url("/picture.png", host="cdn.discordapp.com")
    connector = aiohttp.TCPConnector(resolver=PublicResolver(inner=StubResolver(address)))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(AttachmentError, match="not on a public address"):
            await download(session, _source(url), LIMIT, 10)
    trusted = PublicResolver(frozenset({"cdn.discordapp.com"}), inner=StubResolver("127.0.0.1"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=trusted)) as session:
        assert await download(session, _source(url), LIMIT, 10) == PICTURE  # the same server, when trusted


async def test_byte_cap_without_content_length(server: Server, session: aiohttp.ClientSession) -> None:
    with pytest.raises(AttachmentError, match="larger than the 0.1 MB limit"):
        await download(session, _source(server.url("/endless.png")), LIMIT, 30, LOCAL)


async def test_byte_cap_when_content_length_lies(session: aiohttp.ClientSession) -> None:
    flood = 256 * 1024 * 1024  # far beyond what the kernel's socket buffers hold (a few MB on loopback)
    sent, hung_up = 0, asyncio.get_running_loop().create_future()

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Declare 1,000 bytes, then send 256 MB (raw HTTP: aiohttp's server would not lie) unless hung up on."""
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n")
        try:
            while sent < flood:
                writer.write(b"\x00" * 65536)
                sent += 65536
                await writer.drain()
            hung_up.set_result(False)
        except ConnectionError:
            hung_up.set_result(True)
        writer.close()

    listener = await asyncio.start_server(liar, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        try:
            data = await download(session, _source(f"http://127.0.0.1:{port}/liar.png"), LIMIT, 30, LOCAL)
        except AttachmentError as error:  # aiohttp sees the bytes past the declared length: refused
            assert "could not be downloaded" in str(error)
        else:
            assert len(data) == 1000  # or the declared length bounds the read, whatever comes after
        # the connection is dropped, not left open (a liar's writes would then block until it times out)
        assert await asyncio.wait_for(hung_up, 30) and sent < flood


async def test_total_deadline_against_a_trickle(server: Server, session: aiohttp.ClientSession) -> None:
    with pytest.raises(AttachmentError, match="took too long"):
        await download(session, _source(server.url("/trickle.png")), LIMIT, 1.0, LOCAL)
    assert server.sent > 0  # bytes kept coming: a per-read timeout would never have fired


async def test_redirects_are_not_followed(server: Server, session: aiohttp.ClientSession) -> None:
    with pytest.raises(AttachmentError, match="HTTP 302"):
        await download(session, _source(server.url("/redirect.png")), LIMIT, 10, LOCAL)


def test_spoilered_links_are_those_between_bars() -> None:
    text = "look ||https://x.example/1.jpg|| and https://y.example/2.jpg ||who? <https://z.example/3.png>\nhttps://w.example/4||"
    assert spoilered_links(text) == {"https://x.example/1.jpg", "https://z.example/3.png", "https://w.example/4"}
    assert spoilered_links("") == set() and spoilered_links("|| https://open.example/5.png") == set()
