"""Gallery folder → embeddings → a new index renamed into place; the old one survives any failure."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hxhbot.engine.crops import load_views
from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.embedder import Embedder
from hxhbot.engine.fitted_threshold import store
from hxhbot.engine.gallery import GalleryError, GalleryFile, scan_gallery
from hxhbot.engine.gallery_check import GalleryCheck
from hxhbot.engine.images import (
    DEFAULT_MAX_PIXELS,
    TRUSTED_DECODE_BYTES,
    TRUSTED_MAX_BYTES,
    ImageError,
    read_image_file,
)
from hxhbot.engine.index import GalleryIndex, GalleryIndexError, GalleryItem
from hxhbot.engine.index_lock import index_writer
from hxhbot.wording import counted, first_few

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
DECODE_THREADS = 2  # gallery pictures decoded and searched for faces in parallel, the model embeds meanwhile
CHUNK = 32  # pictures decoded ahead of the model: bounds the memory of a build
FEW_PICTURES = (
    8  # a character with fewer gallery pictures ranks less well (training/README.md: More pictures per character)
)


@dataclass
class BuildSummary:
    """What an index build did."""

    characters: int = 0
    images: int = 0
    reused: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    check: GalleryCheck | None = None
    few: dict[str, int] = field(default_factory=dict)  # characters with fewer than FEW_PICTURES images, fewest first

    def describe(self) -> str:
        """One line for people."""
        line = (
            f"{counted(self.characters, 'character')}, {counted(self.images, 'image')}, "
            f"{len(self.skipped)} skipped, {self.seconds:.1f} s"
        )
        if self.few:
            named = first_few([f"{name} ({count})" for name, count in self.few.items()])
            line += f"; fewer than {FEW_PICTURES} images (more would rank them better): {named}"
        return f"{line}; {self.check.describe()}" if self.check else line


def build_gallery_index(
    gallery_dir: str | Path,
    embedder: Embedder,
    index_dir: str | Path,
    *,
    batch_size: int = 64,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
    detector: FaceDetector | None = None,
    check: Callable[[GalleryIndex], GalleryCheck] | None = None,
) -> tuple[GalleryIndex, BuildSummary]:
    """Embed every view of every readable gallery image, `check` the index (the threshold fitted to it is saved with
    it) and save it; unreadable files are skipped."""
    with index_writer(index_dir):  # one writer at a time: a second build is refused, the index left as it is
        return _build_gallery_index(gallery_dir, embedder, index_dir, batch_size, max_pixels, progress, detector, check)


def _build_gallery_index(
    gallery_dir: str | Path,
    embedder: Embedder,
    index_dir: str | Path,
    batch_size: int,
    max_pixels: int,
    progress: Progress | None,
    detector: FaceDetector | None,
    check: Callable[[GalleryIndex], GalleryCheck] | None,
) -> tuple[GalleryIndex, BuildSummary]:
    """`build_gallery_index` under the writer lock."""
    started = time.perf_counter()
    files, skipped = scan_gallery(gallery_dir)
    summary = BuildSummary(skipped=[(str(path), reason) for path, reason in skipped])
    known = _previous_vectors(index_dir, embedder.fingerprint)
    items: list[GalleryItem] = []
    vectors: list[np.ndarray] = []
    pending: list[tuple[GalleryItem, np.ndarray]] = []

    def flush() -> None:
        if pending:
            embedded = embedder.embed(np.concatenate([arrays for _, arrays in pending]))
            for item, arrays in pending:
                items.extend(GalleryItem(item.character, item.path, item.sha256, view) for view in range(len(arrays)))
                vectors.extend(embedded[: len(arrays)])
                embedded = embedded[len(arrays) :]
            pending.clear()

    def prepare(file: GalleryFile) -> tuple[GalleryItem, np.ndarray | None]:
        """Read and checksum a file; decode its views unless its embeddings can be reused."""
        data = read_image_file(file.path, TRUSTED_MAX_BYTES)
        item = GalleryItem(file.character, str(file.path), hashlib.sha256(data).hexdigest())
        if item.sha256 in known:
            return item, None
        return item, load_views(
            data,
            embedder.input_size,
            detector,
            max_bytes=TRUSTED_MAX_BYTES,
            max_pixels=max_pixels,
            max_decode_bytes=TRUSTED_DECODE_BYTES,
        ).arrays

    def attempt(file: GalleryFile) -> tuple[GalleryItem, np.ndarray | None] | Exception:
        try:
            return prepare(file)
        except (OSError, ImageError) as error:
            return error

    with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="hxhbot-index-decode") as pool:
        for start in range(0, len(files), CHUNK):
            chunk = files[start : start + CHUNK]
            for done, (file, result) in enumerate(zip(chunk, pool.map(attempt, chunk)), start + 1):
                if isinstance(result, Exception):
                    summary.skipped.append((str(file.path), str(result)))
                    log.warning("skipped %s: %s", file.path, result)
                elif result[1] is None:
                    item = result[0]
                    for view, vector in enumerate(known[item.sha256]):
                        items.append(GalleryItem(item.character, item.path, item.sha256, view))
                        vectors.append(vector)
                    summary.reused += 1
                else:
                    pending.append((result[0], result[1]))
                if sum(len(arrays) for _, arrays in pending) >= batch_size:
                    flush()
                if progress:
                    progress(done, len(files))
    flush()
    if not items:
        raise GalleryError(f"The gallery {gallery_dir} has no readable images: nothing to index.")
    index = GalleryIndex.build(np.stack(vectors), items, embedder.fingerprint)
    summary.check = check(index) if check else None
    if summary.check and summary.check.confidence:
        store(index.meta, summary.check.confidence)  # saved with the index: the threshold it answers at
    index.save(index_dir)
    summary.images = sum(item.view == 0 for item in items)
    counts = index.characters()
    summary.characters = len(counts)
    summary.few = {
        name: count for name, count in sorted(counts.items(), key=lambda pair: pair[1]) if count < FEW_PICTURES
    }
    summary.seconds = time.perf_counter() - started
    log.info("indexed %s", summary.describe())
    return index, summary


def _previous_vectors(index_dir: str | Path, fingerprint: str) -> dict[str, list[np.ndarray]]:
    """The view embeddings of every image of the current index by checksum, when the same model built it."""
    try:
        previous = GalleryIndex.load(index_dir, fingerprint)
    except GalleryIndexError:
        return {}
    known: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(previous), 4096):  # a block at a time: one pass over the comparison per block
        rows = range(start, min(start + 4096, len(previous)))
        for row, vector in zip(rows, previous.vectors(rows)):
            views = known.setdefault(previous.items[row].sha256, [])
            if previous.items[row].view == len(views):  # the same bytes twice in the gallery: their views once
                views.append(vector)
    return known
