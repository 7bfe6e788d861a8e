"""Training data: splits by character and by image, decoded arrays, P×K batches, augmentation."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_addons as tfa

from hxhbot.gallery import scan_gallery
from hxhbot.images import ImageError, load_image_file


@dataclass(frozen=True)
class Split:
    """Which characters are seen in training, and which images are gallery, query or validation.

    Training uses the seen characters' `train` images, minus `val` (held out for checkpointing).
    Evaluation ranks each character group's `query` images against that group's gallery: the `train`
    images for seen characters, the `gallery` images for unseen ones (never trained on).
    """

    seed: int
    seen: list[str]
    unseen: list[str]
    train: dict[str, list[str]]
    val: dict[str, list[str]]
    gallery: dict[str, list[str]]
    query: dict[str, list[str]]

    def save(self, path: str | Path) -> None:
        """Write the split as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        """Read a split written by `save`."""
        return cls(**json.loads(Path(path).read_text()))

    def training_images(self) -> tuple[list[str], list[str]]:
        """Paths and labels of the images the model learns from (validation excluded)."""
        return _flatten({c: [p for p in self.train[c] if p not in set(self.val[c])] for c in self.seen})

    def validation_images(self) -> tuple[list[str], list[str]]:
        """Held-out seen images, ranked against the training images for checkpointing."""
        return _flatten({c: self.val[c] for c in self.seen})

    def evaluation(self, group: str) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
        """((gallery paths, labels), (query paths, labels)) for 'seen' or 'unseen' characters."""
        names = self.seen if group == "seen" else self.unseen
        gallery = self.train if group == "seen" else self.gallery
        return _flatten({c: gallery[c] for c in names}), _flatten({c: self.query[c] for c in names})


def make_split(data_dir: str | Path, unseen: int | float = 0.4, query: float = 1 / 3, val: float = 0.2,
               seed: int = 0) -> Split:
    """Split a gallery folder by character (seen/unseen) and by image (train or gallery/query/val), seeded."""
    files, _ = scan_gallery(data_dir)
    by_character: dict[str, list[str]] = {}
    for file in files:
        by_character.setdefault(file.character, []).append(str(file.path))
    rng = random.Random(seed)
    names = sorted(by_character)
    rng.shuffle(names)
    count = unseen if isinstance(unseen, int) else round(len(names) * unseen)
    unseen_names, seen_names = sorted(names[:count]), sorted(names[count:])
    train, valid, gallery, queries = {}, {}, {}, {}
    for name in sorted(by_character):
        paths = sorted(by_character[name])
        rng.shuffle(paths)
        cut = max(1, round(len(paths) * query))
        queries[name], rest = sorted(paths[:cut]), sorted(paths[cut:])
        if name in seen_names:
            train[name] = rest
            valid[name] = sorted(rest[: max(1, round(len(rest) * val))])
        else:
            gallery[name] = rest
    return Split(seed, seen_names, unseen_names, train, valid, gallery, queries)


def load_arrays(paths: list[str], size: int) -> np.ndarray:
    """Decode images with the engine's loader (the serving path), in parallel threads."""

    def one(path: str) -> np.ndarray:
        try:
            return load_image_file(path, size)
        except (OSError, ImageError) as error:
            raise ValueError(f"{path}: {error}") from error

    with ThreadPoolExecutor(4) as pool:
        return np.stack(list(pool.map(one, paths))) if paths else np.zeros((0, size, size, 3), np.float32)


def encode_labels(labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Integer labels and the class names they index."""
    names = sorted(set(labels))
    index = {name: number for number, name in enumerate(names)}
    return np.array([index[label] for label in labels], np.int32), names


def pk_batches(labels: np.ndarray, p: int, k: int, seed: int = 0):
    """Endless index batches of `p` classes × `k` images each (sampling with replacement when short)."""
    rng = np.random.default_rng(seed)
    by_class = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    classes = np.array(sorted(by_class))
    while True:
        chosen = rng.choice(classes, size=min(p, len(classes)), replace=False)
        yield np.concatenate([
            rng.choice(by_class[c], size=k, replace=len(by_class[c]) < k) for c in chosen
        ])


def augment(images: tf.Tensor, seed: int | None = None) -> tf.Tensor:
    """Drawings and screenshots: random resized crop, flip, colour jitter, slight rotation (0–255 in/out)."""
    size = tf.shape(images)[1]
    batch = tf.shape(images)[0]
    scale = tf.random.uniform([batch], 0.75, 1.0, seed=seed)
    offset = tf.random.uniform([batch, 2], 0.0, 1.0, seed=seed) * (1.0 - scale[:, None])
    boxes = tf.concat([offset, offset + scale[:, None]], axis=1)
    images = tf.image.crop_and_resize(images, boxes, tf.range(batch), tf.stack([size, size]))
    images = tf.image.random_flip_left_right(images, seed=seed)
    images = tf.image.random_brightness(images, 25.0, seed=seed)
    images = tf.image.random_contrast(images, 0.8, 1.2, seed=seed)
    grey = tf.reduce_mean(images, axis=-1, keepdims=True)
    saturation = tf.random.uniform([batch, 1, 1, 1], 0.7, 1.3, seed=seed)
    images = grey + (images - grey) * saturation
    angles = tf.random.uniform([batch], -0.17, 0.17, seed=seed)  # about ±10°
    images = tfa.image.rotate(images, angles, fill_mode="nearest")
    return tf.clip_by_value(images, 0.0, 255.0)


def _flatten(groups: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """{label: paths} → (paths, labels)."""
    paths = [path for name in sorted(groups) for path in groups[name]]
    labels = [name for name in sorted(groups) for _ in groups[name]]
    return paths, labels
