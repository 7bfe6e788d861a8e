"""The collector (hxhbot.engine.collect; its CLI training.collect) against fake Jikan and Danbooru on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image, ImageDraw

from hxhbot.engine.collect import Pacing, Summary
from hxhbot.engine.manifest import MANIFEST_NAME, safe_folder_name
from hxhbot.engine.sources import (
    JIKAN_RATE,
    Rate,
    RateLimiter,
    mal_display_name,
    name_tag,
    parse_retry_after,
    tag_display_name,
)
from training.collect import ProgressLine, main, parse_args, run

FAST = Pacing(api=Rate(per_second=1000.0, burst=100), downloads=Rate(per_second=1000.0, burst=100), retry_delay=0.01)


def picture(seed: int, fmt: str = "JPEG") -> bytes:
    """A small generated picture, different for every seed."""
    image = Image.new("RGB", (64, 48), ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256))
    ImageDraw.Draw(image).rectangle([seed % 40, 5, seed % 40 + 20, 30], fill=(255 - seed % 256, 40, 90))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


class FakeServer:
    """Fake Jikan v4 and Danbooru APIs and an image host, counting hits and injecting faults."""

    def __init__(self) -> None:
        self.base = ""
        self.cast: list[dict] = []  # data[] of /anime/{id}/characters
        self.pictures: dict[str, list[str]] = {}  # MAL id -> image names
        self.posts: dict[str, list[dict]] = {}  # Danbooru tag -> posts
        self.images: dict[str, tuple[bytes, str]] = {}  # name -> (body, content type)
        self.faults: dict[str, list[str]] = {}  # path -> next faults: "429", "500", "slow", "hang", "hold"
        self.hits: Counter[str] = Counter()
        self.served: Counter[str] = Counter()  # image bodies sent whole
        self.entered_hang = asyncio.Event()
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[self.fault_middleware])
        app.router.add_get("/v4/anime/{anime_id}/characters", self.jikan_cast)
        app.router.add_get("/v4/characters/{mal_id}/pictures", self.jikan_pictures)
        app.router.add_get("/posts.json", self.danbooru_posts)
        app.router.add_get("/img/{name}", self.image)
        app.router.add_get("/moved", self.moved)
        return app

    def url(self, path: str) -> str:
        """An absolute URL on this server."""
        return f"{self.base}{path}"

    def add_character(self, mal_id: int, mal_name: str, role: str, images: dict[str, bytes]) -> None:
        """A Jikan character with its pictures, shaped like the real API's answers."""
        self.cast.append(
            {
                "character": {
                    "mal_id": mal_id,
                    "url": f"https://myanimelist.net/character/{mal_id}/{mal_name.replace(', ', '_')}",
                    "images": {
                        "jpg": {"image_url": self.url(f"/img/main-{mal_id}.jpg")},
                        "webp": {"image_url": "", "small_image_url": ""},
                    },
                    "name": mal_name,
                },
                "role": role,
                "favorites": 1000,
                "voice_actors": [],
            }
        )
        self.pictures[str(mal_id)] = list(images)
        for name, body in images.items():
            self.images[name] = (body, "image/jpeg")

    @web.middleware
    async def fault_middleware(self, request: web.Request, handler) -> web.StreamResponse:
        """Count the hit, then misbehave if a fault is queued for this path."""
        self.hits[request.path] += 1
        queued = self.faults.get(request.path)
        fault = queued.pop(0) if queued else None
        if fault == "429":
            return web.json_response(
                {"status": 429, "type": "RateLimitException"}, status=429, headers={"Retry-After": "1"}
            )
        if fault == "500":
            return web.json_response({"status": 500, "type": "UpstreamException"}, status=500)
        if fault == "slow":  # slower than any client timeout, however busy the machine: released at teardown
            await self.release.wait()
        if fault == "hang":
            self.entered_hang.set()
            await self.release.wait()
            return web.Response(status=503)
        if fault == "hold":  # wait for the test, then answer normally
            self.entered_hang.set()
            await self.release.wait()
        return await handler(request)

    async def jikan_cast(self, request: web.Request) -> web.Response:
        """GET /anime/{id}/characters."""
        return web.json_response({"data": self.cast})

    async def jikan_pictures(self, request: web.Request) -> web.Response:
        """GET /characters/{id}/pictures."""
        names = self.pictures.get(request.match_info["mal_id"], [])
        urls = [name if "://" in name else self.url(f"/img/{name}") for name in names]  # a full URL: as it is
        return web.json_response({"data": [{"jpg": {"image_url": url}} for url in urls]})

    async def danbooru_posts(self, request: web.Request) -> web.Response:
        """GET /posts.json?tags=<tag> rating:general&limit=&page=."""
        tag, rating = request.query["tags"].split()
        assert rating == "rating:general"
        limit, page = int(request.query["limit"]), int(request.query["page"])
        return web.json_response(self.posts.get(tag, [])[(page - 1) * limit : page * limit])

    async def moved(self, request: web.Request) -> web.Response:
        """GET /moved?to=<url>: a 302 there."""
        raise web.HTTPFound(request.query["to"])

    async def image(self, request: web.Request) -> web.Response:
        """GET /img/{name}."""
        if request.match_info["name"] not in self.images:
            raise web.HTTPNotFound()
        body, content_type = self.images[request.match_info["name"]]
        self.served[request.match_info["name"]] += 1
        return web.Response(body=body, content_type=content_type)


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    """A running fake server."""
    server = FakeServer()
    test_server = TestServer(server.app(), host="127.0.0.1")
    await test_server.start_server()
    server.base = str(test_server.make_url("")).rstrip("/")
    yield server
    server.release.set()
    await test_server.close()


async def collect(fake: FakeServer, out: Path, *args: str, pacing: Pacing = FAST) -> Summary:
    """Run the collector as the command line would, against the fake server."""
    base = fake.url("/v4") if "danbooru" not in args else fake.base
    options = parse_args(["--out", str(out), "--base-url", base, "--timeout", "5", "--max-retries", "3", *args])
    return await run(options, pacing)


def manifest(out: Path) -> dict:
    """The gallery's manifest."""
    return json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))


def gallery_files(out: Path) -> dict[str, int]:
    """Image files per character folder."""
    return {folder.name: len(list(folder.glob("*.jpg"))) for folder in sorted(out.iterdir()) if folder.is_dir()}


def gon_killua(fake: FakeServer, pictures: int = 3) -> None:
    """Gon and Killua (main) and Biscuit (supporting), each with distinct pictures."""
    fake.add_character(30, "Freecss, Gon", "Main", {f"gon{i}.jpg": picture(i) for i in range(pictures)})
    fake.add_character(27, "Zoldyck, Killua", "Main", {f"killua{i}.jpg": picture(50 + i) for i in range(pictures)})
    fake.add_character(9, "Krueger, Biscuit", "Supporting", {"bisky.jpg": picture(99)})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Gon Freecss", "Gon Freecss"),
        ("Meruem/King", "Meruem King"),
        ("a\\b", "a b"),
        ("..", "Unnamed character"),
        ("../../etc", "etc"),
        ("", "Unnamed character"),
        (" . ", "Unnamed character"),
        ("Ki\x00ll\x1bua\tZoldyck", "Killua Zoldyck"),
        ('What<>:"|?*Now', "What Now"),
        ("Hisoka.  ", "Hisoka"),
        (".hidden", "hidden"),
        ("CON", "CON (character)"),
        ("lpt1.txt", "lpt1.txt (character)"),
        ("Ｋｕｒａｐｉｋａ", "Ｋｕｒａｐｉｋａ"),
    ],
)
def test_safe_folder_name(name: str, expected: str) -> None:
    assert safe_folder_name(name) == expected


def test_safe_folder_name_keeps_long_names_under_the_limit() -> None:
    for name in ("x" * 300, "é" * 300, "ゴン" * 200):
        folder = safe_folder_name(name)
        assert 0 < len(folder.encode("utf-8")) <= 100 and folder == folder.strip()
        folder.encode("utf-8")  # never cut inside a character


def test_display_names() -> None:
    assert mal_display_name("Freecss, Gon") == "Gon Freecss"
    assert mal_display_name("Kurapika") == "Kurapika"
    assert tag_display_name("gon_freecss") == "Gon Freecss"
    assert tag_display_name("hisoka_(hunter_x_hunter)") == "Hisoka"
    assert name_tag(" Killua  Zoldyck ") == "killua_zoldyck"


def test_jikan_rate_stays_under_documented_limits() -> None:
    assert JIKAN_RATE.burst <= 3 and JIKAN_RATE.per_second <= 3
    assert JIKAN_RATE.burst + 60 * JIKAN_RATE.per_second <= 60


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now


def test_progress_line_rewrites_itself_on_a_terminal_only() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = ProgressLine(stream)
        progress("[1/2] Gon Freecss")
        progress("[2/2] Killua Zoldyck")
        progress.close()
    assert terminal.getvalue() == "\r\x1b[K[1/2] Gon Freecss\r\x1b[K[2/2] Killua Zoldyck\n"
    assert pipe.getvalue() == ""


async def test_rate_limiter_spaces_requests() -> None:
    limiter = RateLimiter(Rate(per_second=50.0, burst=2))
    start = time.monotonic()
    for _ in range(7):
        await limiter.acquire()
    assert time.monotonic() - start >= (7 - 2) / 50 * 0.9


async def test_jikan_fills_gallery_with_attribution(fake: FakeServer, tmp_path: Path) -> None:
    gon_killua(fake)
    fake.pictures["30"].insert(0, "questionmark_23.gif")  # MAL's "no picture" stand-in
    summary = await collect(fake, tmp_path, "--roles", "main", "--per-character", "2")

    assert gallery_files(tmp_path) == {"Gon Freecss": 2, "Killua Zoldyck": 2}
    assert (summary.saved, summary.failed, summary.characters) == (4, [], 2)
    entries = manifest(tmp_path)["images"]
    assert len(entries) == 4
    for sha256, entry in entries.items():
        with Image.open(tmp_path / entry["file"]) as saved:
            assert saved.format == "JPEG" and saved.mode == "RGB"
        assert entry["sha256"] == sha256 and entry["file"].endswith(f"{sha256[:16]}.jpg")
        assert entry["url"].startswith(fake.base + "/img/") and entry["source"] == "jikan"
    gon = next(entry for entry in entries.values() if entry["character"] == "Gon Freecss")
    assert gon["page_url"] == "https://myanimelist.net/character/30/Freecss_Gon/pictures"
    assert fake.hits["/img/questionmark_23.gif"] == 0 and fake.hits["/v4/characters/9/pictures"] == 0


async def test_named_characters_and_main_picture_fallback(fake: FakeServer, tmp_path: Path) -> None:
    gon_killua(fake)
    fake.pictures["9"] = []  # no gallery: use the character's main picture
    fake.images["main-9.jpg"] = (picture(7), "image/jpeg")
    await collect(fake, tmp_path, "--characters", "biscuit krueger,Nobody Atall")
    assert gallery_files(tmp_path) == {"Biscuit Krueger": 1}


async def test_waits_as_told_by_retry_after(fake: FakeServer, tmp_path: Path) -> None:
    gon_killua(fake, pictures=1)
    fake.faults["/v4/characters/30/pictures"] = ["429"]
    start = time.monotonic()
    summary = await collect(fake, tmp_path, "--characters", "Gon Freecss")
    assert time.monotonic() - start >= 1.0
    assert fake.hits["/v4/characters/30/pictures"] == 2
    assert summary.saved == 1 and summary.failed == []


async def test_retries_a_timeout(fake: FakeServer, tmp_path: Path) -> None:
    gon_killua(fake, pictures=1)
    fake.faults["/img/gon0.jpg"] = ["slow"]
    options = parse_args(
        ["--out", str(tmp_path), "--base-url", fake.url("/v4"), "--timeout", "3", "--characters", "Gon Freecss"]
    )
    summary = await run(options, FAST)
    assert fake.hits["/img/gon0.jpg"] == 2 and fake.served["gon0.jpg"] == 1
    assert summary.saved == 1 and summary.failed == []


async def test_retries_a_server_error(fake: FakeServer, tmp_path: Path) -> None:
    gon_killua(fake, pictures=1)
    fake.faults["/v4/anime/11061/characters"] = ["500"]
    fake.faults["/img/killua0.jpg"] = ["500", "500"]
    summary = await collect(fake, tmp_path)
    assert fake.hits["/v4/anime/11061/characters"] == 2 and fake.hits["/img/killua0.jpg"] == 3
    assert gallery_files(tmp_path) == {"Biscuit Krueger": 1, "Gon Freecss": 1, "Killua Zoldyck": 1}
    assert summary.failed == []


async def test_gives_up_after_max_retries_then_a_rerun_finishes(fake: FakeServer, tmp_path: Path) -> None:
    gon_killua(fake, pictures=2)
    fake.faults["/img/gon1.jpg"] = ["500"] * 4
    summary = await collect(fake, tmp_path, "--characters", "Gon Freecss")
    assert fake.hits["/img/gon1.jpg"] == 4  # 1 try + --max-retries 3
    assert summary.failed == [(fake.url("/img/gon1.jpg"), "HTTP 500 Internal Server Error (gave up after 4 attempts)")]
    assert gallery_files(tmp_path) == {"Gon Freecss": 1}

    summary = await collect(fake, tmp_path, "--characters", "Gon Freecss")
    assert gallery_files(tmp_path) == {"Gon Freecss": 2}
    assert (summary.saved, summary.already_present, summary.failed) == (1, 1, [])
    assert fake.served == Counter({"gon0.jpg": 1, "gon1.jpg": 1})


async def test_broken_images_fail_without_stopping_the_run(fake: FakeServer, tmp_path: Path) -> None:
    fake.add_character(30, "Freecss, Gon", "Main", {"ok.jpg": picture(1), "cut.jpg": picture(2)[:300]})
    fake.images["page.jpg"] = (b"<!doctype html><html><body>Not found</body></html>", "image/jpeg")
    fake.pictures["30"].append("page.jpg")
    summary = await collect(fake, tmp_path)

    assert gallery_files(tmp_path) == {"Gon Freecss": 1} and summary.saved == 1
    reasons = dict(summary.failed)
    assert "damaged or cut short" in reasons[fake.url("/img/cut.jpg")]
    assert reasons[fake.url("/img/page.jpg")] == "This file is not an image."
    assert any("failed: " in line and "cut.jpg" in line for line in summary.lines())
    assert manifest(tmp_path)["urls"][fake.url("/img/page.jpg")]["status"] == "rejected"

    summary = await collect(fake, tmp_path, "--per-character", "30")  # more wanted: the character is revisited
    assert summary.failed == [] and summary.already_present == 3
    assert fake.served == Counter({"ok.jpg": 1, "cut.jpg": 1, "page.jpg": 1})


async def test_same_bytes_under_two_urls_are_saved_once(fake: FakeServer, tmp_path: Path) -> None:
    same = picture(5)
    fake.add_character(30, "Freecss, Gon", "Main", {"a.jpg": same, "b.jpg": same, "c.jpg": picture(6)})
    fake.add_character(27, "Zoldyck, Killua", "Main", {"d.jpg": same})
    summary = await collect(fake, tmp_path)

    assert gallery_files(tmp_path) == {"Gon Freecss": 2}
    assert (summary.saved, summary.duplicates) == (2, 2)
    urls = manifest(tmp_path)["urls"]
    assert urls[fake.url("/img/b.jpg")]["status"] == urls[fake.url("/img/d.jpg")]["status"] == "duplicate"


async def test_resumes_after_interruption_without_downloading_twice(fake: FakeServer, tmp_path: Path) -> None:
    gon_killua(fake, pictures=3)
    fake.faults["/img/killua1.jpg"] = ["hang"]  # the run is cut short while this one downloads
    task = asyncio.create_task(collect(fake, tmp_path))
    await asyncio.wait_for(fake.entered_hang.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gallery_files(tmp_path) == {"Gon Freecss": 3, "Killua Zoldyck": 1}
    assert len(manifest(tmp_path)["images"]) == 4

    fake.release.set()
    summary = await collect(fake, tmp_path)
    assert gallery_files(tmp_path) == {"Biscuit Krueger": 1, "Gon Freecss": 3, "Killua Zoldyck": 3}
    assert (summary.characters_done_before, summary.saved, summary.already_present) == (1, 3, 1)
    assert set(fake.served) == set(fake.images) - {"main-30.jpg", "main-27.jpg", "main-9.jpg"}
    assert max(fake.served.values()) == 1
    assert fake.hits["/v4/characters/30/pictures"] == 1  # a finished character is not asked for again

    summary = await collect(fake, tmp_path)
    assert (summary.characters_done_before, summary.saved) == (3, 0)


async def test_danbooru_keeps_general_solo_image_posts(fake: FakeServer, tmp_path: Path) -> None:
    def post(post_id: int, **fields: object) -> dict:
        """A post shaped like Danbooru's /posts.json."""
        fake.images[f"d{post_id}.jpg"] = (picture(post_id), "image/jpeg")
        return {
            "id": post_id,
            "md5": f"{post_id:032x}",
            "rating": "g",
            "file_ext": "jpg",
            "tag_string_character": "gon_freecss",
            "file_url": fake.url(f"/img/d{post_id}.jpg"),
            "large_file_url": fake.url(f"/img/d{post_id}.jpg"),
            **fields,
        }

    fake.posts["gon_freecss"] = [
        post(1),
        post(2, tag_string_character="gon_freecss killua_zoldyck"),  # two characters
        post(3, rating="s"),
        post(4, file_ext="mp4"),
        post(5, file_url=None, large_file_url=None),  # hidden from anonymous users
        post(6, file_url="/img/d6.jpg", large_file_url=None),  # a relative URL
    ]
    summary = await collect(fake, tmp_path, "--source", "danbooru", "--characters", "Gon Freecss")

    assert gallery_files(tmp_path) == {"Gon Freecss": 2} and summary.failed == []
    pages = sorted(entry["page_url"] for entry in manifest(tmp_path)["images"].values())
    assert pages == [fake.url("/posts/1"), fake.url("/posts/6")]
    assert fake.served == Counter({"d1.jpg": 1, "d6.jpg": 1})


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "flickr"], "invalid choice: 'flickr'"),
        (["--source", "danbooru"], "name them with --characters"),
        (["--roles", "villain"], "--roles takes main and/or supporting"),
        (["--per-character", "0"], "must be more than 0"),
        (["--base-url", "api.jikan.moe"], "must start with http"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (["--source", "jikan"], "Could not get the character list from"),
        (["--source", "danbooru", "--characters", "Gon Freecss"], "Could not get pictures from"),
    ],
)
def test_unreachable_source_is_a_one_line_error(
    source: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    assert main([*source, "--base-url", base, "--out", str(tmp_path), "--max-retries", "0"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {message} {base}: Cannot connect") and "\n" not in error


def test_unusable_gallery_folder_or_manifest_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("not a folder")
    assert main(["--out", str(tmp_path / "file"), "--base-url", "http://127.0.0.1:9"]) == 1
    assert capsys.readouterr().err.startswith("error: cannot write")

    for text, message in (("{broken", "is not valid JSON"), ('{"version": 1, "images": [1]}', "not a version 1")):
        (tmp_path / MANIFEST_NAME).write_text(text)
        assert main(["--out", str(tmp_path), "--base-url", "http://127.0.0.1:9"]) == 1
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1


async def test_command_line_prints_a_summary(fake: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gon_killua(fake, pictures=1)
    argv = ["--base-url", fake.url("/v4"), "--out", str(tmp_path), "--characters", "Gon Freecss"]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert "Collected from jikan: 1 characters" in out and "Saved 1 new images" in out
    assert gallery_files(tmp_path) == {"Gon Freecss": 1}


async def test_pictures_come_only_from_the_sources_hosts_redirects_included(fake: FakeServer, tmp_path: Path) -> None:
    elsewhere = fake.base.replace("127.0.0.1", "localhost")  # the same server under a name that is not the API's
    fake.add_character(30, "Freecss, Gon", "Main", {"gon0.jpg": picture(0), "gon1.jpg": picture(1)})
    fake.images["far.jpg"] = fake.images["near.jpg"] = (picture(2), "image/jpeg")
    fake.pictures["30"] += [
        f"{elsewhere}/img/far.jpg",  # listed on another host
        fake.url(f"/moved?to={elsewhere}/img/far.jpg"),  # the API's host redirecting to another host
        fake.url(f"/moved?to={fake.url('/img/near.jpg')}"),  # ... and to itself: followed
    ]
    summary = await collect(fake, tmp_path / "g", "--characters", "Gon Freecss", "--per-character", "5")
    assert fake.served == Counter({"gon0.jpg": 1, "gon1.jpg": 1, "near.jpg": 1})  # far.jpg never fetched
    assert summary.saved == 3 and [why for _, why in summary.failed] == [
        "localhost is not a host pictures are collected from",
        "redirected to localhost, which is not a host pictures are collected from",
    ]


async def test_a_source_host_resolving_to_a_private_address_is_refused_at_once(fake: FakeServer) -> None:
    import aiohttp

    from hxhbot.engine.public_net import PublicResolver
    from hxhbot.engine.sources import FetchError, HttpClient, RetryPolicy
    from tests.test_attachments import StubResolver

    url = fake.url("/img/x.jpg").replace("127.0.0.1", "cdn.myanimelist.net")  # resolved to this server: private
    connector = aiohttp.TCPConnector(resolver=PublicResolver(inner=StubResolver("127.0.0.1")))
    async with aiohttp.ClientSession(connector=connector) as session:
        http = HttpClient(session, RetryPolicy(max_retries=3, base_delay=0.01), 5, frozenset({"cdn.myanimelist.net"}))
        with pytest.raises(FetchError, match="^cdn.myanimelist.net resolves to no public address$"):
            await http.get_bytes(url, RateLimiter(Rate(1000.0, 100)), max_bytes=1 << 20)
    assert not fake.hits  # neither connected nor retried
