"""Evaluate a model directory on whole pictures: each query ranked against all its folder's characters' galleries.

python -m training.evaluate --model DIR --data DIR [DIR ...] [--split FILE] --json OUT [--sheet PNG]
                            [--baseline-weights imagenet|none] [--part model|features|shape|colour]
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from hxhbot.config import load_settings  # noqa: E402
from hxhbot.engine.confidence import DEFAULT, Calibration  # noqa: E402
from hxhbot.engine.crops import load_views  # noqa: E402
from hxhbot.engine.detector import FaceDetector  # noqa: E402
from hxhbot.engine.embedder import Embedder  # noqa: E402
from hxhbot.engine.fitted_threshold import in_force  # noqa: E402
from hxhbot.engine.images import TRUSTED_DECODE_BYTES, TRUSTED_MAX_BYTES, ImageError, read_image_file  # noqa: E402
from hxhbot.engine.index import Comparison  # noqa: E402
from hxhbot.engine.model_dir import PRETRAINED_INPUT_SIZE, build_pretrained, load_model_dir  # noqa: E402
from training.data import Split  # noqa: E402
from training.metrics import bot_answers, picture_similarity, retrieval_figures, view_similarities  # noqa: E402

GROUPS = ("seen", "unseen")
PARTS = {"shape": "shape_normalise", "colour": "colour_normalise"}  # the hunter's two frozen descriptions
CHUNK = 64  # pictures decoded and embedded at a time


def embed_pictures(
    embedder: Embedder, paths: list[str], detector: FaceDetector | None
) -> tuple[np.ndarray, np.ndarray]:
    """Every view of every picture through the engine's own path: (unit vectors, index of each one's picture)."""

    def views(path: str) -> np.ndarray:
        try:
            return load_views(
                read_image_file(path, TRUSTED_MAX_BYTES),
                embedder.input_size,
                detector,
                max_bytes=TRUSTED_MAX_BYTES,
                max_decode_bytes=TRUSTED_DECODE_BYTES,
            ).arrays
        except (OSError, ImageError) as error:
            raise ValueError(f"{path}: {error}") from error

    vectors, owners = [np.zeros((0, embedder.dim), np.float32)], [np.zeros(0, int)]
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(paths), CHUNK):
            arrays = list(pool.map(views, paths[start : start + CHUNK]))
            vectors.append(embedder.embed(np.concatenate(arrays)))
            owners.append(np.concatenate([np.full(len(a), start + n) for n, a in enumerate(arrays)]))
    return np.concatenate(vectors), np.concatenate(owners)


def evaluate(
    embedder: Embedder,
    split: Split,
    folder: str | Path | None = None,
    threshold: float | None = None,
    detector: FaceDetector | None = None,
    calibration: Calibration = DEFAULT,
) -> dict:
    """Figures per group (seen, unseen) for the queries of `folder`, ranked against the gallery of all its characters.

    "sure" and "right" are the bot's behaviour: its calibrated confidence against `threshold` (CONFIDENCE_THRESHOLD).
    """
    threshold = in_force(None, load_settings().confidence_threshold) if threshold is None else threshold
    (gallery_paths, gallery_labels), queries = split.evaluation(folder)
    gallery, gallery_owner = embed_pictures(embedder, gallery_paths, detector)
    comparison = Comparison.fit(gallery, np.array(gallery_labels)[gallery_owner])  # as the index compares
    gallery = comparison.apply(gallery)
    report = {}
    for group in GROUPS:
        query_paths, query_labels = queries[group]
        if not query_paths:
            continue
        vectors, owner = embed_pictures(embedder, query_paths, detector)
        vectors = comparison.apply(vectors)
        similarity = picture_similarity(vectors, owner, gallery, gallery_owner)
        labels = np.array(gallery_labels)
        per_view = view_similarities(vectors, owner, gallery, gallery_owner, labels)
        answers = bot_answers(per_view, np.unique(labels), query_labels, calibration)
        figures = retrieval_figures(per_view, similarity, labels, np.array(query_labels), threshold, answers)
        figures["ranks"] = [
            {"query": path, "character": label, "rank": int(rank)}
            for path, label, rank in zip(query_paths, query_labels, figures.pop("_ranks"))
        ]
        figures["_retrieval"] = (gallery_paths, gallery_labels, query_paths, query_labels, similarity)
        report[group] = figures
    return report


def model_part(model: tf.keras.Model, part: str) -> tf.keras.Model:
    """`model` itself, its frozen `features` sub-model, or one of the hunter's descriptions ('shape', 'colour')."""
    if part == "model":
        return model
    features = model.get_layer("features")
    if part == "features":
        return (
            tf.keras.Model(features.input, tf.keras.layers.GlobalAveragePooling2D()(features.output))
            if len(features.output_shape) == 4
            else features
        )
    return tf.keras.Model(features.input, features.get_layer(PARTS[part]).output)


def contact_sheet(report: dict, path: Path, rows_per_group: int = 6, cell: int = 72) -> None:
    """Query, then its top-5 gallery images; green frames are the right character, red the wrong one."""
    rows = []
    for group in report:
        gallery_paths, gallery_labels, query_paths, query_labels, similarity = report[group]["_retrieval"]
        picks = np.unique(np.linspace(0, len(query_paths) - 1, rows_per_group).astype(int))
        for row in picks:
            top = np.argsort(-similarity[row])[:5]
            rows.append(
                (group, query_paths[row], [(gallery_paths[i], gallery_labels[i] == query_labels[row]) for i in top])
            )
    sheet = Image.new("RGB", (cell * 6 + 70, cell * max(1, len(rows))), "white")
    draw = ImageDraw.Draw(sheet)
    for y, (group, query, matches) in enumerate(rows):
        draw.text((4, y * cell + cell // 2 - 6), group, fill="black")
        for x, (image_path, right) in enumerate([(query, None)] + matches):
            with Image.open(image_path) as image:
                tile = image.convert("RGB").resize((cell - 6, cell - 6))
            left = 70 + x * cell
            colour = "black" if right is None else ("#2e9e43" if right else "#d03030")
            draw.rectangle([left, y * cell, left + cell - 1, y * cell + cell - 1], fill=colour)
            sheet.paste(tile, (left + 3, y * cell + 3))
    sheet.save(path)


def summary_row(report: dict) -> dict:
    """The headline figures of a report."""
    keys = ("queries", "top1", "top5", "map@r", "confident", "confident_top1")
    return {group: {key: round(report[group][key], 3) for key in keys} for group in report}


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="the folders to evaluate on, each separately (they must be in the split)",
    )
    parser.add_argument("--split", type=Path, help="default: the split.json in the model directory")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--sheet", type=Path, help="contact sheet PNG (default: beside the JSON)")
    parser.add_argument("--baseline-weights", default="imagenet", help="'none' for an untrained baseline")
    parser.add_argument("--no-faces", action="store_true", help="describe pictures by the whole frame only")
    parser.add_argument(
        "--part",
        choices=("model", "features", *PARTS),
        default="model",
        help="evaluate only this part of the model (features: the frozen part before the head)",
    )
    args = parser.parse_args(argv)
    split_file = args.split or args.model / "split.json"
    if not split_file.is_file():
        parser.error(f"no split file at {split_file}: pass --split")
    split = Split.load(split_file)
    threshold = in_force(None, load_settings().confidence_threshold)
    embedder = Embedder.load(args.model)  # ranks as the bot does: through the model's TensorFlow Lite copy
    if args.part != "model":
        model, config = load_model_dir(args.model)
        try:
            part = model_part(model, args.part)
        except ValueError:
            parser.error(f"the {config.variant} model in {args.model} has no {args.part} part")
        embedder = Embedder.from_model(part, f"{config.variant}:{args.part}")
    weights = None if args.baseline_weights == "none" else args.baseline_weights
    baseline_embedder = Embedder.from_model(build_pretrained(PRETRAINED_INPUT_SIZE, weights), "pretrained")
    detector = None if args.no_faces else FaceDetector()
    result: dict = {"model": str(args.model), "part": args.part, "split": str(split_file), "faces": not args.no_faces}
    print(f"{'':24}{'queries':>8}{'top-1':>7}{'top-5':>7}{'mAP@R':>7}{'sure':>7}{'right':>7}")
    for folder in args.data:
        if not split.characters_of(folder):
            parser.error(f"{folder} is not one of the split's folders: {sorted(set(split.folders.values()))}")
        report = evaluate(embedder, split, folder, threshold, detector, Calibration.load(args.model))
        baseline = evaluate(baseline_embedder, split, folder, threshold, detector)
        contact_sheet(report, args.sheet or args.json.with_name(f"{args.json.stem}-{folder.name}.png"))
        result[str(folder)] = {"model_figures": _public(report), "pretrained_baseline": _public(baseline)}
        for name, figures in (("model", report), ("baseline", baseline)):
            for group, row in summary_row(figures).items():
                print(
                    f"{folder.name[:12]:<12} {name[:4]} {group:<6}"
                    + "".join(f"{row[key]:8d}" if key == "queries" else f"{row[key]:7.3f}" for key in row)
                )
        print("per character (top-1):", json.dumps({g: report[g]["per_character"] for g in report}))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"sure: share of queries answered with confidence (score ≥ {threshold}); right: top-1 among those")
    return 0


def _public(report: dict) -> dict:
    """A report without its working arrays."""
    return {
        group: {key: value for key, value in figures.items() if not key.startswith("_")}
        for group, figures in report.items()
    }


if __name__ == "__main__":
    raise SystemExit(main())
