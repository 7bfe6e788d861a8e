"""Measure the gallery check's artwork rule (`hxhbot.engine.artworks`) against sets whose file names and SOURCES.csv say
which pictures are cuts or copies of one source (`training.data.source_groups`), and write a results table.

python -m training.artwork_rule --data DIR [DIR ...] [--characters 40] [--name artworks]

Protocol. For each set, up to `--characters` of its characters (a seeded shuffle), every pair of one character's
pictures is judged by the engine's rule (`one_artwork`: SIFT keypoints at `SIDE` pixels, Lowe's ratio test, matches
agreeing on one move-and-scale by RANSAC) at several counts of agreeing matches; a pair is of one source when
`training.data.source_groups` joins them. Reported: the share of one-source pairs found at each count, the share of
two-source pairs joined, and, at the engine's `SAME_ARTWORK` with pairs chained as the check chains them, the sources
of two or more pictures kept whole and the pictures put with another source.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

from hxhbot.engine import artworks
from training.calibrate import labelled
from training.data import source_groups
from training.results import publish

COUNTS = (8, 10, 12, 15, 20)  # agreeing matches tried
PROTOCOL = " ".join(__doc__.split("Protocol. ", 1)[1].split())
COLUMNS = [
    "set",
    "characters",
    "pictures",
    "pairs of one source",
    "pairs of two sources",
    *(f"at {count}: one source found / two joined" for count in COUNTS),
    f"chained at {artworks.SAME_ARTWORK}: sources kept whole",
    f"chained at {artworks.SAME_ARTWORK}: pictures put with another source",
]


def measure(data: Path, characters: int) -> list:
    """One table row: the rule against `data`'s source groups."""
    paths, labels = labelled([data])
    by_character: dict[str, list[str]] = {}
    for path, label in zip(paths, labels):
        by_character.setdefault(label, []).append(path)
    names = sorted(by_character)
    random.Random(0).shuffle(names)
    matches, same, kept, groups, misplaced, pictures = [], [], 0, 0, 0, 0
    for name in names[:characters]:
        own = sorted(by_character[name])
        source = {path: number for number, group in enumerate(source_groups(own)) for path in group}
        found = [artworks.keypoints(path) for path in own]
        for a in range(len(own)):
            for b in range(a):
                matches.append(artworks.agreeing_matches(found[b], found[a]))  # as `one_artwork` orders them
                same.append(source[own[a]] == source[own[b]])
        artwork = np.array(artworks.artworks(own, [name] * len(own)))
        truth = np.array([source[path] for path in own])
        for number in set(truth):
            if (truth == number).sum() > 1:
                groups += 1
                kept += len(set(artwork[truth == number])) == 1
        misplaced += sum(int((artwork == work).sum()) for work in set(artwork) if len(set(truth[artwork == work])) > 1)
        pictures += len(own)
    found_pairs, joined = np.array(matches), np.array(same)
    return [
        data.name,
        min(characters, len(names)),
        pictures,
        int(joined.sum()),
        int((~joined).sum()),
        *(
            f"{np.mean(found_pairs[joined] >= count):.3f} / {np.mean(found_pairs[~joined] >= count):.4f}"
            for count in COUNTS
        ),
        f"{kept} of {groups}",
        f"{misplaced} of {pictures}",
    ]


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.artwork_rule", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="character folders with known sources")
    parser.add_argument("--characters", type=int, default=40, help="characters per set at most")
    parser.add_argument("--name", default="artworks", help="writes docs/results/confidence-NAME.json")
    parser.add_argument("--out", type=Path, default=Path("docs/results"), help="folder of the results file")
    args = parser.parse_args(argv)
    if args.characters < 1:
        parser.error("--characters must be at least 1")
    rows = []
    for data in args.data:
        if not labelled([data])[0]:
            parser.error(f"{data} holds no character folders with pictures")
        rows.append(measure(data, args.characters))
        print(json.dumps(dict(zip(COLUMNS, rows[-1])), ensure_ascii=False), file=sys.stderr, flush=True)
    title = "The gallery check's artwork rule against known sources"
    publish(args.out, f"confidence-{args.name}", "training.artwork_rule", argv, title, PROTOCOL, COLUMNS, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
