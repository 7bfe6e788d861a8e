"""The gallery index: an Annoy file of embeddings plus a JSON file saying whose they are."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from hxhbot.engine.confidence import Calibration
from hxhbot.engine.durable import sync_file, sync_folder, write_durably

META_FILE = "index.json"
NEIGHBOURS = 100  # gallery views looked at per query view when Annoy serves
NEAR_COPY = 0.95  # a gallery picture this close is a copy of the query (e.g. one approved in /review)
EXACT_MAX_BYTES = 1 << 30  # exact search while the vectors fit in 1 GiB; Annoy beyond (tests/bench/bench_index.py)
SHRINKAGE = 4.0  # `within_directions`: chosen on held-out Hunter × Hunter characters (training/README.md)
FIT_VIEWS = 20_000  # gallery views `within_directions` is fitted on, at most: ample for a 2560 × 2560 covariance
BLOCK = 4096  # gallery views compared at a time by `held_out_similarities`


class GalleryIndexError(RuntimeError):
    """An index that cannot be used; the message says why and what to do."""


class IndexMissingError(GalleryIndexError):
    """No index has been built in that directory yet."""


class IndexMismatchError(GalleryIndexError):
    """The index was built with another model than the one loaded."""


@dataclass(frozen=True)
class GalleryItem:
    """One view of a gallery image: whose it is, where it is, a checksum of its bytes, which view (0: whole)."""

    character: str
    path: str
    sha256: str
    view: int = 0


@dataclass(frozen=True)
class Neighbour:
    """A gallery image near the query, with its cosine similarity."""

    item: GalleryItem
    similarity: float


@dataclass(frozen=True)
class CharacterMatch:
    """A character ranked for a query: calibrated probability of being right, best gallery image and its similarity."""

    character: str
    score: float
    similarity: float
    image: str


@dataclass(frozen=True)
class Similarities:
    """For each view of a query, its similarity to each character of the gallery, and its closest gallery image."""

    characters: list[str]
    per_view: np.ndarray  # views × characters
    images: list[list[str]]  # views × characters: the gallery image behind each similarity

    def rank(self, views: tuple[int, ...] | list[int], calibration: Calibration, top_k: int) -> list[CharacterMatch]:
        """The `top_k` characters for some of the views, by calibrated probability."""
        rows = list(views)
        per_view = self.per_view[rows]
        if not self.characters:
            return []
        scores = calibration.probabilities(per_view)
        best_view = per_view.argmax(axis=0)
        order = np.lexsort((-per_view.max(axis=0), -scores))[:top_k]
        return [
            CharacterMatch(
                self.characters[c],
                float(scores[c]),
                float(per_view[best_view[c], c]),
                self.images[rows[best_view[c]]][c],
            )
            for c in order
        ]


def character_similarities(
    similarity: np.ndarray, picture: np.ndarray, character: np.ndarray, characters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows × characters: the mean similarity of each character's two closest gallery pictures (its closest alone
    when that one is a copy of the query, at least `NEAR_COPY`), and the column of its closest view (-1: none).

    `similarity` is rows × gallery views (-inf: left out); `picture` and `character` give each view's picture and
    character as integers (`character` below `characters`). A picture is as close as its closest view.
    """
    rows = len(similarity)
    per_character = np.full((rows, characters), -1.0)
    best = np.full((rows, characters), -1, dtype=int)
    order = np.lexsort((picture, character))
    grouped, codes = similarity[:, order], character[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(picture[order]) != 0) | (np.diff(codes) != 0)])[: len(order)]
    if not rows or not len(starts):
        return per_character, best
    closest = np.maximum.reduceat(grouped, starts, axis=1)  # rows × pictures, grouped by character
    kept = np.isfinite(closest[0])  # pictures left out are -inf in every row
    closest, picture_codes = closest[:, kept], codes[starts][kept]
    if not len(picture_codes):
        return per_character, best
    present, first_picture, pictures = np.unique(picture_codes, return_index=True, return_counts=True)
    top = np.maximum.reduceat(closest, first_picture, axis=1)
    is_top = closest == np.repeat(top, pictures, axis=1)
    second = np.maximum.reduceat(np.where(is_top, -np.inf, closest), first_picture, axis=1)
    second = np.where(np.add.reduceat(is_top, first_picture, axis=1) > 1, top, second)  # a tie for closest
    mean = np.where(pictures > 1, (top + second) / 2.0, top)
    per_character[:, present] = np.where(top >= NEAR_COPY, top, mean)
    first_view = np.asarray(np.searchsorted(codes, present))  # the closest view: the first column holding its maximum
    views = grouped[:, first_view[0] :]  # from the first character with a picture left in
    spans = np.diff(np.r_[first_view, len(order)])
    view_top = np.repeat(np.maximum.reduceat(grouped, first_view, axis=1), spans, axis=1)
    at_top = np.where(views == view_top, np.arange(first_view[0], len(order)), len(order))
    best[:, present] = order[np.minimum.reduceat(at_top, first_view - first_view[0], axis=1)]
    return per_character, best


def character_means(
    vectors: np.ndarray, characters: np.ndarray, centre: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each character's mean row (characters sorted; each row taken along row − `centre` at unit length when one is
    given), and each row's character as an index into them."""
    vectors = np.asarray(vectors)
    names, owner = np.unique(np.asarray(characters), return_inverse=True)
    means = np.zeros((len(names), vectors.shape[1]), np.float32)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(len(names) + 1))
    for code, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):  # a character at a time: no gallery copy
        rows = vectors[order[start:end]]
        means[code] = (rows if centre is None else _unit(rows - centre)).mean(axis=0, dtype=np.float64)
    return means, owner


def gallery_centre(vectors: np.ndarray, characters: np.ndarray) -> np.ndarray:
    """What a gallery's pictures share: (1 − 1/n) × the mean of its n characters' mean embeddings.

    Taken away from gallery and query embeddings alike before they are compared (`Comparison`), it removes what all
    of this gallery's pictures have in common (a series' drawing, its colours) so that what tells its characters
    apart counts. A one-character gallery has nothing to tell apart, and nothing is taken away.
    """
    means, _ = character_means(vectors, characters)
    if not len(means):
        return np.zeros(np.asarray(vectors).shape[1], np.float32)
    return ((1.0 - 1.0 / len(means)) * means.mean(axis=0, dtype=np.float64)).astype(np.float32)


def within_directions(
    vectors: np.ndarray, characters: np.ndarray, centre: np.ndarray, shrinkage: float = SHRINKAGE
) -> tuple[np.ndarray, np.ndarray]:
    """The directions in which one character's views differ from each other (rows), and how much of each to take
    away: a direction holding a share p of that variation keeps 1/sqrt(1 + p × dim / `shrinkage`) of its length.

    Within-class covariance normalisation with shrinkage, fitted on the gallery's own views (at most `FIT_VIEWS` of
    them, each along view − `centre` at unit length): what changes between pictures of one character (pose, framing,
    a manga page's grey) counts less, in a one-character gallery too. None where no character has two views.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    means, owner = character_means(vectors, characters, centre)
    if not len(means):
        return np.zeros((0, dim), np.float32), np.zeros(0, np.float32)
    rows = np.arange(0, len(vectors), -(-len(vectors) // FIT_VIEWS))
    within: np.ndarray = np.empty((len(rows), dim), np.float64 if len(rows) < dim else np.float32)
    for start in range(0, len(rows), 4096):  # a block at a time: no temporary copies of the whole sample
        block = rows[start : start + 4096]
        within[start : start + 4096] = _unit(vectors[block] - centre) - means[owner[block]]
    if len(rows) < dim:  # the smaller eigenproblem, the views' Gram matrix (2.4× faster than an SVD at 2,400 × 2,560)
        variance, mixing = np.linalg.eigh(within @ within.T)
    else:
        variance, directions = np.linalg.eigh((within.T @ within).astype(np.float64))
    kept = variance > 1e-9 * max(variance.sum(), 1e-30)
    if not kept.any():
        return np.zeros((0, dim), np.float32), np.zeros(0, np.float32)
    if len(rows) < dim:
        directions = (mixing[:, kept].T @ within) / np.sqrt(variance[kept])[:, None]  # the mixed views, unit length
    else:
        directions = directions[:, kept].T
    variance, directions = variance[kept][::-1], directions[::-1]  # strongest first
    share = variance / variance.sum()
    return directions.astype(np.float32), (1.0 - 1.0 / np.sqrt(1.0 + share * dim / shrinkage)).astype(np.float32)


@dataclass(frozen=True)
class Comparison:
    """How one gallery's embeddings are compared: about its centre, its characters' own variation damped."""

    centre: np.ndarray  # dim: `gallery_centre`
    directions: np.ndarray  # r × dim, orthonormal: `within_directions`
    damping: np.ndarray  # r, each in [0, 1): the share of each direction taken away

    @classmethod
    def fit(cls, vectors: np.ndarray, characters: np.ndarray) -> Comparison:
        """The comparison for a gallery of unit `vectors`, row i showing `characters[i]`."""
        centre = gallery_centre(vectors, characters)
        return cls(centre, *within_directions(vectors, characters, centre))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Unit vectors ready to compare: along `vectors` − centre, then damped along `directions`."""
        moved = _unit(np.atleast_2d(np.asarray(vectors, dtype=np.float32)) - self.centre)
        return _unit(moved - ((moved @ self.directions.T) * self.damping) @ self.directions)

    def undo(self, compared: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The vectors `apply` was given, from its output and each vector's length about the centre."""
        compared = np.asarray(compared, dtype=np.float32)
        moved = compared + ((compared @ self.directions.T) * (self.damping / (1.0 - self.damping))) @ self.directions
        return _unit(moved) * np.asarray(lengths, dtype=np.float32)[:, None] + self.centre


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)


def annoy_settings(size: int) -> tuple[int, int]:
    """`(n_trees, search_k)` giving recall@10 ≥ 0.99 for `size` vectors (tests/bench/bench_index.py)."""
    if size <= 20_000:
        return 4, max(4 * size, 1000)  # recall@10 1.0 at 1,800 and 20,000 (dims 1984 and 3072)
    return 64, 4 * size  # 0.996 at 50,000 and 500,000 (dim 3072); 32 trees and 2n: 0.92 (dim 1984)


class GalleryIndex:
    """Nearest gallery images and best characters for a query embedding, compared as its gallery says (`Comparison`)."""

    def __init__(
        self, annoy: AnnoyIndex, items: list[GalleryItem], meta: dict, matrix: np.ndarray | None, comparison: Comparison
    ) -> None:
        self.annoy = annoy
        self.items = items
        self.meta = meta
        self.search_k = int(meta["search_k"])
        self.comparison = comparison
        self._lengths = np.asarray(meta["lengths"], dtype=np.float32)  # |embedding − centre| per item
        self.matrix = matrix  # the compared unit vectors, row per item, when exact search serves
        self.names = sorted({item.character for item in items})
        self._column = {name: column for column, name in enumerate(self.names)}
        self._row = {item: row for row, item in enumerate(items)}
        self._character = np.array([self._column[item.character] for item in items], dtype=int)
        pictures: dict[tuple[str, str], int] = {}
        self._picture = np.array(
            [pictures.setdefault((item.character, item.sha256), len(pictures)) for item in items], dtype=int
        )

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the model that made the embeddings."""
        return self.meta["model_fingerprint"]

    @property
    def dim(self) -> int:
        """Length of the stored embeddings."""
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        items: list[GalleryItem],
        fingerprint: str,
        n_trees: int | None = None,
        search_k: int | None = None,
    ) -> GalleryIndex:
        """Build an in-memory index of `vectors`, row i belonging to `items[i]`, compared as they say (`Comparison`)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(items):
            raise ValueError(f"{len(items)} items but vectors of shape {vectors.shape}")
        vectors = _unit(vectors)
        comparison = Comparison.fit(vectors, np.array([item.character for item in items]))
        lengths = np.empty(len(vectors), np.float32)  # about the centre, to give each embedding back (`vectors`)
        for start in range(0, len(vectors), 4096):  # in place, a block at a time: no copy of the whole gallery
            block = vectors[start : start + 4096]
            lengths[start : start + 4096] = np.linalg.norm(block - comparison.centre, axis=1)
            block[:] = comparison.apply(block)
        default_trees, default_k = annoy_settings(len(items))
        n_trees = n_trees or default_trees
        annoy = AnnoyIndex(vectors.shape[1], "angular")
        for row, vector in enumerate(vectors):
            annoy.add_item(row, vector)
        annoy.build(n_trees, n_jobs=1)
        meta = {
            "model_fingerprint": fingerprint,
            "dim": int(vectors.shape[1]),
            "n_trees": n_trees,
            "search_k": search_k or default_k,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "centre": comparison.centre.tolist(),
            "damping": comparison.damping.tolist(),
            "lengths": lengths.tolist(),
        }
        return cls(annoy, list(items), meta, vectors if vectors.nbytes <= EXACT_MAX_BYTES else None, comparison)

    def extended(self, vectors: np.ndarray, items: list[GalleryItem]) -> GalleryIndex:
        """A new index of this one's rows (their embeddings reused) and `items` with `vectors`, compared anew."""
        known = self.vectors(range(len(self))).reshape(-1, self.dim)
        rows = np.concatenate([known, np.asarray(vectors, dtype=np.float32)])
        return GalleryIndex.build(rows, self.items + list(items), self.fingerprint)

    def save(self, directory: str | Path) -> None:
        """Write a new Annoy file, directions file (and vector file for exact search), flush them to disk, rename the
        metadata into place durably, then delete the files of older indexes (`sweep`); only the index's one writer
        (`index_writer`) may call it."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        name = f"index-{uuid.uuid4().hex[:12]}"
        self.annoy.save(str(out / f"{name}.ann"))  # annoy then serves from the new file, mmapped
        if self.matrix is not None:
            np.save(out / f"{name}.npy", self.matrix)
        np.save(out / f"{name}.directions.npy", self.comparison.directions)
        meta = {
            **self.meta,
            "ann_file": f"{name}.ann",
            "directions_file": f"{name}.directions.npy",
            "vectors_file": f"{name}.npy" if self.matrix is not None else None,
            "items": [asdict(item) for item in self.items],
        }
        for written in out.glob(f"{name}.*"):
            sync_file(written)
        sync_folder(out)  # the new files are on disk before index.json names them
        write_durably(out / META_FILE, json.dumps(meta, ensure_ascii=False).encode(), out / f"{META_FILE}.{name}.tmp")
        self.meta = {key: value for key, value in meta.items() if key != "items"}
        sweep(out)

    @classmethod
    def load(cls, directory: str | Path, fingerprint: str | None = None) -> GalleryIndex:
        """Memory-map a saved index, refusing one built with another model than `fingerprint`."""
        path = Path(directory) / META_FILE
        if not path.is_file():
            raise IndexMissingError(f"No index in {directory}: build one with `python -m hxhbot index`.")
        try:
            meta = json.loads(path.read_text())
            items = [GalleryItem(**item) for item in meta.pop("items")]
            annoy = AnnoyIndex(int(meta["dim"]), "angular")
            annoy.load(str(Path(directory) / meta["ann_file"]))
            vectors_file = meta["vectors_file"]
            matrix = np.load(Path(directory) / vectors_file, mmap_mode="r") if vectors_file else None
            comparison = (
                Comparison(
                    np.asarray(meta["centre"], dtype=np.float32),
                    np.load(Path(directory) / meta["directions_file"]),
                    np.asarray(meta["damping"], dtype=np.float32),
                )
                if "damping" in meta
                else None
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise GalleryIndexError(f"The index in {directory} is damaged ({error}); rebuild it.") from error
        if comparison is None or len(meta.get("lengths", ())) != len(items):
            raise GalleryIndexError(
                f"The index in {directory} was built by an earlier hxhbot, which compared "
                "embeddings otherwise; rebuild it with `python -m hxhbot index`."
            )
        damping = comparison.damping
        if comparison.directions.shape != (len(damping), meta["dim"]) or not ((damping >= 0) & (damping < 1)).all():
            raise GalleryIndexError(f"The index in {directory} is damaged (directions mismatch); rebuild it.")
        if fingerprint is not None and meta["model_fingerprint"] != fingerprint:
            raise IndexMismatchError(
                f"The index in {directory} was built with model {meta['model_fingerprint']}, "
                f"not the loaded model {fingerprint}; rebuild it with `python -m hxhbot index`."
            )
        if annoy.get_n_items() != len(items) or (matrix is not None and matrix.shape != (len(items), meta["dim"])):
            raise GalleryIndexError(f"The index in {directory} is damaged (item count mismatch); rebuild it.")
        return cls(annoy, items, meta, matrix, comparison)

    def vectors(self, rows: range | list[int] | np.ndarray) -> np.ndarray:
        """The embeddings of gallery items `rows` as they were given to `build` (unit length, not compared)."""
        picked = [int(row) for row in rows]
        if self.matrix is not None:
            stored = np.asarray(self.matrix)[picked]
        else:
            stored = np.array([self.annoy.get_item_vector(row) for row in picked], dtype=np.float32)
        return self.comparison.undo(stored.reshape(len(picked), self.dim), self._lengths[picked])

    def nearest(self, vector: np.ndarray, k: int) -> list[Neighbour]:
        """The `k` gallery images closest to `vector` as the gallery compares (`Comparison`), closest first (exact up
        to `EXACT_MAX_BYTES`)."""
        vector = self.comparison.apply(vector)[0]
        if self.matrix is not None:
            similarities = self.matrix @ vector
            rows = np.argpartition(-similarities, k - 1)[:k] if k < len(similarities) else np.arange(k)
            rows = rows[np.argsort(-similarities[rows])]
            return [Neighbour(self.items[row], float(similarities[row])) for row in rows]
        found, distances = self.annoy.get_nns_by_vector(
            np.asarray(vector, dtype=np.float32).tolist(), k, search_k=self.search_k, include_distances=True
        )
        return [Neighbour(self.items[row], 1.0 - d * d / 2.0) for row, d in zip(found, distances)]

    def similarities(self, vectors: np.ndarray) -> Similarities:
        """Each view's similarity to every character (`character_similarities`; exact while the vectors are in
        memory, else over the nearest `NEIGHBOURS` gallery views, the farthest of them standing in for the rest)."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if self.matrix is not None:
            similarity = self.comparison.apply(vectors) @ np.asarray(self.matrix).T
        else:
            similarity = np.empty((len(vectors), len(self.items)), np.float32)
            for view, vector in enumerate(vectors):
                near = self.nearest(vector, min(NEIGHBOURS, len(self.items)))
                similarity[view] = near[-1].similarity  # an upper bound for every view not among the nearest
                similarity[view, [self._row[n.item] for n in near]] = [n.similarity for n in near]
        return self._similarities(similarity, np.arange(len(self.items)))

    def held_out_similarities(self, rows: list[int]) -> Similarities:
        """Gallery items `rows` (whole pictures' views) against the gallery without them, compared as that smaller
        gallery would compare (its own `Comparison`, fitted without them): answered as pictures it never saw are."""
        kept = np.setdiff1d(np.arange(len(self.items)), rows)
        fitted = kept[:: max(1, -(-len(kept) // FIT_VIEWS))]  # as many as `within_directions` would sample
        comparison = Comparison.fit(self.vectors(fitted), self._character[fitted])
        asked = comparison.apply(self.vectors(rows))
        similarity = np.empty((len(asked), len(kept)), np.float32)
        for start in range(0, len(kept), BLOCK):  # a block of the gallery at a time
            block = kept[start : start + BLOCK]
            similarity[:, start : start + BLOCK] = asked @ comparison.apply(self.vectors(block)).T
        return self._similarities(similarity, kept)

    def _similarities(self, similarity: np.ndarray, columns: np.ndarray) -> Similarities:
        """`Similarities` from views × gallery items `columns` similarities."""
        per_view, best = character_similarities(
            similarity, self._picture[columns], self._character[columns], len(self.names)
        )
        images = [[self.items[columns[column]].path if column >= 0 else "" for column in view] for view in best]
        return Similarities(self.names, per_view, images)

    def characters(self) -> dict[str, int]:
        """Every character in the index with its number of gallery images, by name."""
        counts: dict[str, int] = {}
        for item in self.items:
            if item.view == 0:
                counts[item.character] = counts.get(item.character, 0) + 1
        return dict(sorted(counts.items(), key=lambda pair: pair[0].casefold()))


def sweep(directory: str | Path) -> None:
    """Delete what earlier saves left in an index folder: the files of older indexes and of saves killed half-way
    (`index-*` files index.json does not name, staged `index.json.*.tmp`). Only its one writer may call it."""
    folder = Path(directory)
    try:
        meta = json.loads((folder / META_FILE).read_text())
        named = {meta.get("ann_file"), meta.get("vectors_file"), meta.get("directions_file")}
    except (OSError, ValueError, AttributeError):
        named = set()  # no readable index.json: every index file is a leftover
    for path in [*folder.glob("index-*"), *folder.glob(f"{META_FILE}.*.tmp")]:
        if path.name not in named:
            path.unlink(missing_ok=True)  # a live mmap of it stays valid until closed
