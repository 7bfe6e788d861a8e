"""Measure owner training: galleries drawn from shared sets, the one command on each, both models on new pictures.

python -m training.owner_protocol --start DIR [--focus DIR] --others DIR --count N --sizes 8 25 --splits 3
                                  --work DIR --json docs/results/NAME.json [--cache DIR]

Per split (seeded): every character of `--focus` and `--count` of `--others` (drawn once, seed 0, among those with at
least `--min-pictures`) form the pool; each character's gallery is `size` of its pictures (whole sources,
`training.data.make_split`), its other pictures are the queries. The gallery is linked into `--work`, the one owner
command (`training.owner.train_owner`) trains on it from `--start`, and the starting and the kept model each rank
every query among all the gallery's characters as the index ranks them (with `--cache`, the views' embeddings come
from their cached bottom maps through the model's top: the engine's views and weights, rounding aside); named = the
model's own calibrated confidence at the threshold the bot would name from: fitted to the gallery's answers to itself
as every index build fits it (`hxhbot.engine.gallery_check`; the shipped 0.97 for a gallery too small to fit), or
CONFIDENCE_THRESHOLD.
One row per split, size, group (focus, others) and model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from hxhbot.config import load_settings  # noqa: E402
from hxhbot.engine.confidence import Calibration  # noqa: E402
from hxhbot.engine.detector import FaceDetector  # noqa: E402
from hxhbot.engine.embedder import Embedder  # noqa: E402
from hxhbot.engine.fitted_threshold import fit_threshold, in_force  # noqa: E402
from hxhbot.engine.gallery import scan_gallery  # noqa: E402
from hxhbot.engine.gallery_check import answer_gallery  # noqa: E402
from hxhbot.engine.index import Comparison, GalleryIndex, GalleryItem  # noqa: E402
from hxhbot.engine.model_dir import load_model_dir, read_config, trained_pictures  # noqa: E402
from training.data import make_split  # noqa: E402
from training.evaluate import embed_pictures  # noqa: E402
from training.metrics import bot_answers, view_similarities  # noqa: E402
from training.owner import TopOfMaps, train_owner  # noqa: E402
from training.progress import ProgressBar  # noqa: E402
from training.view_cache import ViewCache  # noqa: E402

COLUMNS = ["split", "gallery", "characters", "group", "model", "queries", "top-1", "threshold", "named",
           "right when named", "kept", "held-out top-1 start → trained", "minutes"]  # fmt: skip


def pool(focus: Path | None, others: list[Path], count: int, least: int, root: Path) -> Path:
    """Link every character of `focus` and `count` of the `others` folders' (seeded) into one folder; return it."""
    files = [file for folder in others for file in scan_gallery(folder)[0]]
    sizes: dict[str, int] = {}
    for file in files:
        sizes[file.character] = sizes.get(file.character, 0) + 1
    chosen = sorted(name for name, size in sizes.items() if size >= least)
    random.Random(0).shuffle(chosen)
    if len(chosen) < count:
        raise SystemExit(f"--others have {len(chosen)} characters with {least} pictures or more, not {count}")
    wanted = set(chosen[:count])
    linked = [file for file in files if file.character in wanted]
    linked += scan_gallery(focus)[0] if focus else []
    for file in linked:
        target = root / file.character / file.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(file.path.resolve())
    return root


Embed = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]  # paths → (unit vectors of their views, view's picture)


def embedding(model_dir: Path, detector: FaceDetector, cache: Path | None) -> Embed:
    """The model's views of pictures: through the engine (`Embedder`), or with `cache` from the frozen bottom's
    cached maps of the same views (`training.view_cache`) through the model's top, which only differs in rounding."""
    if cache is None:
        embedder = Embedder.load(model_dir)
        return lambda paths: embed_pictures(embedder, paths, detector)
    model, _ = load_model_dir(model_dir)
    views, top = ViewCache(cache, model.get_layer("features"), detector), TopOfMaps(model)

    def embed(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        cached = views.views(paths)
        return top.embed(cached.maps), cached.owners

    return embed


def answers(
    model_dir: Path, embed: Embed, gallery: list[str], labels: list[str], queries: list[str], asked: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per query: whether the model ranks its character first, whether it names it confidently, and whether right;
    and the threshold it names from (fitted to the gallery as every index build fits it, or CONFIDENCE_THRESHOLD)."""
    calibration = Calibration.load(model_dir)
    gallery_vectors, gallery_owner = embed(gallery)
    query_vectors, query_owner = embed(queries)
    names = np.array(labels)
    comparison = Comparison.fit(gallery_vectors, names[gallery_owner])
    per_view = view_similarities(
        comparison.apply(query_vectors), query_owner, comparison.apply(gallery_vectors), gallery_owner, names
    )
    classes = np.unique(names)
    best = np.stack([views.max(axis=0) for views in per_view])
    first = classes[best.argmax(axis=1)] == np.array(asked)
    probability, right = bot_answers(per_view, classes, asked, calibration)
    items = [
        GalleryItem(labels[owner], gallery[owner], hashlib.sha256(gallery[owner].encode()).hexdigest(), view)
        for owner, view in zip(gallery_owner, _view_numbers(gallery_owner))
    ]
    index = GalleryIndex.build(gallery_vectors, items, read_config(model_dir).fingerprint)
    threshold = in_force(
        fit_threshold(answer_gallery(index, calibration, trained_pictures(model_dir)).for_fit()),
        load_settings().confidence_threshold,
    )
    return first, probability >= threshold, right, threshold


def _view_numbers(owner: np.ndarray) -> list[int]:
    """Each row's view number within its picture (0: the whole frame), rows of one picture being consecutive."""
    starts = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
    return [int(n) for n in np.arange(len(owner)) - np.repeat(starts, np.diff(np.r_[starts, len(owner)]))]


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.owner_protocol", description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=Path, required=True, help="the model the owner's would start from")
    parser.add_argument("--focus", type=Path, help="a folder all of whose characters are in every gallery")
    parser.add_argument("--others", type=Path, nargs="+", required=True, help="folders the others are drawn from")
    parser.add_argument("--count", type=int, required=True, help="characters drawn from --others")
    parser.add_argument("--min-pictures", type=int, default=10, help="pictures a drawn character has at least")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8], help="gallery pictures per character")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--work", type=Path, required=True, help="galleries (links) and trained models go here")
    parser.add_argument("--json", type=Path, required=True, help="the result file (docs/results/NAME.json)")
    parser.add_argument("--title", default="Owner training: the starting and the kept model on new pictures")
    parser.add_argument("--cache", type=Path, help="the views' bottom maps (training.view_cache), kept across runs "
                        "and used to embed the queries as well (default: through the engine)")  # fmt: skip
    parser.add_argument("--time-only", action="store_true", help="time the one command; ask no queries")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    folder = pool(args.focus, args.others, args.count, args.min_pictures, args.work / "pool")
    focus = {file.character for file in scan_gallery(args.focus)[0]} if args.focus else set()
    detector, rows = FaceDetector(), []
    for size in args.sizes:
        for seed in range(args.splits):
            split = make_split(folder, unseen=1.0, gallery_size=size, seed=seed)
            gallery_dir = args.work / f"gallery-{size}-{seed}"
            for character, paths in split.gallery.items():
                (gallery_dir / character).mkdir(parents=True, exist_ok=True)
                for path in paths:
                    link = gallery_dir / character / Path(path).name
                    if not link.exists():
                        link.symlink_to(Path(path).resolve())
            out = args.work / f"model-{size}-{seed}"
            summary = train_owner(gallery_dir, out, args.start, progress=ProgressBar(), seed=seed, cache=args.cache)
            print(summary.describe(), flush=True)
            gallery = [p for c in sorted(split.gallery) for p in split.gallery[c]]
            labels = [c for c in sorted(split.gallery) for _ in split.gallery[c]]
            if args.time_only:
                rows.append([seed, size, len(split.gallery), f"{sum(map(len, split.gallery.values()))} pictures", "–",
                             0, "–", "–", "–", "–", summary.kept,
                             f"{summary.start_top1:.3f} → {summary.trained_top1:.3f} ({summary.held_out})",
                             round(summary.seconds / 60, 1)])  # fmt: skip
                _write(args, argv, rows)
                continue
            queries = [p for c in sorted(split.query) for p in split.query[c]]
            asked = [c for c in sorted(split.query) for _ in split.query[c]]
            in_focus = np.array([c in focus for c in asked])
            for model, directory in (("start", args.start), ("kept", out)):
                embed = embedding(directory, detector, args.cache)
                first, named, right, threshold = answers(directory, embed, gallery, labels, queries, asked)
                for group, rows_of in (("focus", in_focus), ("others", ~in_focus)):
                    if not rows_of.any():
                        continue
                    sure = named & rows_of
                    name = args.focus.name if group == "focus" and args.focus else "others"
                    rows.append([
                        seed, size, len(split.gallery), name,
                        model if model == "start" else f"kept ({summary.kept})", int(rows_of.sum()),
                        round(float(first[rows_of].mean()), 3), threshold, round(float(sure.sum() / rows_of.sum()), 3),
                        round(float(right[sure].mean()), 3) if sure.any() else "–", summary.kept,
                        f"{summary.start_top1:.3f} → {summary.trained_top1:.3f} ({summary.held_out})",
                        round(summary.seconds / 60, 1),
                    ])  # fmt: skip
            _write(args, argv, rows)
    return 0


def _write(args: argparse.Namespace, argv: list[str] | None, rows: list[list]) -> None:
    """The result file so far (rewritten after every run: an interrupted measurement keeps what it finished)."""
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "title": args.title,
        "command": "python -m training.owner_protocol " + " ".join(sys.argv[1:] if argv is None else argv),
        "protocol": __doc__.split("\n\n", 2)[2].replace("\n", " ").strip(),
        "date": date.today().isoformat(), "columns": COLUMNS, "rows": rows,
    }, indent=1, ensure_ascii=False) + "\n")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
