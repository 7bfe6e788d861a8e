"""Train and evaluate every variant on the same seeded splits, and write the table into training/README.md.

python -m training.compare --data ../shared/datasets/anime-faces-dev --out runs/compare [--splits 5] [--variants ...]

Each variant is trained and evaluated once per split (seeds 0 … N−1, each choosing other unseen
characters and other queries); a row gives the mean over the splits and the worst split.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from hxhbot.embedder import Embedder  # noqa: E402
from training.data import Split, make_split  # noqa: E402
from training.evaluate import GROUPS, evaluate, summary_row  # noqa: E402
from training.model import VARIANTS  # noqa: E402
from training.train import train  # noqa: E402

README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def compare(data: Path, out: Path, variants: list[str], epochs: dict[str, int | None], splits: int = 1,
            **options: object) -> list[dict]:
    """Train each variant on `splits` seeded splits, evaluate it, return one row per variant."""
    out.mkdir(parents=True, exist_ok=True)
    split_files = []
    for seed in range(splits):
        split_files.append(out / f"split-{seed}.json")
        if not split_files[-1].is_file():
            make_split(data, seed=seed).save(split_files[-1])
    results = out / "compare.json"
    kept = json.loads(results.read_text()) if results.is_file() else []
    rows = [row for row in kept if row["variant"] not in variants]  # variants not re-run keep their rows
    for variant in variants:
        runs = []
        for seed, split_file in enumerate(split_files):
            summary = train(data, variant, out / f"{variant}-{seed}", epochs=epochs.get(variant),
                            split_file=split_file, seed=seed, verbose=0, **options)
            runs.append((summary, summary_row(evaluate(Embedder.load(out / f"{variant}-{seed}"),
                                                       Split.load(split_file)))))
        rows.append(_row(variant, runs))
        print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda row: VARIANTS.index(row["variant"]))
    results.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def _row(variant: str, runs: list[tuple[dict, dict]]) -> dict:
    """Mean and worst split of the figures, mean training cost."""
    row: dict = {"variant": variant, "input": runs[0][0]["input_size"]}
    for group in GROUPS:
        top1 = [figures[group]["top1"] for _, figures in runs]
        row[f"{group} top1"] = float(np.mean(top1))
        row[f"{group} worst"] = float(np.min(top1))
        row[f"{group} map@r"] = float(np.mean([figures[group]["map@r"] for _, figures in runs]))
    for key, name in (("epochs", "epochs"), ("seconds", "train_s"), ("seconds_per_epoch", "s_per_epoch")):
        row[name] = round(float(np.mean([summary[key] for summary, _ in runs])), 2)
    return row


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(f"{row[k]:.3f}" if k.startswith(GROUPS) else str(row[k]) for k in keys) + " |"
              for row in rows]
    return "\n".join(lines)


def write_table(readme: Path, table: str) -> None:
    """Replace the text between the compare markers of `readme` (adding them if missing) with `table`."""
    text = readme.read_text() if readme.is_file() else ""
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--splits", type=int, default=5, help="seeded splits to average over")
    parser.add_argument("--seed-epochs", type=int, default=200)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder")
    if args.splits < 1:
        parser.error("--splits must be at least 1")
    rows = compare(args.data, args.out, args.variants, {"seed": args.seed_epochs}, args.splits)
    table = markdown(rows)
    print(table)
    write_table(args.readme, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
