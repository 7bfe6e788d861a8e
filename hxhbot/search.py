"""The search service: plain asyncio, knows nothing of Discord; bot, CLI and benchmarks call it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from hxhbot.config import Settings
from hxhbot.embedder import Embedder
from hxhbot.gallery import GalleryError
from hxhbot.images import ImageError, load_image, thumbnail_jpeg
from hxhbot.index import CharacterMatch, GalleryIndex, GalleryIndexError
from hxhbot.indexing import BuildSummary, Progress, build_gallery_index

log = logging.getLogger(__name__)
THUMBNAIL_CACHE = 2048  # gallery thumbnails kept in memory (~15 KB each)


class BusyError(RuntimeError):
    """Too many requests are waiting: try again shortly."""


class NotReadyError(RuntimeError):
    """There is no index to search yet."""


class ReindexInProgressError(RuntimeError):
    """A rebuild of the index is already running."""


class ReindexError(RuntimeError):
    """A rebuild failed; the previous index is still in use."""


class ReindexAbandonedError(ReindexError):
    """A rebuild stopped because the service is closing; the previous index is untouched."""


@dataclass(frozen=True)
class Identification:
    """The ranked characters for one image, best first."""

    matches: list[CharacterMatch]

    @property
    def best(self) -> CharacterMatch:
        """The top match."""
        return self.matches[0]


@dataclass
class _Job:
    """One decoded image waiting for the next model call."""

    array: np.ndarray
    top_k: int
    future: asyncio.Future


class SearchService:
    """Decode, embed (micro-batched in a thread pool) and rank images against the live index."""

    def __init__(self, embedder: Embedder, index: GalleryIndex | None, settings: Settings) -> None:
        self.embedder = embedder
        self.index = index
        self.settings = settings
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="hxhbot-decode")
        self._model_pool = ThreadPoolExecutor(1, thread_name_prefix="hxhbot-model")  # never queues behind decoding
        self._build_pool = ThreadPoolExecutor(1, thread_name_prefix="hxhbot-index")
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._in_flight = 0
        self._reindex_lock = asyncio.Lock()
        self._batcher: asyncio.Task | None = None
        self._thumbnails: OrderedDict[str, bytes] = OrderedDict()
        self._abandon = threading.Event()  # set: a running build stops at its next image

    @classmethod
    def open(cls, settings: Settings) -> "SearchService":
        """Load the model and the index (building it from the gallery when missing or stale)."""
        embedder = Embedder.load(settings.model_dir, max_batch=settings.batch_size)
        embedder.warm_up()
        try:
            index = GalleryIndex.load(settings.index_dir, embedder.fingerprint)
        except GalleryIndexError as error:
            log.warning("%s", error)
            index = cls._build_at_start(settings, embedder)
        return cls(embedder, index, settings)

    @staticmethod
    def _build_at_start(settings: Settings, embedder: Embedder) -> GalleryIndex | None:
        """Build the index at start-up; without a usable gallery, start without one."""
        try:
            index, summary = build_gallery_index(
                settings.gallery_dir, embedder, settings.index_dir, max_pixels=settings.max_image_pixels
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

    @property
    def reindexing(self) -> bool:
        """Whether a rebuild is running."""
        return self._reindex_lock.locked()

    def characters(self) -> dict[str, int]:
        """The characters the bot knows, with their gallery image counts."""
        return self.index.characters() if self.index else {}

    async def identify(self, data: bytes, top_k: int | None = None) -> Identification:
        """Rank the characters for image bytes; raises `ImageError`, `BusyError` or `NotReadyError`."""
        if self.index is None or len(self.index) == 0:
            raise NotReadyError("The gallery has not been indexed yet: the owner can run /reindex.")
        if self._in_flight >= self.settings.queue_size:
            raise BusyError("The bot is busy with other images right now; try again in a few seconds.")
        await self.start()
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            array = await loop.run_in_executor(self._pool, self._decode, data)
            future = loop.create_future()
            self._queue.put_nowait(_Job(array, top_k or self.settings.top_k, future))
            return await future
        finally:
            self._in_flight -= 1

    async def thumbnail(self, path: str) -> bytes | None:
        """A small JPEG of a gallery image (cached), or None when it cannot be read any more."""
        if path in self._thumbnails:
            self._thumbnails.move_to_end(path)
            return self._thumbnails[path]
        try:
            data = await asyncio.get_running_loop().run_in_executor(self._pool, thumbnail_jpeg, path)
        except (OSError, ImageError) as error:
            log.warning("no thumbnail for %s: %s", path, error)
            return None
        self._thumbnails[path] = data
        if len(self._thumbnails) > THUMBNAIL_CACHE:
            self._thumbnails.popitem(last=False)
        return data

    def _decode(self, data: bytes) -> np.ndarray:
        """Check and decode image bytes at the model's input size."""
        return load_image(
            data, self.embedder.input_size,
            max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels,
        )

    async def _run_batches(self) -> None:
        """Gather whatever images are waiting into one model call, again and again."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            while len(jobs) < self.settings.batch_size and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            jobs = [job for job in jobs if not job.future.done()]  # the asker may have gone
            if not jobs:
                continue
            try:
                results = await loop.run_in_executor(self._model_pool, self._embed_and_rank, jobs)
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

    def _embed_and_rank(self, jobs: list[_Job]) -> list[Identification]:
        """One model call for the batch, then a ranking per image against the live index."""
        vectors = self.embedder.embed(np.stack([job.array for job in jobs]))
        index = self.index
        return [Identification(index.rank(vector, job.top_k)) for vector, job in zip(vectors, jobs)]

    async def reindex(self, progress: Progress | None = None) -> BuildSummary:
        """Rebuild the index from the gallery in the background and swap it in when done."""
        if self._reindex_lock.locked():
            raise ReindexInProgressError("An index rebuild is already running.")
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
            self._thumbnails.clear()  # gallery files may have changed
            log.info("reindexed: %s", summary.describe())
            return summary

    def _build(self, progress: Progress) -> tuple[GalleryIndex, BuildSummary]:
        """Build and save a new index (runs in the build thread)."""
        return build_gallery_index(
            self.settings.gallery_dir, self.embedder, self.settings.index_dir,
            batch_size=self.settings.batch_size, max_pixels=self.settings.max_image_pixels,
            progress=progress,
        )
