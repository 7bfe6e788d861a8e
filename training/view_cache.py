"""The frozen bottom's maps of every training view, computed once and kept on disk (float16).

A view is what the model sees of a picture: the clean views as the engine cuts them (whole frame, then up to
`faces` detected faces) and augmented ones. Augmentation round r gives one augmented whole frame and, on even
rounds, one augmented crop per face (4 rounds: 4 frames and 2 per face, as training always took). Each entry is
one file under `root/<bottom fingerprint>/<picture checksum[:2]>/`, named by the picture's checksum and the view
set ('clean', or the augmentation version, seed and round), written atomically: an interrupted fill resumes,
and every run whose bottom, pictures and augmentation match reads the same files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from hxhbot.engine.crops import DETAIL, picture_views
from hxhbot.engine.detector import DECODE_SIDE, Box, FaceDetector
from hxhbot.engine.images import TRUSTED_DECODE_BYTES, TRUSTED_MAX_BYTES, ImageError, decode_image, read_image_file
from training.data import augmented_view

log = logging.getLogger("training.view_cache")
AUGMENTATION = "a1"  # the version of `augmented_view`: change it when augmentation changes, and no stale view is read
CHUNK = 32  # pictures decoded and run through the bottom at a time


@dataclass(frozen=True)
class CachedViews:
    """Bottom maps of views (float16, rows grouped by picture in the order asked) and what each row is."""

    maps: np.ndarray  # (views, height, width, channels) float16
    owners: np.ndarray  # per row, the index of its picture in the paths asked
    clean: np.ndarray  # per row, whether it is a view as the engine cuts it (False: augmented)
    whole: np.ndarray  # per row, whether it is the picture's clean whole frame


def picture_checksum(path: str | Path) -> str:
    """SHA-256 of the file's bytes (the same picture under another name or folder is the same entry)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bottom_fingerprint(bottom: tf.keras.Model) -> str:
    """A short hash of the bottom's input and output shapes and weights: maps of another bottom are never read."""
    digest = hashlib.sha256(f"{bottom.input_shape}->{bottom.output_shape}".encode())
    for weights in bottom.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()[:16]


def augmentation_rng(checksum: str, seed: int, round_: int) -> random.Random:
    """The random source of one augmentation round of one picture: the same whatever else is being trained."""
    return random.Random(
        int(hashlib.sha256(f"{AUGMENTATION}:{checksum}:{seed}:{round_}".encode()).hexdigest()[:16], 16)
    )


class ViewCache:
    """Bottom maps of pictures' views, kept on disk under `root`, one folder per bottom fingerprint."""

    def __init__(
        self,
        root: str | Path,
        bottom: tf.keras.Model,
        detector: FaceDetector | None = None,
        faces: int = 2,
        batch: int = 64,
    ) -> None:
        self.bottom, self.faces, self.batch = bottom, faces, batch
        self.detector = detector or FaceDetector()
        self.size = int(bottom.input_shape[1])
        self.fingerprint = bottom_fingerprint(bottom)
        self.root = Path(root) / self.fingerprint
        self._call = tf.function(lambda x: bottom(x, training=False), reduce_retracing=True)

    def entry(self, checksum: str, kind: str) -> Path:
        """The file of one picture's view set: kind 'clean' or `augmented_kind(seed, round)`."""
        return self.root / checksum[:2] / f"{checksum}-{kind}-f{self.faces}.npy"

    def views(self, paths: list[str], rounds: int = 0, seed: int = 0) -> CachedViews:
        """Every picture's clean views and `rounds` augmentation rounds (seeded), computing what is missing first."""
        checksums = self._checksums(paths)
        kinds = ["clean"] + [augmented_kind(seed, r) for r in range(rounds)]
        self.fill(paths, checksums, kinds, seed)
        files = [
            (number, kind, np.load(self.entry(checksum, kind), mmap_mode="r"))
            for number, checksum in enumerate(checksums)
            for kind in kinds
        ]
        total = sum(len(rows) for _, _, rows in files)
        maps = np.empty((total, *self.bottom.output_shape[1:]), np.float16)  # filled in place: no second copy
        owners, clean, whole = np.empty(total, int), np.empty(total, bool), np.empty(total, bool)
        start = 0
        for number, kind, rows in files:
            end = start + len(rows)
            maps[start:end], owners[start:end], clean[start:end] = rows, number, kind == "clean"
            whole[start:end] = (np.arange(len(rows)) == 0) & (kind == "clean")
            start = end
        return CachedViews(maps, owners, clean, whole)

    def fill(self, paths: list[str], checksums: list[str], kinds: list[str], seed: int) -> None:
        """Compute and write the missing view sets, a chunk of pictures at a time, logging progress and time left."""
        missing = [
            n for n, checksum in enumerate(checksums) if not all(self.entry(checksum, kind).is_file() for kind in kinds)
        ]
        if not missing:
            return
        log.info("bottom maps: %d of %d pictures to compute (%s)", len(missing), len(paths), self.root)
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            for done in range(0, len(missing), CHUNK):
                chunk = missing[done : done + CHUNK]
                views = list(pool.map(lambda n: self._cut(paths[n], checksums[n], kinds, seed), chunk))
                arrays = [array for per_kind in views for array in per_kind.values()]
                maps = self._bottom(np.concatenate(arrays))
                start = 0
                for number, per_kind in zip(chunk, views):
                    for kind, array in per_kind.items():
                        _save(self.entry(checksums[number], kind), maps[start : start + len(array)])
                        start += len(array)
                finished = done + len(chunk)
                elapsed = time.perf_counter() - started
                log.info(
                    "bottom maps: %d/%d pictures, %.0f s, about %.0f s left",
                    finished,
                    len(missing),
                    elapsed,
                    elapsed / finished * (len(missing) - finished),
                )

    def _cut(self, path: str, checksum: str, kinds: list[str], seed: int) -> dict[str, np.ndarray]:
        """The missing view sets of one picture as 0–255 arrays, by kind."""
        try:
            picture = decode_image(
                read_image_file(path, TRUSTED_MAX_BYTES),
                max_bytes=TRUSTED_MAX_BYTES,
                max_decode_bytes=TRUSTED_DECODE_BYTES,
                draft_size=max(DETAIL * self.size, DECODE_SIDE),
            )
        except (OSError, ImageError) as error:
            raise ValueError(f"{path}: {error}") from error
        boxes: list[Box] = self.detector.detect(picture)[: self.faces]
        cut = {}
        for kind in kinds:
            if self.entry(checksum, kind).is_file():
                continue
            if kind == "clean":
                cut[kind] = picture_views(picture, boxes, self.size)
                continue
            round_ = int(kind.rsplit("-r", 1)[1])
            rng = augmentation_rng(checksum, seed, round_)
            crops = [None] + (boxes if round_ % 2 == 0 else [])
            cut[kind] = np.stack([augmented_view(picture, box, self.size, rng) for box in crops])
        return cut

    def _bottom(self, arrays: np.ndarray) -> np.ndarray:
        """The bottom's maps of 0–255 arrays, batched, as float16."""
        return np.concatenate(
            [
                self._call(tf.constant(arrays[i : i + self.batch])).numpy().astype(np.float16)
                for i in range(0, len(arrays), self.batch)
            ]
        )

    def _checksums(self, paths: list[str]) -> list[str]:
        """Each picture's checksum, read in parallel threads."""
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(picture_checksum, paths))


def augmented_kind(seed: int, round_: int) -> str:
    """The name of an augmentation round's view set: augmentation version, seed and round."""
    return f"{AUGMENTATION}-s{seed}-r{round_}"


def _save(path: Path, array: np.ndarray) -> None:
    """Write an array atomically (a temporary file renamed), so that an interrupted fill leaves no torn entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as file:
        np.save(file, array)
    os.replace(partial, path)
