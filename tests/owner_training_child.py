"""Stands in for `python -m training.train` in /train's end-to-end tests: its JSON-lines protocol, its outcomes.

python -m tests.owner_training_child --out DIR --model DIR --release FILE [--fail]

Reports progress, waits for RELEASE to exist (so that a test can act while training runs), then copies MODEL into
OUT and reports a run that kept it (its niceness in RELEASE.nice); with --fail, says why and exits 2 as the real
command does on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--release", type=Path, required=True)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    args.release.with_suffix(".nice").write_text(str(os.nice(0)))  # the priority it runs at
    print(json.dumps({"stage": "views", "done": 0, "total": 8, "left": None}), flush=True)
    while not args.release.exists():
        time.sleep(0.05)
    if args.fail:
        parser.error("the gallery has 1 character(s): training needs at least two")
    print(json.dumps({"stage": "training", "done": 1, "total": 2, "left": 3.0}), flush=True)
    shutil.copytree(args.model, args.out)
    summary = {
        "kept": "trained",
        "start": "model",
        "characters": 4,
        "trained_pictures": 12,
        "held_out": 4,
        "start_top1": 0.5,
        "trained_top1": 0.75,
        "start_mrr": 0.7,
        "trained_mrr": 0.85,
        "epochs": 1,
        "epochs_run": 2,
        "seconds": 61.0,
        "trained_at": "2026-12-06T21:30:00+00:00",
        "history": [],
    }
    print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
