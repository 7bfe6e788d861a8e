"""First start with an empty gallery: collect the default Hunter × Hunter gallery, index it, then serve."""

from __future__ import annotations

import logging
import time

from hxhbot.config import Settings
from hxhbot.engine.collect import CollectError, CollectRequest, collect
from hxhbot.engine.gallery import GalleryError, scan_gallery
from hxhbot.engine.manifest import ManifestError
from hxhbot.engine.owner_training import STAGES, OwnerTrainer, TrainingBusyError, TrainingError
from hxhbot.engine.search import ReindexError, ReindexInProgressError, SearchService

log = logging.getLogger(__name__)
MARKER = ".first-run-collection"  # in the gallery folder while the first collection is unfinished
PREPARING = "I'm still preparing my gallery (first start); try again in a few minutes."
LOG_EVERY = 10.0  # seconds between progress lines within one character


def needs_collection(settings: Settings) -> bool:
    """Whether to collect at start: COLLECT_ON_START, and the gallery is empty or its first collection unfinished."""
    if not settings.collect_on_start:
        return False
    if (settings.gallery_dir / MARKER).exists():
        return True
    try:
        files, _ = scan_gallery(settings.gallery_dir)
    except GalleryError:  # no folder yet: collect into a new one; a file in its place: the index build says so
        return not settings.gallery_dir.exists()
    return not files


async def prepare_gallery(settings: Settings, search: SearchService) -> None:
    """Collect the default gallery (resumable), then index it and swap the index in; progress in the log."""
    marker = settings.gallery_dir / MARKER
    request = CollectRequest(
        out=settings.gallery_dir,
        per_character=settings.collect_per_character,
        base_url=settings.collect_base_url or None,
    )
    log.info(
        "first start: collecting the default Hunter × Hunter gallery into %s (resumed if interrupted)",
        settings.gallery_dir,
    )
    try:
        settings.gallery_dir.mkdir(parents=True, exist_ok=True)
        marker.touch()
        summary = await collect(request, _LogProgress())
    except (CollectError, ManifestError, OSError) as error:
        log.error("collecting the gallery failed: %s; restart the bot to resume", error)
        return
    if not summary.failed:
        marker.unlink(missing_ok=True)
    log.info("first start: gallery collected (%s); indexing it", "; ".join(summary.lines()[:2]))
    try:
        built = await search.reindex(lambda done, total: log.debug("indexing %d/%d", done, total))
    except (ReindexError, ReindexInProgressError) as error:
        log.error("first start: could not index the collected gallery: %s", error)
        return
    log.info("first start: ready to answer: %s", built.describe())
    if settings.train_after_collect:
        await train_once(settings, search)


async def train_once(settings: Settings, search: SearchService) -> None:
    """TRAIN_AFTER_COLLECT: train on the collected gallery as /train does, progress in the log."""
    log.info("first start: training the model on the collected gallery (TRAIN_AFTER_COLLECT=1)")
    progress = _LogProgress()
    try:
        outcome = await OwnerTrainer(settings, search).train(
            lambda stage, done, total, left: progress(f"{STAGES.get(stage, stage)}: {done}/{total}")
        )
    except (TrainingBusyError, TrainingError) as error:
        log.error("first start: training failed: %s", error)
        return
    log.info("first start: %s", outcome.describe())


class _LogProgress:
    """The collector's progress as log lines: each new character, and at most every LOG_EVERY seconds."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, text: str) -> None:
        new_character = ": " not in text
        if new_character or time.monotonic() - self._last >= LOG_EVERY:
            self._last = time.monotonic()
            log.info("collecting the gallery: %s", text)
