"""Train and evaluate every variant on the same seeded splits, and write the tables into training/README.md.

python -m training.compare --data DIR [DIR ...] [--eval DIR ...] [--held-out DIR ...] [--unseen 0.4] --out runs/compare
                           [--splits 3] [--variants ...] [--seed-epochs N]

Each variant is trained once per split (seeds 0 … N−1, each keeping other characters of every folder
unseen, other pictures as gallery and queries) on the seen characters of all `--data` folders, then
evaluated on each `--eval` folder: every query ranked against the gallery of all that folder's
characters. A row gives the mean over the splits and the worst split.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from hxhbot.config import load_settings  # noqa: E402
from hxhbot.engine.detector import FaceDetector  # noqa: E402
from hxhbot.engine.embedder import Embedder  # noqa: E402
from hxhbot.engine.fitted_threshold import in_force  # noqa: E402
from training.data import Split, make_split  # noqa: E402
from training.evaluate import GROUPS, evaluate, summary_row  # noqa: E402
from training.model import VARIANTS  # noqa: E402
from training.train import train  # noqa: E402

README = Path(__file__).with_name("README.md")
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def compare(
    data: list[Path],
    evaluated: list[Path],
    out: Path,
    variants: list[str],
    epochs: dict[str, int | None],
    splits: int = 3,
    held_out: list[Path] | tuple = (),
    unseen: float = 0.4,
    evaluate_only: bool = False,
    **options: Any,
) -> list[dict]:
    """Train each variant on `splits` seeded splits (or, `evaluate_only`, take the models trained there before),
    evaluate it on every folder, return one row per variant and folder."""
    out.mkdir(parents=True, exist_ok=True)
    split_files = []
    for seed in range(splits):
        split_files.append(out / f"split-{seed}.json")
        if not split_files[-1].is_file():
            make_split(data, unseen, seed=seed, held_out=held_out).save(split_files[-1])
    results = out / "compare.json"
    kept = json.loads(results.read_text()) if results.is_file() else []
    rows = [row for row in kept if row["variant"] not in variants]  # variants not re-run keep their rows
    threshold, detector = in_force(None, load_settings().confidence_threshold), FaceDetector()
    for variant in variants:
        runs: dict[str, list] = {str(folder): [] for folder in evaluated}
        for seed, split_file in enumerate(split_files):
            if evaluate_only:
                summary = _trained(out / f"{variant}-{seed}")
            else:
                summary = train(
                    data,
                    variant,
                    out / f"{variant}-{seed}",
                    epochs=epochs.get(variant),
                    split_file=split_file,
                    seed=seed,
                    verbose=0,
                    **options,
                )
            embedder = Embedder.load(out / f"{variant}-{seed}")
            for folder in evaluated:
                figures = evaluate(embedder, Split.load(split_file), folder, threshold, detector)
                runs[str(folder)].append((summary, summary_row(figures)))
        for folder in evaluated:
            rows.append(_row(variant, Path(folder).name, runs[str(folder)]))
            print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda row: (row["data"], VARIANTS.index(row["variant"])))
    results.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def _trained(model_dir: Path) -> dict:
    """The training summary of a model trained by an earlier run."""
    try:
        return json.loads((model_dir / "history.json").read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"no trained model in {model_dir} ({error}): run without --evaluate-only first") from error


def _row(variant: str, folder: str, runs: list[tuple[dict, dict]]) -> dict:
    """Mean and worst split of the figures, mean training cost."""
    row: dict = {"data": folder, "variant": variant, "input": runs[0][0]["input_size"]}
    for group in GROUPS:
        present = [figures[group] for _, figures in runs if group in figures]
        for key, name in (
            ("top1", "top1"),
            ("top5", "top5"),
            ("map@r", "map@r"),
            ("confident", "sure"),
            ("confident_top1", "right"),
        ):
            row[f"{group} {name}"] = float(np.mean([f[key] for f in present])) if present else float("nan")
        row[f"{group} worst"] = float(np.min([f["top1"] for f in present])) if present else float("nan")
    for key, name in (("epochs", "epochs"), ("seconds", "train_s")):
        row[name] = round(float(np.mean([summary[key] for summary, _ in runs])), 1)
    return row


def markdown(rows: list[dict]) -> str:
    """The rows as Markdown tables, one per evaluated folder."""
    tables = []
    for folder in sorted({row["data"] for row in rows}):
        mine = [row for row in rows if row["data"] == folder]
        keys = [key for key in mine[0] if key != "data"]
        lines = [f"**{folder}**", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += [
            "| " + " | ".join(f"{row[k]:.3f}" if k.startswith(GROUPS) else str(row[k]) for k in keys) + " |"
            for row in mine
        ]
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


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
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="folders to train on (combined)")
    parser.add_argument("--eval", type=Path, nargs="+", help="folders to evaluate on (default: every --data folder)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--splits", type=int, default=3, help="seeded splits to average over")
    parser.add_argument(
        "--held-out",
        type=Path,
        nargs="+",
        default=[],
        help="folders none of whose characters are trained on (all unseen)",
    )
    parser.add_argument(
        "--unseen", type=float, default=0.4, help="share of the other folders' characters kept out of training"
    )
    parser.add_argument("--seed-epochs", type=int, default=200)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="evaluate the models an earlier run trained in --out again (after a change to ranking)",
    )
    args = parser.parse_args(argv)
    for folder in args.data:
        if not folder.is_dir():
            parser.error(f"--data {folder} is not a folder")
    evaluated = args.eval or args.data
    if not set(map(str, evaluated)) <= set(map(str, args.data)):
        parser.error("every --eval folder must also be a --data folder (the split covers only those)")
    if args.splits < 1:
        parser.error("--splits must be at least 1")
    try:
        rows = compare(
            args.data,
            evaluated,
            args.out,
            args.variants,
            {"seed": args.seed_epochs},
            args.splits,
            args.held_out,
            args.unseen,
            args.evaluate_only,
        )
    except ValueError as error:
        parser.error(str(error))
    table = markdown(rows)
    print(table)
    write_table(args.readme, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
