"""Train and evaluate every variant on one split, and write the table into training/README.md.

python -m training.compare --data ../shared/datasets/anime-faces-dev --out runs/compare [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from hxhbot.embedder import Embedder  # noqa: E402
from training.data import Split, make_split  # noqa: E402
from training.evaluate import evaluate, summary_row  # noqa: E402
from training.model import VARIANTS  # noqa: E402
from training.train import train  # noqa: E402

README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def compare(data: Path, out: Path, variants: list[str], epochs: dict[str, int | None]) -> list[dict]:
    """Train each variant on the same seeded split, evaluate it, return one row per variant."""
    out.mkdir(parents=True, exist_ok=True)
    split_file = out / "split.json"
    if not split_file.is_file():
        make_split(data).save(split_file)
    previous = out / "compare.json"
    kept = json.loads(previous.read_text()) if previous.is_file() else []
    rows = [row for row in kept if row["variant"] not in variants]  # variants not re-run keep their rows
    for variant in variants:
        summary = train(data, variant, out / variant, epochs=epochs.get(variant), split_file=split_file, verbose=0)
        figures = summary_row(evaluate(Embedder.load(out / variant), Split.load(split_file)))
        rows.append({"variant": variant, "input": summary["input_size"], **{
            f"{group} {key}": figures[group][key] for group in figures for key in ("top1", "map@r")},
            "epochs": summary["epochs"], "train_s": summary["seconds"], "s_per_epoch": summary["seconds_per_epoch"]})
        print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda row: VARIANTS.index(row["variant"]))
    (out / "compare.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) and ("top1" in k or "map" in k)
                                  else str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seed-epochs", type=int, default=200)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    rows = compare(args.data, args.out, args.variants, {"seed": args.seed_epochs})
    table = markdown(rows)
    print(table)
    text = args.readme.read_text() if args.readme.is_file() else f"{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    args.readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
