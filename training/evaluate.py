"""Evaluate a model directory on seen and unseen characters, beside the pretrained baseline.

python -m training.evaluate --model DIR --data DIR [--split FILE] --json OUT [--sheet PNG] [--baseline-weights imagenet]
                            [--part model|features|shape|colour]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from hxhbot.config import load_settings  # noqa: E402
from hxhbot.embedder import Embedder  # noqa: E402
from hxhbot.model_dir import PRETRAINED_INPUT_SIZE, build_pretrained  # noqa: E402
from training.data import Split, load_arrays  # noqa: E402
from training.metrics import character_ranks, confidence_figures, retrieval_figures  # noqa: E402

GROUPS = ("seen", "unseen")
PARTS = {"shape": "shape_normalise", "colour": "colour_normalise"}  # the hunter's two frozen descriptions


def evaluate(embedder: Embedder, split: Split) -> dict:
    """Figures per character group, with a per-character top-1 table and the right character's rank per query."""
    report = {}
    for group in GROUPS:
        (gallery_paths, gallery_labels), (query_paths, query_labels) = split.evaluation(group)
        gallery = embedder.embed(load_arrays(gallery_paths, embedder.input_size))
        queries = embedder.embed(load_arrays(query_paths, embedder.input_size))
        g_labels, q_labels = np.array(gallery_labels), np.array(query_labels)
        similarity = queries @ gallery.T
        figures = retrieval_figures(gallery, g_labels, queries, q_labels)
        figures.update(confidence_figures(similarity, g_labels, q_labels, load_settings().confidence_threshold))
        ranks = character_ranks(similarity, g_labels, q_labels)
        figures["per_character"] = {
            name: round(float(np.mean(ranks[q_labels == name] == 1)), 3) for name in sorted(set(query_labels))
        }
        figures["ranks"] = [{"query": path, "character": label, "rank": int(rank)}
                            for path, label, rank in zip(query_paths, query_labels, ranks)]
        figures["_retrieval"] = (gallery_paths, gallery_labels, query_paths, query_labels, similarity)
        report[group] = figures
    return report


def model_part(model: tf.keras.Model, part: str) -> tf.keras.Model:
    """`model` itself, its frozen `features` sub-model, or one of the hunter's descriptions ('shape', 'colour')."""
    if part == "model":
        return model
    features = model.get_layer("features")
    return features if part == "features" else tf.keras.Model(features.input, features.get_layer(PARTS[part]).output)


def contact_sheet(report: dict, path: Path, rows_per_group: int = 6, cell: int = 72) -> None:
    """Query, then its top-5 gallery images; green frames are the right character, red the wrong one."""
    rows = []
    for group in GROUPS:
        gallery_paths, gallery_labels, query_paths, query_labels, similarity = report[group]["_retrieval"]
        picks = np.linspace(0, len(query_paths) - 1, rows_per_group).astype(int)
        for row in picks:
            top = np.argsort(-similarity[row])[:5]
            rows.append((group, query_paths[row], [(gallery_paths[i], gallery_labels[i] == query_labels[row])
                                                  for i in top]))
    sheet = Image.new("RGB", (cell * 6 + 70, cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for y, (group, query, matches) in enumerate(rows):
        draw.text((4, y * cell + cell // 2 - 6), group, fill="black")
        tiles = [(query, None)] + matches
        for x, (image_path, right) in enumerate(tiles):
            tile = Image.open(image_path).convert("RGB").resize((cell - 6, cell - 6))
            left = 70 + x * cell
            colour = "black" if right is None else ("#2e9e43" if right else "#d03030")
            draw.rectangle([left, y * cell, left + cell - 1, y * cell + cell - 1], fill=colour)
            sheet.paste(tile, (left + 3, y * cell + 3))
    sheet.save(path)


def summary_row(report: dict) -> dict:
    """The headline figures of a report."""
    keys = ("top1", "recall@1", "recall@5", "recall@10", "map@r", "confident", "confident_top1")
    return {group: {key: round(report[group][key], 3) for key in keys} for group in GROUPS}


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path, help="default: the split.json in the model directory")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--sheet", type=Path, help="contact sheet PNG (default: beside the JSON)")
    parser.add_argument("--baseline-weights", default="imagenet", help="'none' for an untrained baseline")
    parser.add_argument("--part", choices=("model", "features", *PARTS), default="model",
                        help="evaluate only this part of the model (features: the frozen part before the head)")
    args = parser.parse_args(argv)
    split_file = args.split or args.model / "split.json"
    if not split_file.is_file():
        parser.error(f"no split file at {split_file}: pass --split")
    split = Split.load(split_file)
    embedder = Embedder.load(args.model)
    if args.part != "model":
        try:
            part = model_part(embedder.model, args.part)
        except ValueError:
            parser.error(f"the {embedder.config.variant} model in {args.model} has no {args.part} part")
        embedder = Embedder.from_model(part, f"{embedder.config.variant}:{args.part}")
    report = evaluate(embedder, split)
    weights = None if args.baseline_weights == "none" else args.baseline_weights
    baseline = evaluate(Embedder.from_model(build_pretrained(PRETRAINED_INPUT_SIZE, weights), "pretrained"), split)
    contact_sheet(report, args.sheet or args.json.with_suffix(".png"))
    result = {"model": str(args.model), "part": args.part, "split": str(split_file), "model_figures": _public(report),
              "pretrained_baseline": _public(baseline)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'':11}{'top-1':>7}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'mAP@R':>7}{'sure':>7}{'right':>7}")
    for name, figures in (("model", report), ("baseline", baseline)):
        for group, row in summary_row(figures).items():
            print(f"{name[:4]} {group:<6}" + "".join(f"{row[key]:7.3f}" for key in row))
    print(f"sure: share of queries the bot answers with confidence (score ≥ {load_settings().confidence_threshold}); "
          "right: top-1 among those")
    print("per character (top-1):", json.dumps({g: report[g]["per_character"] for g in GROUPS}))
    return 0


def _public(report: dict) -> dict:
    """A report without its working arrays."""
    return {group: {key: value for key, value in figures.items() if not key.startswith("_")}
            for group, figures in report.items()}


if __name__ == "__main__":
    raise SystemExit(main())
