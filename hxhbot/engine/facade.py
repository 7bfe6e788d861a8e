"""The engine as the Discord side sees it: one object, opened before the bot starts and closed after it stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from hxhbot.config import Settings
from hxhbot.engine import first_run
from hxhbot.engine.feedback import FeedbackStore
from hxhbot.engine.fitted_threshold import in_force
from hxhbot.engine.identification import Identification
from hxhbot.engine.index import GalleryItem
from hxhbot.engine.indexing import BuildSummary, Progress
from hxhbot.engine.search import NotReadyError, SearchService
from hxhbot.engine.stats import AnswerStats


class Engine:
    """Identify pictures, rebuild and grow the index, keep members' feedback and count the answers given."""

    def __init__(self, settings: Settings, search: SearchService, feedback: FeedbackStore) -> None:
        self.settings = settings
        self.search = search
        self.feedback = feedback
        self.stats = AnswerStats()
        self.preparing: asyncio.Task[None] | None = None  # the first start's gallery collection

    async def start(self) -> None:
        """Start batching model calls, and collect a first gallery in the background when it is due."""
        await self.search.start()
        if first_run.needs_collection(self.settings):
            self.preparing = asyncio.create_task(
                first_run.prepare_gallery(self.settings, self.search), name="hxhbot-first-run"
            )

    async def close(self) -> None:
        """Stop the first collection (the next start resumes it), the search service and the feedback store."""
        if self.preparing is not None:
            self.preparing.cancel()
            await asyncio.gather(self.preparing, return_exceptions=True)
        await self.search.close()
        await asyncio.to_thread(self.feedback.close)

    def check_ready(self) -> None:
        """Raise `NotReadyError` while the first gallery is being collected and nothing is indexed yet."""
        if self.preparing is not None and not self.preparing.done() and not self.search.characters():
            raise NotReadyError(first_run.PREPARING)

    def check_room(self) -> None:
        """Raise `BusyError` when QUEUE_SIZE pictures are already being identified."""
        self.search.check_room()

    async def identify(self, data: bytes, top_k: int | None = None) -> Identification:
        """Every character found in a picture's bytes, each with its ranked candidates."""
        return await self.search.rank(data, top_k)

    @property
    def threshold(self) -> float:
        """The score from which a character is named: CONFIDENCE_THRESHOLD when set, else the one fitted to the
        gallery at its last index build."""
        return in_force(self.search.confidence, self.settings.confidence_threshold)

    def describe_confidence(self) -> str:
        """The threshold in force and its expected error, for people."""
        return self.search.describe_confidence()

    def count_answer(self, result: Identification, seconds: float) -> None:
        """Count an answer given in `seconds`, confident when its top character reaches the threshold in force."""
        best = result.best
        self.stats.add(best.character, best.score >= self.threshold, seconds)

    def characters(self) -> dict[str, int]:
        """The characters known, with their gallery image counts."""
        return self.search.characters()

    def index_size(self) -> tuple[int, int] | None:
        """The live index's images and characters; None before there is one."""
        index = self.search.index
        return (len(index), len(index.characters())) if index else None

    @property
    def reindexing(self) -> bool:
        """Whether an index rebuild is running."""
        return self.search.reindexing

    async def reindex(self, progress: Progress | None = None) -> BuildSummary:
        """Rebuild the index from the gallery in the background and swap it in when done."""
        return await self.search.reindex(progress)

    def abandon_builds(self) -> None:
        """Make a running index build stop at its next image, the saved index left as it was."""
        self.search.abandon_builds()

    async def add_to_gallery(self, character: str, data: bytes, source: dict[str, str]) -> GalleryItem:
        """Save a picture into a character's gallery folder and add it to the live index."""
        return await self.search.add_to_gallery(character, data, source)


@contextlib.asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Engine]:
    """The engine, its model, index and feedback store loaded off the event loop; closed on leaving."""
    search = await asyncio.to_thread(SearchService.open, settings)
    try:
        feedback = await asyncio.to_thread(FeedbackStore.open, settings.feedback_db)
    except BaseException:
        await search.close()
        raise
    engine = Engine(settings, search, feedback)
    try:
        await engine.start()
        yield engine
    finally:
        await engine.close()
