"""Gallery folder → embeddings → a new index renamed into place; the old one survives any failure."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hxhbot.embedder import Embedder
from hxhbot.gallery import GalleryError, scan_gallery
from hxhbot.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, load_image
from hxhbot.index import GalleryIndex, GalleryIndexError, GalleryItem
from hxhbot.index_lock import index_writer

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass
class BuildSummary:
    """What an index build did."""

    characters: int = 0
    images: int = 0
    reused: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        """One line for people."""
        return (
            f"{self.characters} characters, {self.images} images, {len(self.skipped)} skipped, "
            f"{self.seconds:.1f} s"
        )


def build_gallery_index(
    gallery_dir: str | Path,
    embedder: Embedder,
    index_dir: str | Path,
    *,
    batch_size: int = 64,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> tuple[GalleryIndex, BuildSummary]:
    """Embed every readable gallery image and save the index; unreadable files are listed and skipped."""
    with index_writer(index_dir):  # one writer at a time: a second build is refused, the index left as it is
        return _build_gallery_index(gallery_dir, embedder, index_dir, batch_size, max_pixels, progress)


def _build_gallery_index(
    gallery_dir: str | Path, embedder: Embedder, index_dir: str | Path, batch_size: int, max_pixels: int,
    progress: Progress | None,
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
            embedded = embedder.embed(np.stack([array for _, array in pending]))
            items.extend(item for item, _ in pending)
            vectors.extend(embedded)
            pending.clear()

    for done, file in enumerate(files, 1):
        try:
            data = file.path.read_bytes()
            item = GalleryItem(file.character, str(file.path), hashlib.sha256(data).hexdigest())
            if item.sha256 in known:
                items.append(item)
                vectors.append(known[item.sha256])
                summary.reused += 1
            else:
                size = embedder.input_size
                pending.append((item, load_image(data, size, max_bytes=max(DEFAULT_MAX_BYTES, len(data)),
                                                 max_pixels=max_pixels)))
        except (OSError, ImageError) as error:
            summary.skipped.append((str(file.path), str(error)))
            log.warning("skipped %s: %s", file.path, error)
        if len(pending) >= batch_size:
            flush()
        if progress:
            progress(done, len(files))
    flush()
    if not items:
        raise GalleryError(f"The gallery {gallery_dir} has no readable images: nothing to index.")
    index = GalleryIndex.build(np.stack(vectors), items, embedder.fingerprint)
    index.save(index_dir)
    summary.images = len(items)
    summary.characters = len(index.characters())
    summary.seconds = time.perf_counter() - started
    log.info("indexed %s", summary.describe())
    return index, summary


def _previous_vectors(index_dir: str | Path, fingerprint: str) -> dict[str, np.ndarray]:
    """Embeddings of the current index by image checksum, when the same model built it."""
    try:
        previous = GalleryIndex.load(index_dir, fingerprint)
    except GalleryIndexError:
        return {}
    return {item.sha256: previous.vector(row) for row, item in enumerate(previous.items)}
