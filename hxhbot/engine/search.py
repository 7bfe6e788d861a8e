"""The search service: plain asyncio, knows nothing of Discord; bot, CLI and benchmarks call it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hxhbot.config import Settings
from hxhbot.engine.atomic_dir import replace_dir
from hxhbot.engine.confidence import Calibration
from hxhbot.engine.crops import Views, load_views
from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.embedder import Embedder
from hxhbot.engine.fitted_threshold import FittedThreshold, describe_in_force, store, stored
from hxhbot.engine.gallery import GalleryError
from hxhbot.engine.gallery_check import checker
from hxhbot.engine.identification import Identification, rank_picture
from hxhbot.engine.index import GalleryIndex, GalleryIndexError, GalleryItem, sweep
from hxhbot.engine.index_lock import index_writer
from hxhbot.engine.indexing import BuildSummary, Progress, build_gallery_index
from hxhbot.engine.manifest import add_to_gallery
from hxhbot.engine.memory_budget import BusyError, MemoryBudget
from hxhbot.engine.model_dir import ModelError, trained_pictures
from hxhbot.errors import UserError

log = logging.getLogger(__name__)


class NotReadyError(UserError):
    """There is no index to search yet."""


class ReindexInProgressError(UserError):
    """A rebuild of the index is already running."""


class ReindexError(UserError):
    """A rebuild failed; the previous index is still in use."""


class ReindexAbandonedError(ReindexError):
    """A rebuild stopped because the service is closing; the previous index is untouched."""


@dataclass
class _Job:
    """One decoded image's views waiting for the next model call."""

    views: Views
    top_k: int
    future: asyncio.Future


class SearchService:
    """Decode, embed (micro-batched in a thread pool) and rank images against the live index."""

    def __init__(
        self,
        embedder: Embedder,
        index: GalleryIndex | None,
        settings: Settings,
        detector: FaceDetector | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        self.embedder = embedder
        self.detector = detector or FaceDetector()
        self.calibration = calibration or Calibration.load(settings.model_dir)
        self.confidence: FittedThreshold = stored({})
        self.index = index
        self.settings = settings
        self.budget = MemoryBudget(settings.decode_memory_bytes, settings.decode_wait_seconds)  # decoding memory
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="hxhbot-decode")
        self._model_pool = ThreadPoolExecutor(1, thread_name_prefix="hxhbot-model")  # never queues behind decoding
        self._build_pool = ThreadPoolExecutor(1, thread_name_prefix="hxhbot-index")
        self._beside_pool = ThreadPoolExecutor(1, thread_name_prefix="hxhbot-view")  # a picture alone: its whole view
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._in_flight = 0
        self._reindex_lock = asyncio.Lock()
        self._batcher: asyncio.Task | None = None
        self._abandon = threading.Event()  # set: a running build stops at its next image
        self.training = False  # an owner training run is going (hxhbot.engine.owner_training): no rebuild meanwhile

    @classmethod
    def open(cls, settings: Settings) -> SearchService:
        """Load the model and the index (building it from the gallery when missing or stale)."""
        embedder = Embedder.load(settings.model_dir, max_batch=settings.batch_size, threads=settings.model_threads)
        embedder.warm_up()
        detector = FaceDetector()
        calibration = Calibration.load(settings.model_dir)
        with contextlib.suppress(GalleryIndexError):  # another writer is running (it sweeps), or no folder yet
            with index_writer(settings.index_dir):
                sweep(settings.index_dir)  # what a save killed half-way left behind
        index: GalleryIndex | None
        try:
            index = GalleryIndex.load(settings.index_dir, embedder.fingerprint)
        except GalleryIndexError as error:
            log.warning("%s", error)
            index = cls._build_at_start(settings, embedder, detector, calibration)
        service = cls(embedder, index, settings, detector, calibration)
        if index is not None:
            log.info("confidence: %s", service.describe_confidence())
        return service

    @property
    def index(self) -> GalleryIndex | None:
        """The live index."""
        return self._index

    @index.setter
    def index(self, index: GalleryIndex | None) -> None:
        """Swap an index in, with the threshold fitted to its gallery (`hxhbot.engine.fitted_threshold`)."""
        self._index = index
        self.confidence = stored(index.meta) if index is not None else stored({})

    def describe_confidence(self) -> str:
        """The threshold in force and its expected error, for people."""
        return describe_in_force(self.confidence, self.settings.confidence_threshold)

    @staticmethod
    def _build_at_start(
        settings: Settings, embedder: Embedder, detector: FaceDetector, calibration: Calibration
    ) -> GalleryIndex | None:
        """Build the index at start-up; without a usable gallery, start without one."""
        try:
            index, summary = build_gallery_index(
                settings.gallery_dir,
                embedder,
                settings.index_dir,
                max_pixels=settings.max_image_pixels,
                detector=detector,
                check=checker(calibration, settings.confidence_threshold, trained_pictures(settings.model_dir)),
            )
        except (GalleryError, GalleryIndexError, OSError) as error:
            log.warning("starting without an index: %s", error)
            return None
        log.info("built the index at start-up: %s", summary.describe())
        return index

    async def start(self) -> None:
        """Start the micro-batching task."""
        if self._batcher is None:
            self._batcher = asyncio.create_task(self._run_batches(), name="hxhbot-batcher")

    def abandon_builds(self) -> None:
        """Make a running index build stop at its next image, leaving the saved index as it was."""
        self._abandon.set()

    async def close(self) -> None:
        """Abandon any index build, stop the batching task and the thread pools."""
        self.abandon_builds()
        if self._batcher is not None:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
            self._batcher = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._model_pool.shutdown(wait=False, cancel_futures=True)
        self._build_pool.shutdown(wait=False, cancel_futures=True)
        self._beside_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def reindexing(self) -> bool:
        """Whether a rebuild is running."""
        return self._reindex_lock.locked()

    def characters(self) -> dict[str, int]:
        """The characters the bot knows, with their gallery image counts."""
        return self.index.characters() if self.index else {}

    @property
    def _alone(self) -> bool:
        """Whether the picture being worked on is the only one: nothing else decoding or waiting."""
        return self._in_flight == 1

    def check_room(self) -> None:
        """Raise `BusyError` when QUEUE_SIZE images are already being identified."""
        if self._in_flight >= self.settings.queue_size:
            raise BusyError("The bot is busy with other images right now; try again in a few seconds.")

    async def rank(self, data: bytes, top_k: int | None = None) -> Identification:
        """Every character found in image bytes, each ranked; raises `ImageError`, `BusyError` or `NotReadyError`."""
        if self.index is None or len(self.index) == 0:
            raise NotReadyError("The gallery has not been indexed yet: the owner can run /reindex.")
        self.check_room()
        await self.start()
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            views = await loop.run_in_executor(self._pool, self._decode, data)
            future = loop.create_future()
            self._queue.put_nowait(_Job(views, top_k or self.settings.top_k, future))
            return await future
        finally:
            self._in_flight -= 1

    def _decode(self, data: bytes) -> Views:
        """Check and decode image bytes, find its faces, cut the model's views of it and draw its preview (a picture
        alone has its whole view made on another core meanwhile)."""
        return load_views(
            data,
            self.embedder.input_size,
            self.detector,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
            max_decode_bytes=self.settings.decode_memory_bytes,
            budget=self.budget,
            preview=True,
            beside=self._beside_pool if self._alone else None,
        )

    async def _run_batches(self) -> None:
        """Gather whatever images are waiting into one model call, again and again."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            while sum(len(job.views.arrays) for job in jobs) < self.settings.batch_size and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            jobs = [job for job in jobs if not job.future.done()]  # the asker may have gone
            if not jobs:
                continue
            results: list[Identification] | list[Exception]
            try:
                alone = len(jobs) == 1 and self._alone  # served for latency
                results = await loop.run_in_executor(self._model_pool, self._embed_and_rank, jobs, alone)
            except Exception as error:  # a failed batch fails its requests, never the batcher
                log.exception("embedding batch of %d failed", len(jobs))
                results = [error] * len(jobs)
            for job, result in zip(jobs, results):
                if job.future.done():
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _embed_and_rank(self, jobs: list[_Job], alone: bool = False) -> list[Identification]:
        """One model call for every view of the batch, then the answers per image against the live index."""
        vectors = self.embedder.embed(np.concatenate([job.views.arrays for job in jobs]), alone)
        index, results, start = self.index, [], 0
        assert index is not None, "identify() refuses requests while no index is loaded"
        for job in jobs:
            count = len(job.views.arrays)
            similarities = index.similarities(vectors[start : start + count])
            results.append(rank_picture(similarities, job.views.boxes, self.calibration, job.top_k, job.views.preview))
            start += count
        return results

    async def reindex(self, progress: Progress | None = None) -> BuildSummary:
        """Rebuild the index from the gallery in the background and swap it in when done."""
        if self._reindex_lock.locked():
            raise ReindexInProgressError("An index rebuild is already running.")
        if self.training:
            raise ReindexInProgressError("The model is training: the index is rebuilt when it is done.")
        async with self._reindex_lock:
            loop = asyncio.get_running_loop()

            def report(done: int, total: int) -> None:
                if self._abandon.is_set():
                    raise ReindexAbandonedError(
                        "The bot is shutting down: the rebuild was abandoned, the old index kept."
                    )
                if progress:
                    loop.call_soon_threadsafe(progress, done, total)

            try:
                index, summary = await loop.run_in_executor(self._build_pool, self._build, report)
            except (GalleryError, GalleryIndexError, OSError, ValueError) as error:
                log.error("reindex failed, keeping the old index: %s", error)
                raise ReindexError(f"The rebuild failed and the old index is still in use: {error}") from error
            self.index = index
            log.info("reindexed: %s", summary.describe())
            return summary

    async def swap_model(self, model_dir: Path, progress: Progress | None = None) -> BuildSummary:
        """Index the gallery with the model in `model_dir`, then put both in service: MODEL_DIR and INDEX_DIR are
        replaced whole and at once (`replace_dir`), then the live model, confidence and index. Failing, nothing is."""
        async with self._reindex_lock:
            loop = asyncio.get_running_loop()

            def report(done: int, total: int) -> None:
                if progress:
                    loop.call_soon_threadsafe(progress, done, total)

            try:
                embedder, calibration, index, summary = await loop.run_in_executor(
                    self._build_pool, self._put_in_place, model_dir, report
                )
            except (GalleryError, GalleryIndexError, ModelError, OSError, ValueError) as error:
                log.error("the new model was not put in service: %s", error)
                raise ReindexError(f"{error}; the serving model is still in use") from error

            def serve() -> None:  # in the model thread, between two batches: none sees half of the swap
                self.embedder, self.calibration, self.index = embedder, calibration, index

            await loop.run_in_executor(self._model_pool, serve)
            log.info("now serving the model of %s: %s", model_dir, summary.describe())
            return summary

    def _put_in_place(
        self, model_dir: Path, progress: Progress
    ) -> tuple[Embedder, Calibration, GalleryIndex, BuildSummary]:
        """Load the model in `model_dir`, index the gallery with it beside it, then move both where they serve."""
        embedder = Embedder.load(model_dir, max_batch=self.settings.batch_size)
        embedder.warm_up()
        calibration = Calibration.load(model_dir)
        serving, index_dir = self.settings.model_dir.resolve(), self.settings.index_dir.resolve()
        inside = index_dir.is_relative_to(serving)
        staged_index = (
            model_dir / index_dir.relative_to(serving)
            if inside
            else Path(tempfile.mkdtemp(prefix=f".{index_dir.name}.new-", dir=index_dir.parent))
        )
        try:
            index, summary = self._build(progress, embedder, calibration, staged_index, model_dir)
            replace_dir(model_dir, serving)  # a crash before the index moves too: the next start rebuilds it
            if not inside:
                replace_dir(staged_index, index_dir)
        finally:
            if not inside:
                shutil.rmtree(staged_index, ignore_errors=True)
        return embedder, calibration, index, summary

    async def add_to_gallery(self, character: str, data: bytes, source: dict[str, str]) -> GalleryItem:
        """Save a picture into the character's gallery folder and add it to the live index, without a rebuild."""
        async with self._reindex_lock:
            loop = asyncio.get_running_loop()
            index, item = await loop.run_in_executor(self._build_pool, self._add, character, data, source)
            self.index = index
            log.info("added %s to %s: %d gallery images", item.path, character, len(index))
            return item

    def _add(self, character: str, data: bytes, source: dict[str, str]) -> tuple[GalleryIndex, GalleryItem]:
        """Save, embed and index one picture's views, reusing every other embedding, as the index's one writer (runs
        in the build thread); `IndexBusyError`, nothing saved, while another build (`python -m hxhbot index`) runs."""
        with index_writer(self.settings.index_dir):
            base = self._latest_index()
            path = add_to_gallery(self.settings.gallery_dir, character, data, hashlib.sha256(data).hexdigest(), source)
            saved = path.read_bytes()
            item = GalleryItem(character, str(path), hashlib.sha256(saved).hexdigest())
            if base is not None and item in base.items:
                return base, item
            views = load_views(
                saved,
                self.embedder.input_size,
                self.detector,
                max_bytes=max(len(saved), 1),
                max_pixels=self.settings.max_image_pixels,
            )
            vectors = self.embedder.embed(views.arrays)
            items = [GalleryItem(character, item.path, item.sha256, view) for view in range(len(vectors))]
            if base is None:
                index = GalleryIndex.build(vectors, items, self.embedder.fingerprint)
            else:
                index = base.extended(vectors, items)
            store(index.meta, self.confidence if base is None else stored(base.meta))  # stands until the next build
            index.save(self.settings.index_dir)
            return index, item

    def _latest_index(self) -> GalleryIndex | None:
        """The index to extend: the saved one when another writer has replaced the one served since, else the one
        served (called holding the writer lock)."""
        try:
            saved = GalleryIndex.load(self.settings.index_dir, self.embedder.fingerprint)
        except GalleryIndexError:
            return self.index  # none saved, or unusable: what is served becomes the saved index
        if self.index is not None and saved.meta["ann_file"] == self.index.meta.get("ann_file"):
            return self.index
        return saved

    def _build(
        self,
        progress: Progress,
        embedder: Embedder | None = None,
        calibration: Calibration | None = None,
        index_dir: Path | None = None,
        model_dir: Path | None = None,
    ) -> tuple[GalleryIndex, BuildSummary]:
        """Build and save a new index, by default with the serving model (of `model_dir`, MODEL_DIR) into INDEX_DIR
        (runs in the build thread); the check never asks the pictures that model trained on."""
        return build_gallery_index(
            self.settings.gallery_dir,
            embedder or self.embedder,
            index_dir or self.settings.index_dir,
            batch_size=self.settings.batch_size,
            max_pixels=self.settings.max_image_pixels,
            progress=progress,
            detector=self.detector,
            check=checker(
                calibration or self.calibration,
                self.settings.confidence_threshold,
                trained_pictures(model_dir or self.settings.model_dir),
            ),
        )
