"""Training data: splits by character and by image, decoded arrays, P×K batches, augmentation."""

from __future__ import annotations

import csv
import functools
import json
import random
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_addons as tfa
from PIL import Image, ImageEnhance, ImageOps

from hxhbot.engine.detector import Box
from hxhbot.engine.disjoint_sets import DisjointSets
from hxhbot.engine.gallery import scan_gallery
from hxhbot.engine.images import (
    TRUSTED_DECODE_BYTES,
    TRUSTED_MAX_BYTES,
    ImageError,
    load_image_file,
    to_array,
)


@dataclass(frozen=True)
class Split:
    """Which characters are trained on, and which pictures are training, validation, gallery or query.

    Every character has a gallery (`gallery_size` pictures) and queries; the seen characters' other
    pictures, with their gallery, are what the model learns from (minus `val`, held out for
    checkpointing). Evaluation ranks each query against the galleries of every character of its
    folder, seen and unseen alike, as on a real server. No source picture has crops on both sides.
    """

    seed: int
    seen: list[str]
    unseen: list[str]
    train: dict[str, list[str]]
    val: dict[str, list[str]]
    gallery: dict[str, list[str]]
    query: dict[str, list[str]]
    folders: dict[str, str] = field(default_factory=dict)  # character → the data folder it comes from

    def save(self, path: str | Path) -> None:
        """Write the split as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a split written by `save`."""
        return cls(**json.loads(Path(path).read_text()))

    def training_images(self) -> tuple[list[str], list[str]]:
        """Paths and labels of the images the model learns from (validation excluded)."""
        return _flatten({c: [p for p in self.train[c] if p not in set(self.val[c])] for c in self.seen})

    def validation_images(self) -> tuple[list[str], list[str]]:
        """Held-out seen images, ranked against the training images for checkpointing."""
        return _flatten({c: self.val[c] for c in self.seen if self.val[c]})

    def characters_of(self, folder: str | Path | None = None) -> list[str]:
        """The characters of one data folder (all of them when `folder` is None), however its path is spelt."""
        names = sorted(self.gallery)
        if folder is None:
            return names
        wanted = Path(folder).resolve()
        return [c for c in names if c in self.folders and Path(self.folders[c]).resolve() == wanted]

    def training_only(self, folders: Sequence[str | Path]) -> Split:
        """The split without the seen characters of folders other than `folders` (its unseen ones all kept)."""
        wanted = {Path(folder).resolve() for folder in folders}
        dropped = {c for c in self.seen if c in self.folders and Path(self.folders[c]).resolve() not in wanted}

        def kept(table: dict) -> dict:
            return {name: value for name, value in table.items() if name not in dropped}

        seen = [c for c in self.seen if c not in dropped]
        return replace(
            self,
            seen=seen,
            train=kept(self.train),
            val=kept(self.val),
            gallery=kept(self.gallery),
            query=kept(self.query),
            folders=kept(self.folders),
        )

    def evaluation(
        self, folder: str | Path | None = None
    ) -> tuple[tuple[list[str], list[str]], dict[str, tuple[list[str], list[str]]]]:
        """((gallery paths, labels) of every character of `folder`, {'seen'|'unseen': (query paths, labels)})."""
        names = self.characters_of(folder)
        queries = {
            group: _flatten({c: self.query[c] for c in names if c in members})
            for group, members in (("seen", set(self.seen)), ("unseen", set(self.unseen)))
        }
        return _flatten({c: self.gallery[c] for c in names}), queries


def make_split(
    data_dirs: str | Path | list,
    unseen: int | float = 0.4,
    gallery_size: int = 8,
    query: float = 1 / 3,
    val: float = 0.2,
    seed: int = 0,
    held_out: list | tuple = (),
    unseen_characters: list | tuple = (),
) -> Split:
    """Split data folders by character (seen/unseen, per folder) and by source picture, seeded.

    Every character of a `held_out` folder is unseen: the model never trains on that folder; so is every
    character named in `unseen_characters`. One name in several folders is one character (of its first folder).
    Per character: `gallery_size` pictures form its gallery; an unseen character's other pictures are
    all queries; a seen character's other pictures give `query` of them to queries and the rest, with
    the gallery, to training. Pictures of one source (`source_groups`) always land on one side.
    """
    folders = [Path(d) for d in (data_dirs if isinstance(data_dirs, list) else [data_dirs])]
    rng = random.Random(seed)
    seen: list[str] = []
    unseen_names: list[str] = []
    owner: dict[str, str] = {}
    paths: dict[str, list[str]] = {}
    for folder in folders:
        found = scan_characters(folder)
        names = sorted(set(found) - set(owner))
        rng.shuffle(names)
        count = unseen if isinstance(unseen, int) else round(len(names) * unseen)
        count = len(names) if str(folder) in {str(Path(h)) for h in held_out} else count
        unseen_names += names[:count]
        seen += names[count:]
        for name in found:
            owner.setdefault(name, str(folder))
            paths[name] = sorted(paths.get(name, []) + found[name])
    named = set(unseen_characters) & set(seen)
    seen, unseen_names = [name for name in seen if name not in named], unseen_names + sorted(named)
    by_character = {name: source_groups(paths[name]) for name in paths}
    train, valid, gallery, queries = {}, {}, {}, {}
    for name in sorted(by_character):
        groups = by_character[name]
        rng.shuffle(groups)
        gallery[name], rest = _take(groups, gallery_size)
        if name in unseen_names:
            queries[name] = sorted(p for group in rest for p in group)
            continue
        total = sum(len(group) for group in rest)
        queries[name], extra = _take(rest, max(1, round(total * query)) if total else 0)
        train[name] = sorted(gallery[name] + [p for group in extra for p in group])
        held, _ = _take([[p] for p in train[name]], round(len(train[name]) * val) if len(train[name]) > 2 else 0)
        valid[name] = held
    return Split(seed, sorted(seen), sorted(unseen_names), train, valid, gallery, queries, owner)


def scan_characters(folder: str | Path) -> dict[str, list[str]]:
    """A gallery folder's pictures by character (sorted paths), as the gallery reads it."""
    files, _ = scan_gallery(Path(folder))
    paths: dict[str, list[str]] = {}
    for file in files:
        paths.setdefault(file.character, []).append(str(file.path))
    return {name: sorted(found) for name, found in paths.items()}


def _take(groups: list[list[str]], count: int) -> tuple[list[str], list[list[str]]]:
    """Whole groups, in order, while they fit in `count` paths (a first group always); the paths and the rest."""
    taken: list[str] = []
    rest: list[list[str]] = []
    for group in groups:
        if len(taken) < count and (not taken or len(taken) + len(group) <= count):
            taken += group
        else:
            rest.append(group)
    return sorted(taken), rest


def source_groups(paths: list[str]) -> list[list[str]]:
    """Pictures of one character grouped so that crops or copies of one source stay together.

    Joined: names that say they are crops of one file (`<name>.jpg-2.jpg`), files from one
    repository (`owner__repo__file`, the shared sets' naming), files whose source in their data folder's
    SOURCES.csv has one name (`artwork_keys`: one artwork cut at several scales), and near-identical pixels
    (a 64-bit difference hash at most 3 bits apart: recompressed or resized copies).
    """
    sets = DisjointSets(len(paths))
    first: dict[str, int] = {}
    for number, path in enumerate(paths):
        name = Path(path).name
        crop = re.match(r"(.+\.(?:jpe?g|png|webp|gif|bmp))-\d+\.\w+$", name, re.IGNORECASE)
        parts = name.split("__")
        key = crop.group(1) if crop else ("__".join(parts[:2]) if len(parts) >= 3 else None)
        artwork = artwork_keys(str(Path(path).parent.parent)).get((Path(path).parent.name, name))
        for one in (key, artwork and f"artwork:{artwork}"):
            if one is not None:
                sets.join(number, first.setdefault(one, number))
    hashes = [_difference_hash(path) for path in paths]
    for i, hash_i in enumerate(hashes):
        for j, hash_j in enumerate(hashes[:i]):
            if hash_i is not None and hash_j is not None and bin(hash_i ^ hash_j).count("1") <= 3:
                sets.join(i, j)
    groups: dict[int, list[str]] = {}
    for number, path in enumerate(paths):
        groups.setdefault(sets.root(number), []).append(path)
    return [sorted(group) for _, group in sorted(groups.items())]


@functools.lru_cache(maxsize=64)
def artwork_keys(folder: str) -> dict[tuple[str, str], str]:
    """(character, file) → the name of its source in `folder`/SOURCES.csv (none without one): the file name of
    `source_path` without extension, lower case, letters, digits and '+' only (`char_002_amiya_1+` whether cut
    as full art, portrait or avatar; `epoque#4` as `epoque4`)."""
    table = Path(folder) / "SOURCES.csv"
    if not table.is_file():
        return {}
    with open(table, newline="", encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if row.get("source_path") and row.get("file")]
    return {
        (row["character"], row["file"]): re.sub(r"[^a-z0-9+]", "", Path(row["source_path"]).stem.lower())
        for row in rows
    }


def _difference_hash(path: str) -> int | None:
    """A 64-bit difference hash of a picture's 9×8 greyscale thumbnail (None when unreadable)."""
    try:
        with Image.open(path) as image:
            image.draft("L", (64, 64))
            pixels = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    except (OSError, ValueError):
        return None
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int("".join("1" if bit else "0" for bit in bits), 2)


def load_arrays(paths: list[str], size: int) -> np.ndarray:
    """Decode images with the engine's loader (the serving path), in parallel threads."""

    def one(path: str) -> np.ndarray:
        try:
            return load_image_file(path, size, max_bytes=TRUSTED_MAX_BYTES, max_decode_bytes=TRUSTED_DECODE_BYTES)
        except (OSError, ImageError) as error:
            raise ValueError(f"{path}: {error}") from error

    with ThreadPoolExecutor(4) as pool:
        return np.stack(list(pool.map(one, paths))) if paths else np.zeros((0, size, size, 3), np.float32)


def series_of(character: str) -> str:
    """The series of a character named "Series - Character" (the shared sets' naming), else the name itself."""
    return character.split(" - ", 1)[0] if " - " in character else character


def encode_labels(labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Integer labels and the class names they index."""
    names = sorted(set(labels))
    index = {name: number for number, name in enumerate(names)}
    return np.array([index[label] for label in labels], np.int32), names


def pk_batches(labels: np.ndarray, p: int, k: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Endless index batches of `p` classes × `k` images each (sampling with replacement when short)."""
    rng = np.random.default_rng(seed)
    by_class = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    classes = np.array(sorted(by_class))
    while True:
        chosen = rng.choice(classes, size=min(p, len(classes)), replace=False)
        yield np.concatenate([rng.choice(by_class[c], size=k, replace=len(by_class[c]) < k) for c in chosen])


def augmented_view(picture: Image.Image, box: Box | None, size: int, rng: random.Random) -> np.ndarray:
    """A randomly cropped, mirrored, greyed or colour-shifted view of the picture (or of `box` in it)."""
    width, height = picture.size
    left, top, right, bottom = box.pixels(width, height) if box else (0, 0, width, height)
    w, h = right - left, bottom - top
    scale = rng.uniform(0.6, 1.0) if box is None else rng.uniform(0.8, 1.2)
    new_w, new_h = w * scale, h * scale * rng.uniform(0.85, 1.15)
    cx, cy = left + w / 2 + rng.uniform(-0.15, 0.15) * w, top + h / 2 + rng.uniform(-0.15, 0.15) * h
    x0, y0 = max(0, int(cx - new_w / 2)), max(0, int(cy - new_h / 2))
    crop = picture.crop(
        (x0, y0, max(x0 + 1, min(width, int(cx + new_w / 2))), max(y0 + 1, min(height, int(cy + new_h / 2))))
    )
    if rng.random() < 0.5:
        crop = ImageOps.mirror(crop)
    if rng.random() < 0.2:
        crop = ImageOps.grayscale(crop).convert("RGB")
    else:
        crop = ImageEnhance.Color(crop).enhance(rng.uniform(0.7, 1.3))
    crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.8, 1.2))
    return to_array(ImageEnhance.Contrast(crop).enhance(rng.uniform(0.8, 1.2)), size)


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
