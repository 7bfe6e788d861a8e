"""The async search service: micro-batching, back-pressure, background re-index with atomic swap."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

import pytest

from hxhbot.config import Settings
from hxhbot.engine.crops import Views
from hxhbot.engine.embedder import Embedder
from hxhbot.engine.images import NotAnImageError, to_array
from hxhbot.engine.interpreter import LiteInterpreter
from hxhbot.engine.search import (
    BusyError,
    NotReadyError,
    ReindexError,
    ReindexInProgressError,
    SearchService,
)

SOURCE = {"source": "feedback", "url": "https://cdn/p.png"}  # what /review records of an approved picture


@pytest.fixture
def settings(gallery: Path, model_dir: Path, tmp_path: Path) -> Settings:
    return Settings(gallery_dir=gallery, model_dir=model_dir, index_dir=tmp_path / "index", top_k=3)


@pytest.fixture
async def service(settings: Settings):
    service = SearchService.open(settings)  # builds the missing index at start-up
    await service.start()
    yield service
    await service.close()


def _reference_image() -> bytes:
    from tests.conftest import COLOURS, character_image, encode

    return encode(character_image(COLOURS["Kurapika"], 1))


def _count_calls(service: SearchService, alone: list[bool] | None = None) -> list[int]:
    """The size of every model call from now on (and, into `alone`, whether it served a picture alone)."""
    sizes: list[int] = []
    embed = service.embedder.embed

    def counting(images, served_alone=False):
        sizes.append(len(images))
        if alone is not None:
            alone.append(served_alone)
        return embed(images, served_alone)

    service.embedder.embed = counting  # type: ignore[method-assign]
    return sizes


async def test_identify_and_micro_batching(service: SearchService, gallery: Path) -> None:
    sizes = _count_calls(service)
    paths = sorted(gallery.glob("*/*.jpg"))
    results = await asyncio.gather(*(service.rank(path.read_bytes()) for path in paths))
    for path, result in zip(paths, results):
        assert result.best.character == path.parent.name and len(result.matches) == 3
    assert sum(sizes) == len(paths) and len(sizes) < len(paths)  # several images per model call


async def test_a_picture_alone_is_served_for_latency_and_a_crowd_one_thread_a_call(
    service: SearchService, gallery: Path
) -> None:
    alone: list[bool] = []
    _count_calls(service, alone)
    beside, submit = [], service._beside_pool.submit
    service._beside_pool.submit = lambda *call: beside.append(call[0]) or submit(*call)  # type: ignore[method-assign]
    await service.rank(_reference_image())
    assert alone == [True] and beside == [to_array]  # its whole view made beside its face search
    alone.clear(), beside.clear()
    paths = sorted(gallery.glob("*/*.jpg"))
    release, decode = threading.Event(), service._decode

    def held(data: bytes) -> Views:
        release.wait(60)
        return decode(data)

    service._decode = held  # type: ignore[method-assign]
    crowd = [asyncio.create_task(service.rank(path.read_bytes())) for path in paths]
    while service._in_flight < len(paths):  # the whole crowd has asked before any picture is decoded
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*crowd)
    assert alone[0] is False  # the first call had the crowd waiting behind it, however fast the machine
    assert sum(alone) <= 1  # only the crowd's last picture, once nothing else waits, may be served alone
    assert len(beside) <= 1  # and only it may have its whole view made beside: the other core has work


async def test_bad_image_fails_alone(service: SearchService, gallery: Path) -> None:
    good = (gallery / "Kurapika" / "01.jpg").read_bytes()
    results = await asyncio.gather(service.rank(b"nope"), service.rank(good), return_exceptions=True)
    assert isinstance(results[0], NotAnImageError) and results[1].best.character == "Kurapika"


async def test_busy_when_queue_is_full(settings: Settings, gallery: Path) -> None:
    service = SearchService.open(dataclasses.replace(settings, queue_size=2))
    entered, release = threading.Barrier(3), threading.Event()  # the two decodings and this test
    decode = service._decode

    def held(data: bytes) -> Views:
        entered.wait(60)
        release.wait(60)
        return decode(data)

    service._decode = held  # type: ignore[method-assign]
    data = (gallery / "Kurapika" / "01.jpg").read_bytes()
    waiting = [asyncio.create_task(service.rank(data)) for _ in range(2)]
    await asyncio.to_thread(entered.wait, 60)  # both are being decoded: QUEUE_SIZE images in flight, however slow
    with pytest.raises(BusyError, match="busy"):
        await service.rank(data)
    release.set()
    assert all(r.best.character == "Kurapika" for r in await asyncio.gather(*waiting))
    await service.close()


async def test_busy_when_decoding_memory_stays_taken(settings: Settings, gallery: Path) -> None:
    service = SearchService.open(dataclasses.replace(settings, decode_wait_seconds=0.0))
    data = (gallery / "Kurapika" / "01.jpg").read_bytes()
    with service.budget.reserve(settings.decode_memory_bytes):  # other pictures hold all the decoding memory
        with pytest.raises(BusyError, match="^The bot is busy reading other pictures right now"):
            await service.rank(data)
    assert (await service.rank(data)).best.character == "Kurapika"
    await service.close()


async def test_not_ready_without_gallery(settings: Settings, tmp_path: Path) -> None:
    service = SearchService.open(dataclasses.replace(settings, gallery_dir=tmp_path / "none"))
    with pytest.raises(NotReadyError, match="/reindex"):
        await service.rank(b"x")
    assert service.characters() == {}
    await service.close()


async def test_reindex_swaps_while_serving(service: SearchService, gallery: Path) -> None:
    from tests.conftest import write_gallery

    write_gallery(gallery, per_character=3, characters={"Zushi": (250, 120, 0)})
    progress: list[tuple[int, int]] = []
    query = (gallery / "Zushi" / "01.jpg").read_bytes()
    release = threading.Event()
    build = service._build
    service._build = lambda report: (release.wait(60), build(report))[1]  # held open until the query is answered
    reindex = asyncio.create_task(service.reindex(lambda done, total: progress.append((done, total))))
    await asyncio.sleep(0)
    assert service.reindexing
    with pytest.raises(ReindexInProgressError):
        await service.reindex()
    during = await service.rank(query)  # the old index answers meanwhile
    assert during.best.character != "Zushi"
    release.set()
    summary = await reindex
    assert summary.characters == 5 and summary.images == 19 and summary.reused == 16
    assert progress[-1] == (19, 19)
    assert (await service.rank(query)).best.character == "Zushi"
    assert service.characters()["Zushi"] == 3 and not service.reindexing


async def test_failed_reindex_keeps_old_index(service: SearchService, gallery: Path) -> None:
    old = service.index
    for path in gallery.glob("*/*.jpg"):
        path.write_bytes(b"garbage")
    with pytest.raises(ReindexError, match="no readable images"):
        await service.reindex()
    assert service.index is old and len(service.index) == 16
    assert (await service.rank(_reference_image())).matches  # still serving


def test_embedder_is_served_through_tensorflow_lite_and_warm_after_open(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    warmed: list[Embedder] = []
    monkeypatch.setattr(Embedder, "warm_up", lambda embedder: warmed.append(embedder))
    service = SearchService.open(settings)
    assert warmed == [service.embedder] and isinstance(service.embedder.forward, LiteInterpreter)


async def test_add_to_gallery_saves_the_picture_and_indexes_it_without_a_rebuild(
    service: SearchService, settings: Settings, gallery: Path
) -> None:
    import json

    from tests.conftest import COLOURS, character_image, encode

    picture = encode(character_image(COLOURS["Gon Freecss"], 77))
    before = len(service.index)
    sizes = _count_calls(service)
    item = await service.add_to_gallery("Kurapika", picture, {"source": "feedback", "url": "https://cdn/p.png"})
    assert sizes == [1]  # one new embedding; the others were reused
    assert Path(item.path).parent == gallery / "Kurapika" and len(service.index) == before + 1
    manifest = json.loads((gallery / "manifest.json").read_text())
    entry = next(iter(manifest["images"].values()))
    assert entry["character"] == "Kurapika" and entry["source"] == "feedback" and entry["url"] == "https://cdn/p.png"
    assert (await service.rank(picture)).best.character == "Kurapika"
    reloaded = SearchService.open(settings)  # saved: a restart serves it too, without rebuilding
    assert len(reloaded.index) == before + 1
    await reloaded.close()
    await service.add_to_gallery("Kurapika", picture, {"source": "feedback", "url": "https://cdn/p.png"})
    assert len(service.index) == before + 1  # the same picture twice is one gallery image


async def test_an_approval_while_another_build_writes_is_refused_and_saves_nothing(
    service: SearchService, settings: Settings, gallery: Path
) -> None:
    from hxhbot.engine.index_lock import LOCK_FILE, IndexBusyError, index_writer
    from tests.conftest import COLOURS, character_image, encode

    saved = {path.name: path.read_bytes() for path in settings.index_dir.iterdir() if path.name != LOCK_FILE}
    pictures = sorted(gallery.rglob("*"))
    with index_writer(settings.index_dir):  # as `python -m hxhbot index` holds it while it builds
        with pytest.raises(IndexBusyError, match="Another index build is running"):
            await service.add_to_gallery("Kurapika", encode(character_image(COLOURS["Gon Freecss"], 77)), SOURCE)
    assert sorted(gallery.rglob("*")) == pictures and len(service.index) == 16
    assert {path.name: path.read_bytes() for path in settings.index_dir.iterdir() if path.name != LOCK_FILE} == saved


async def test_an_approval_after_a_command_line_build_extends_that_build(
    service: SearchService, settings: Settings, gallery: Path
) -> None:
    from hxhbot.engine.index import GalleryIndex
    from hxhbot.engine.indexing import build_gallery_index
    from tests.conftest import COLOURS, character_image, encode, write_gallery

    write_gallery(gallery, per_character=2, characters={"Zushi": (250, 120, 0)})
    build_gallery_index(gallery, service.embedder, settings.index_dir)  # `python -m hxhbot index`, the bot serving
    await service.add_to_gallery("Kurapika", encode(character_image(COLOURS["Gon Freecss"], 77)), SOURCE)
    assert service.characters()["Zushi"] == 2 and service.characters()["Kurapika"] == 5
    assert GalleryIndex.load(settings.index_dir).characters() == service.characters()


async def test_approvals_racing_command_line_builds_leave_a_loadable_index(
    service: SearchService, settings: Settings, gallery: Path
) -> None:
    from hxhbot.engine.index import GalleryIndex
    from hxhbot.engine.index_lock import IndexBusyError
    from hxhbot.engine.indexing import build_gallery_index
    from tests.conftest import COLOURS, character_image, encode

    builds, refused = 0, 0

    def command_line() -> None:  # six `python -m hxhbot index` runs, each retried until it gets the lock
        nonlocal builds, refused
        while builds < 6:
            try:
                build_gallery_index(gallery, service.embedder, settings.index_dir)
                builds += 1
            except IndexBusyError:
                refused += 1

    builder = asyncio.create_task(asyncio.to_thread(command_line))
    for variant in range(6):  # six approvals, each retried until it gets the lock
        while True:
            try:
                await service.add_to_gallery(
                    "Kurapika", encode(character_image(COLOURS["Kurapika"], 200 + variant)), SOURCE
                )
                break
            except IndexBusyError:
                refused += 1
                await asyncio.sleep(0.01)
        GalleryIndex.load(settings.index_dir)  # whoever wrote last, the saved index loads
    await builder
    assert GalleryIndex.load(settings.index_dir).characters()["Kurapika"] == 4 + 6 == service.characters()["Kurapika"]


async def test_a_start_deletes_what_a_save_killed_half_way_left(service: SearchService, settings: Settings) -> None:
    left = [settings.index_dir / "index.json.index-0123456789ab.tmp", settings.index_dir / "index-0123456789ab.ann"]
    for path in left:
        path.write_bytes(b"half written")
    restarted = SearchService.open(settings)
    assert not any(path.exists() for path in left) and len(restarted.index) == 16
    await restarted.close()


async def test_the_threshold_fitted_at_each_build_is_saved_with_the_index_and_reported(
    service: SearchService, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from hxhbot.engine.fitted_threshold import META_KEY, SHIPPED, FittedThreshold, stored
    from hxhbot.engine.index import META_FILE, GalleryIndex

    assert service.confidence.threshold == SHIPPED and not service.confidence.fitted  # 16 pictures are too few to fit
    assert "too few pictures to fit one (16 checked" in service.describe_confidence()
    assert stored(GalleryIndex.load(settings.index_dir).meta) == service.confidence
    meta_file = settings.index_dir / META_FILE
    meta = json.loads(meta_file.read_text())
    fit = FittedThreshold(0.8, True, 400, 200, 2, 400, 1, 0.025, 0.02)
    meta[META_KEY] = fit.to_json()  # as a build of a larger gallery would have saved it
    meta_file.write_text(json.dumps(meta))
    caplog.set_level("INFO", logger="hxhbot.engine.search")
    started = SearchService.open(settings)  # start-up: the saved index, not rebuilt
    assert started.confidence == fit
    assert f"confidence: {fit.describe()}" in caplog.text
    owner = SearchService.open(dataclasses.replace(settings, confidence_threshold=0.5))
    assert "names from 50%, CONFIDENCE_THRESHOLD set by the owner" in owner.describe_confidence()
    from tests.conftest import COLOURS, character_image, encode

    await started.add_to_gallery("Kurapika", encode(character_image(COLOURS["Kurapika"], 9)), SOURCE)
    assert stored(GalleryIndex.load(settings.index_dir).meta) == fit, "the fit stands until the next build"
    await started.reindex()
    assert started.confidence.threshold == SHIPPED
    assert stored(GalleryIndex.load(settings.index_dir).meta) == started.confidence
    for opened in (started, owner):
        await opened.close()
