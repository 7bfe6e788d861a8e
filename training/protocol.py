"""The protocol for characters nobody trained on: held-out identities, seeded galleries, ranked as the bot ranks.

python -m training.protocol split --data DIR ... --held-out DIR ... --validation 45 --out runs/protocol
python -m training.protocol evaluate --model DIR [DIR ...] --splits runs/protocol --json FILE [--result FILE]
                                    [--cache runs/view-cache]

`split` draws the validation identities (never trained on, `--validation` of them from the folders not held out,
spread over their series in proportion) and writes `--splits` seeded splits that share the same unseen characters
and differ in which pictures make each one's gallery (whole sources only) and which are queries; split 0 is the
one models train on (`training.train --split`). `evaluate` embeds every unseen character's pictures once per model
through the engine's path (with `--cache`, a tuned model's views from their cached bottom maps, cut as the engine
cuts them: no picture decoded twice) and ranks the queries of each split as the bot's index ranks them:

- `validation`: the validation characters among themselves (model choices are made on this one);
- per held-out folder, its characters among themselves (hxh-dev's 9: the figure of before), and
  `<folder> + validation`: its characters among themselves and every validation character.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hxhbot.engine.detector import FaceDetector  # noqa: E402
from hxhbot.engine.embedder import Embedder  # noqa: E402
from hxhbot.engine.index import Comparison  # noqa: E402
from hxhbot.engine.model_dir import PRETRAINED_INPUT_SIZE, build_pretrained, load_model_dir, read_config  # noqa: E402
from training.data import Split, make_split, scan_characters, series_of, source_groups  # noqa: E402
from training.evaluate import embed_pictures  # noqa: E402
from training.metrics import picture_similarity, retrieval_figures, view_similarities  # noqa: E402
from training.view_cache import ViewCache  # noqa: E402

log = logging.getLogger("training.protocol")
VALIDATION_SIZE = 45
GALLERY_SIZE = 8
MIN_PICTURES = 11  # a validation character needs a gallery of 8 and queries beyond it
MIN_SOURCES = 4  # ... from this many sources at least, so that no source is on both sides
ACROSS = " + validation"  # a held-out folder's characters ranked among every validation character too
VALIDATION = "validation"
CACHED_VARIANTS = ("tuned", "tuned+imagenet")  # models whose frozen bottom, `features`, the view cache holds
VAL = 0.05  # of a trained character's pictures kept from training to follow its recall (the tuned top averages epochs)


def validation_identities(folders: list[Path], count: int = VALIDATION_SIZE, seed: int = 0) -> list[str]:
    """`count` characters of `folders` with enough pictures and sources, spread over their series.

    Seats go one at a time to the series with the most eligible characters per seat it holds (D'Hondt), no
    series holding more than a fifth of them (Genshin Impact alone has 38); the characters are drawn within
    each series, seeded.
    """
    rng = random.Random(seed)
    by_series: dict[str, list[str]] = defaultdict(list)
    for folder in folders:
        for name, paths in sorted(scan_characters(folder).items()):
            if len(paths) >= MIN_PICTURES and len(source_groups(paths)) >= MIN_SOURCES:
                by_series[series_of(name)].append(name)
    cap = max(1, count // 5)
    if sum(min(cap, len(names)) for names in by_series.values()) < count:
        raise ValueError(
            f"too few characters of {', '.join(map(str, folders))} have {MIN_PICTURES} pictures from "
            f"{MIN_SOURCES} sources for {count} validation characters, at most {cap} a series"
        )
    tiebreak = {series: rng.random() for series in sorted(by_series)}
    seats = dict.fromkeys(by_series, 0)
    for _ in range(count):
        open_ = [series for series in seats if seats[series] < min(cap, len(by_series[series]))]
        chosen = max(open_, key=lambda series: (len(by_series[series]) / (seats[series] + 1), tiebreak[series]))
        seats[chosen] += 1
    return sorted(name for series in sorted(seats) for name in rng.sample(sorted(by_series[series]), seats[series]))


def protocol_splits(
    data: list[Path], held_out: list[Path], count: int = VALIDATION_SIZE, splits: int = 3, seed: int = 0
) -> tuple[list[Split], list[str]]:
    """`splits` seeded splits of `data` (all characters trained on but the held-out folders' and the validation
    ones) and the validation characters, drawn from the folders not held out."""
    held = {str(Path(folder)) for folder in held_out}
    validation = validation_identities([f for f in data if str(Path(f)) not in held], count, seed)
    return [
        make_split(
            data,
            0,
            gallery_size=GALLERY_SIZE,
            query=0.0,
            val=VAL,
            seed=seed + n,
            held_out=held_out,
            unseen_characters=validation,
        )
        for n in range(splits)
    ], validation


def rankings(split: Split, validation: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Each ranking of the protocol: (characters in its gallery, characters whose queries are asked)."""
    held = sorted({split.folders[name] for name in split.unseen if name not in set(validation)})
    out = {VALIDATION: (validation, validation)}
    for folder in held:
        own = split.characters_of(folder)
        out[Path(folder).name] = (own, own)
        out[f"{Path(folder).name}{ACROSS}"] = (own + validation, own)
    return out


def rank(
    vectors: np.ndarray,
    owners: np.ndarray,
    paths: list[str],
    split: Split,
    gallery_names: list[str],
    query_names: list[str],
) -> dict:
    """Top-1, top-5, mAP@R and per character of `query_names`' queries among `gallery_names`' galleries, as the
    index ranks: the comparison fitted on the gallery, each character by its two closest pictures."""
    row_of = {path: number for number, path in enumerate(paths)}

    def pick(pictures: dict[str, list[str]], names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        listed = [(path, name) for name in names for path in pictures[name]]
        rows = np.concatenate([np.flatnonzero(owners == row_of[path]) for path, _ in listed])
        return vectors[rows], owners[rows], [name for _, name in listed]

    gallery, gallery_owner, gallery_labels = pick(split.gallery, gallery_names)
    queries, query_owner, query_labels = pick(split.query, query_names)
    gallery_owner, query_owner = _in_order(gallery_owner), _in_order(query_owner)
    comparison = Comparison.fit(gallery, np.array(gallery_labels)[gallery_owner])
    gallery, queries = comparison.apply(gallery), comparison.apply(queries)
    labels = np.array(gallery_labels)
    per_view = view_similarities(queries, query_owner, gallery, gallery_owner, labels)
    similarity = picture_similarity(queries, query_owner, gallery, gallery_owner)
    nothing = (np.zeros(len(query_labels)), np.zeros(len(query_labels), bool))  # no confidence here
    figures = retrieval_figures(per_view, similarity, labels, np.array(query_labels), 1.0, nothing)
    keys = ("queries", "characters", "top1", "top5", "map@r", "per_character")
    return {
        **{key: figures[key] for key in keys},
        "gallery_pictures": int(np.mean([len(split.gallery[name]) for name in gallery_names]) * 1000) / 1000,
    }


def _in_order(owners: np.ndarray) -> np.ndarray:
    """Picture numbers 0, 1, 2 … in the order the pictures' rows come (each picture's rows are together)."""
    return np.cumsum(np.r_[True, owners[1:] != owners[:-1]]) - 1 if len(owners) else owners


def embed_cached(model: tf.keras.Model, paths: list[str], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every clean view of every picture through a loaded tuned model's layers after its frozen bottom, from the
    bottom's maps in the view `cache` (computing the missing ones): (unit vectors, index of each one's picture)."""
    features = model.get_layer("features")
    top = tf.keras.Model(features.get_output_at(-1), model.output)  # a loaded model calls each part once
    views = ViewCache(cache, features).views(paths)
    call = tf.function(lambda maps: top(maps, training=False), reduce_retracing=True)
    blocks = [
        call(tf.constant(views.maps[i : i + 256].astype(np.float32))).numpy() for i in range(0, len(views.maps), 256)
    ]
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, int(model.output_shape[-1])), np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12), views.owners


def evaluate_model(
    embed: Callable[[list[str]], tuple[np.ndarray, np.ndarray]], splits: list[Split], validation: list[str]
) -> dict[str, list[dict]]:
    """Per ranking, the figures of every split: each picture embedded once by `embed` (paths → unit vectors of
    every view, index of each one's picture), then ranked split by split."""
    unseen = sorted(splits[0].unseen)
    paths = sorted({path for split in splits for name in unseen for path in split.gallery[name] + split.query[name]})
    vectors, owners = embed(paths)
    report: dict[str, list[dict]] = defaultdict(list)
    for split in splits:
        for name, (gallery_names, query_names) in rankings(split, validation).items():
            report[name].append(rank(vectors, owners, paths, split, gallery_names, query_names))
    return dict(report)


def result_rows(models: dict[str, dict[str, list[dict]]], rankings: list[str] | None = None) -> list[list]:
    """One row per model and ranking (of `rankings`, when given): characters, queries, top-1 mean and per split,
    top-5 and mAP@R means."""
    rows = []
    for model, report in models.items():
        for ranking, figures in report.items():
            if rankings and ranking not in rankings:
                continue
            top1 = [f["top1"] for f in figures]
            rows.append(
                [
                    Path(model).name,
                    ranking,
                    figures[0]["characters"],
                    sum(f["queries"] for f in figures),
                    round(float(np.mean(top1)), 3),
                    " / ".join(f"{t:.3f}" for t in top1),
                    round(float(np.mean([f["top5"] for f in figures])), 3),
                    round(float(np.mean([f["map@r"] for f in figures])), 3),
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.protocol", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    split = commands.add_parser("split", help="draw the validation characters and write the seeded splits")
    split.add_argument("--data", type=Path, nargs="+", required=True, help="every folder of the pool")
    split.add_argument("--held-out", type=Path, nargs="+", default=[], help="folders none of whose characters train")
    split.add_argument("--validation", type=int, default=VALIDATION_SIZE, help="validation characters to draw")
    split.add_argument("--splits", type=int, default=3)
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", type=Path, required=True)
    evaluate = commands.add_parser("evaluate", help="rank every split's queries with each model")
    evaluate.add_argument(
        "--model", type=Path, nargs="+", required=True, help="model directories ('pretrained': raw ImageNet features)"
    )
    evaluate.add_argument("--splits", type=Path, required=True, help="the folder `split` wrote")
    evaluate.add_argument("--json", type=Path, required=True, help="every figure, per split and character")
    evaluate.add_argument("--result", type=Path, help="the docs/results table to write")
    evaluate.add_argument("--command", default="", help="the command to name in --result")
    evaluate.add_argument("--title", default="Characters never trained on, ranked as the bot ranks them")
    evaluate.add_argument("--rankings", nargs="+", help="the rankings --result shows (default: all)")
    evaluate.add_argument(
        "--cache", type=Path, help="view cache (training.train --cache): tuned models embed from its maps"
    )
    evaluate.add_argument(
        "--previous",
        type=Path,
        nargs="+",
        default=[],
        help="--json files of earlier runs: their models are not ranked again",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "split":
        for folder in args.data:
            if not folder.is_dir():
                parser.error(f"--data {folder} is not a folder")
        try:
            splits, validation = protocol_splits(args.data, args.held_out, args.validation, args.splits, args.seed)
        except ValueError as error:
            parser.error(str(error))
        args.out.mkdir(parents=True, exist_ok=True)
        for number, one in enumerate(splits):
            one.save(args.out / f"split-{number}.json")
        (args.out / "validation.json").write_text(json.dumps(validation, indent=1, ensure_ascii=False) + "\n")
        series = sorted({series_of(name) for name in validation})
        print(f"{len(validation)} validation characters from {len(series)} series; {len(splits)} splits in {args.out}")
        return 0
    files = sorted(args.splits.glob("split-*.json"))
    if not files or not (args.splits / "validation.json").is_file():
        parser.error(f"{args.splits} holds no split-N.json and validation.json: run `split` first")
    splits = [Split.load(file) for file in files]
    validation = json.loads((args.splits / "validation.json").read_text())
    detector, reports, earlier = FaceDetector(), {}, {}
    for previous in args.previous:
        done = json.loads(previous.read_text())
        if done.get("splits") != [str(f) for f in files]:
            parser.error(f"{previous} ranked other splits: {done.get('splits')}")
        earlier.update(done["models"])
    for model in args.model:
        if str(model) in earlier:
            reports[str(model)] = earlier[str(model)]
            continue
        if str(model) == "pretrained":
            pretrained = Embedder.from_model(build_pretrained(PRETRAINED_INPUT_SIZE), "pretrained")
            embed = partial(embed_pictures, pretrained, detector=detector)
        elif not (model / "config.json").is_file():
            parser.error(f"--model {model} is not a model directory (no config.json)")
        else:
            trained = set(json.loads((model / "config.json").read_text()).get("trained_on", []))
            if trained & set(splits[0].unseen):
                parser.error(
                    f"{model} trained on characters the protocol holds out: "
                    f"{', '.join(sorted(trained & set(splits[0].unseen))[:5])}"
                )
            if args.cache and read_config(model).variant in CACHED_VARIANTS:
                embed = partial(embed_cached, load_model_dir(model)[0], cache=args.cache)
            else:
                embed = partial(embed_pictures, Embedder.load(model), detector=detector)
        reports[str(model)] = evaluate_model(embed, splits, validation)
        for row in result_rows({str(model): reports[str(model)]}):
            print(" | ".join(map(str, row)), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"splits": [str(f) for f in files], "models": reports}, indent=1) + "\n")
    if args.result:
        args.result.parent.mkdir(parents=True, exist_ok=True)
        args.result.write_text(
            json.dumps(
                {
                    "title": args.title,
                    "command": args.command or "python -m training.protocol evaluate " + " ".join(argv or []),
                    "protocol": (
                        f"{len(validation)} validation characters and the held-out folders' characters, never trained "
                        f"on; {GALLERY_SIZE} gallery pictures each (whole sources), every other picture a query; "
                        f"{len(files)} seeded gallery/query splits; top-1 and top-5 character, mAP@R over gallery "
                        "pictures"
                    ),
                    "date": date.today().isoformat(),
                    "columns": [
                        "model",
                        "ranking",
                        "characters",
                        "queries (all splits)",
                        "top-1",
                        "top-1 per split",
                        "top-5",
                        "mAP@R",
                    ],
                    "rows": result_rows(reports, args.rankings),
                },
                indent=1,
                ensure_ascii=False,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
