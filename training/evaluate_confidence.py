"""Measure the per-gallery confidence fit on a set that took no part in fitting anything, and write a results table.

python -m training.evaluate_confidence --model DIR --data DIR --negatives DIR --name NAME
                                       [--characters 1 5 20 0] [--pictures 2 4 8] [--draws 3] [--cache DIR]

Protocol. For each gallery shape (`--characters`: 1, 5, 20 and all (0) of the set's characters; `--pictures` per
character) and each seeded draw, the set's characters with more pictures than that are shuffled and take turns
(at most 10 galleries per draw and shape: `ROTATIONS`); a character's gallery pictures are drawn from its shuffled
source groups (`training.data.source_groups`), and a group the gallery took any picture from is never asked. The
index is built as the engine builds it, and its threshold fitted by the engine's own gallery check
(`hxhbot.engine.gallery_check`: artworks kept in one fold by `hxhbot.engine.artworks`, judged once per pair and
cached; pictures the model trained on never asked); nothing else is fitted here. Queries: the gallery characters' other
pictures (known), every picture of the set's other characters (missing from the gallery), and the half of the
negatives that `training.calibrate` never fits on; never a picture the model trained on (its split.json). Each is
answered as the bot answers it (`training.metrics.bot_answers`): named when its most confident answer reaches the
threshold, right when that answer is its character. Counts are pooled over draws and galleries. The same answers at
the former fixed threshold, 0.7 (`FORMER`), are given beside them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from hxhbot.engine import artworks  # noqa: E402
from hxhbot.engine.confidence import Calibration  # noqa: E402
from hxhbot.engine.detector import FaceDetector  # noqa: E402
from hxhbot.engine.embedder import Embedder  # noqa: E402
from hxhbot.engine.fitted_threshold import fit_threshold  # noqa: E402
from hxhbot.engine.gallery import picture_key  # noqa: E402
from hxhbot.engine.gallery_check import answer_gallery  # noqa: E402
from hxhbot.engine.index import GalleryIndex, GalleryItem  # noqa: E402
from hxhbot.engine.model_dir import trained_pictures  # noqa: E402
from training.calibrate import Pictures, embed_set, labelled, negatives_halves  # noqa: E402
from training.data import source_groups  # noqa: E402
from training.metrics import bot_answers  # noqa: E402
from training.results import publish  # noqa: E402

ROTATIONS = 10  # galleries per draw and shape at most
PROTOCOL = " ".join(__doc__.split("Protocol. ", 1)[1].split())  # for the results file
FORMER = 0.7  # the fixed CONFIDENCE_THRESHOLD before the per-gallery fit
COLUMNS = [
    "characters",
    "pictures each",
    "galleries",
    "fitted (share of galleries)",
    "threshold (median)",
    "known answers",
    "named",
    "right when named",
    "missing answers",
    "missing named",
    "photographs named",
    f"at {FORMER}: right when named",
    f"at {FORMER}: missing named",
    f"at {FORMER}: photographs named",
]


@dataclass
class Tally:
    """Answers pooled over one gallery shape's galleries."""

    galleries: int = 0
    fitted: int = 0
    thresholds: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, value: int) -> None:
        """Count `value` more under `key`."""
        self.counts[key] = self.counts.get(key, 0) + int(value)

    def share(self, part: str, whole: str) -> float | str:
        """`part` of `whole` as a share ("–" when there is none)."""
        whole_count = self.counts.get(whole, 0)
        return round(self.counts.get(part, 0) / whole_count, 4) if whole_count else "–"


class ArtworkJudge:
    """Which pictures of one character of the set are one artwork (`hxhbot.engine.artworks.one_artwork`), judged once
    per pair for every gallery drawn and kept in the cache; the gallery check asks it as it would ask the pixels."""

    def __init__(self, pictures: Pictures, cache: Path) -> None:
        rule = [artworks.SIDE, artworks.KEYPOINTS, artworks.RATIO, artworks.SHIFT, artworks.SAME_ARTWORK]
        key = hashlib.sha256(json.dumps([rule, pictures.paths]).encode()).hexdigest()[:16]
        file = cache / f"artworks-{key}.json"
        if file.is_file():
            pairs = json.loads(file.read_text())
        else:
            by_character: dict[str, list[str]] = {}
            for path, label in zip(pictures.paths, pictures.labels):
                by_character.setdefault(str(label), []).append(path)
            pairs = []
            for paths in by_character.values():
                same = artworks.one_artwork(paths)
                pairs += [[paths[a], paths[b]] for a in range(len(paths)) for b in range(a) if same(a, b)]
            cache.mkdir(parents=True, exist_ok=True)
            file.write_text(json.dumps(pairs))
        self.joined = {frozenset(pair) for pair in pairs}

    def __call__(self, paths: list[str]) -> Callable[[int, int], bool]:
        """As `one_artwork`: whether two of `paths` are one artwork."""
        return lambda first, second: frozenset((paths[first], paths[second])) in self.joined


class Answering:
    """One embedded set, its characters' source groups, and the negatives: galleries drawn from it and answered."""

    def __init__(
        self,
        pictures: Pictures,
        negatives: Pictures,
        calibration: Calibration,
        fingerprint: str,
        trained: frozenset[str],
        judge: ArtworkJudge,
    ) -> None:
        self.pictures, self.negatives, self.calibration, self.fingerprint = (
            pictures,
            negatives,
            calibration,
            fingerprint,
        )
        self.number = {path: n for n, path in enumerate(pictures.paths)}
        self.trained, self.judge = trained, judge
        self.asked = {path for path in pictures.paths if picture_key(path) not in trained}
        by_character: dict[str, list[str]] = {}
        for path, label in zip(pictures.paths, pictures.labels):
            by_character.setdefault(str(label), []).append(path)
        self.groups = {name: source_groups(sorted(paths)) for name, paths in by_character.items()}

    def draw(self, each: int, seed: int) -> dict[str, tuple[list[str], list[str]]]:
        """Per character with more than `each` pictures: `each` gallery pictures and the pictures it may be asked."""
        rng = random.Random(seed)
        drawn = {}
        for name in sorted(self.groups):
            groups = [list(group) for group in self.groups[name]]
            if sum(len(group) for group in groups) <= each:
                continue
            rng.shuffle(groups)
            gallery: list[str] = []
            untouched: list[str] = []
            for group in groups:
                if len(gallery) < each:
                    rng.shuffle(group)
                    gallery += group[: each - len(gallery)]  # the rest of a group drawn from is never asked
                else:
                    untouched += group
            drawn[name] = (sorted(gallery), sorted(untouched))
        return drawn

    def gallery_answers(self, chosen: list[str], drawn: dict[str, tuple[list[str], list[str]]], tally: Tally) -> None:
        """Build the index of `chosen` characters' gallery pictures, fit it, answer the queries, count."""
        columns, items = [], []
        for name in sorted(chosen):
            for path in drawn[name][0]:
                views = self.pictures.views(self.number[path])
                key = hashlib.sha256(path.encode()).hexdigest()
                columns.append(views)
                items += [GalleryItem(name, path, key, view) for view in range(len(views))]
        index = GalleryIndex.build(self.pictures.vectors[np.concatenate(columns)], items, self.fingerprint)
        answers = answer_gallery(index, self.calibration, self.trained, self.judge)
        fit = fit_threshold(answers.for_fit())  # as every index build fits it
        tally.galleries += 1
        tally.fitted += fit.fitted
        tally.thresholds.append(fit.threshold)
        known = [p for name in chosen for p in drawn[name][1] if p in self.asked]
        missing = [
            p for name in drawn if name not in chosen for p in drawn[name][0] + drawn[name][1] if p in self.asked
        ]
        for group, paths in (("known", known), ("missing", missing)):
            self._count(
                index,
                self.pictures,
                [self.number[p] for p in paths],
                [self.pictures.labels[self.number[p]] for p in paths],
                group,
                fit.threshold,
                tally,
            )
        self._count(
            index,
            self.negatives,
            list(range(len(self.negatives.paths))),
            [None] * len(self.negatives.paths),
            "negative",
            fit.threshold,
            tally,
        )

    def _count(
        self,
        index: GalleryIndex,
        pictures: Pictures,
        numbers: list[int],
        labels: list,
        group: str,
        threshold: float,
        tally: Tally,
    ) -> None:
        """Answer some pictures against the index as the bot does, and count them at `threshold` and at `FORMER`."""
        if not numbers:
            return
        rows = [pictures.views(number) for number in numbers]
        per_view = index.similarities(pictures.vectors[np.concatenate(rows)]).per_view
        split = np.split(per_view, np.cumsum([len(r) for r in rows])[:-1])
        probability, right = bot_answers(split, np.array(index.names), labels, self.calibration)
        tally.add(group, len(numbers))
        for suffix, at in (("", threshold), ("_former", FORMER)):
            named = probability >= at
            tally.add(f"{group}_named{suffix}", named.sum())
            tally.add(f"{group}_right{suffix}", (named & right).sum())


def galleries(names: list[str], count: int, seed: int) -> list[list[str]]:
    """`count` of the shuffled `names` at a time, in turns (at most `ROTATIONS`); all of them once when `count` is
    all."""
    names = list(names)
    random.Random(seed).shuffle(names)
    if count >= len(names):
        return [names]
    return [(names[turn:] + names[:turn])[:count] for turn in range(0, len(names), count)][:ROTATIONS]


def row(characters: int, each: int, tally: Tally) -> list:
    """One table row for a gallery shape."""
    return [
        characters,
        each,
        tally.galleries,
        round(tally.fitted / max(tally.galleries, 1), 2),
        round(float(np.median(tally.thresholds)), 3),
        tally.counts.get("known", 0),
        tally.share("known_named", "known"),
        tally.share("known_right", "known_named"),
        tally.counts.get("missing", 0),
        tally.share("missing_named", "missing"),
        tally.share("negative_named", "negative"),
        tally.share("known_right_former", "known_named_former"),
        tally.share("missing_named_former", "missing"),
        tally.share("negative_named_former", "negative"),
    ]


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.evaluate_confidence", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model directory (empty: raw ImageNet features)")
    parser.add_argument("--data", type=Path, required=True, help="character folders to measure on")
    parser.add_argument("--negatives", type=Path, required=True, help="pictures of no character (the check half)")
    parser.add_argument("--name", required=True, help="writes docs/results/confidence-NAME.json")
    parser.add_argument("--characters", type=int, nargs="+", default=[1, 5, 20, 0], help="gallery sizes (0: all)")
    parser.add_argument("--pictures", type=int, nargs="+", default=[2, 4, 8], help="gallery pictures per character")
    parser.add_argument("--draws", type=int, default=3, help="seeded draws per gallery shape")
    parser.add_argument("--cache", type=Path, default=Path("runs/calibrate-cache"), help="embeddings cache")
    parser.add_argument("--out", type=Path, default=Path("docs/results"), help="folder of the results file")
    args = parser.parse_args(argv)
    if any(size < 0 for size in args.characters) or any(each < 1 for each in args.pictures) or args.draws < 1:
        parser.error("--characters must be 0 (all) or more, --pictures and --draws at least 1")
    embedder = Embedder.load(args.model)
    calibration = Calibration.load(args.model)
    detector = FaceDetector()
    paths, labels = labelled([args.data])
    if not paths:
        parser.error(f"{args.data} holds no character folders with pictures")
    negative_paths = negatives_halves(args.negatives)[1]
    pictures = embed_set(embedder, detector, paths, labels, args.cache)
    negatives = embed_set(embedder, detector, negative_paths, [None] * len(negative_paths), args.cache)
    judge = ArtworkJudge(pictures, args.cache)
    answering = Answering(pictures, negatives, calibration, embedder.fingerprint, trained_pictures(args.model), judge)
    rows = []
    for each in args.pictures:
        drawn = [answering.draw(each, seed) for seed in range(args.draws)]
        eligible = len(drawn[0])
        for size in args.characters:
            count = eligible if size == 0 else size
            if count > eligible or (size and size == eligible and 0 in args.characters):
                continue  # not enough characters, or the same as "all"
            tally = Tally()
            for seed, characters in enumerate(drawn):
                for chosen in galleries(sorted(characters), count, seed):
                    answering.gallery_answers(chosen, characters, tally)
            rows.append(row(count, each, tally))
            print(json.dumps(dict(zip(COLUMNS, rows[-1])), ensure_ascii=False), file=sys.stderr, flush=True)
    title = f"Confidence fitted per gallery: {args.data.name}, model {embedder.config.variant} ({embedder.fingerprint})"
    program = "training.evaluate_confidence"
    publish(args.out, f"confidence-{args.name}", program, argv, title, PROTOCOL, COLUMNS, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
