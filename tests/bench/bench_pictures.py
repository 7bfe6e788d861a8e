"""The hostile corpus through the bot's path, one file at a time and 32 at once: python -m tests.bench.bench_pictures

One at a time (`tests.decode_peak`): each file's outcome, the memory it added and reserved, and its seconds.
At once (`tests.flight_peak`): the search service with the shipped model, 32 pictures asked together, its peak RSS.
Writes docs/results/reliability-accepted.json, reliability-refused.json and reliability-flight.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bench.report import machine
from tests.hostile import corpus, heavy, in_flight
from training.results import write_result

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "python -m tests.bench.bench_pictures"


def measure(module: str, files: list[tuple[str, bytes]], *options: str) -> list[dict]:
    """Write `files` into a scratch folder and run `python -m module *options FILE...` there: its JSON lines."""
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in files:
            (Path(scratch) / name).write_bytes(data)
        run = subprocess.run(
            [sys.executable, "-m", module, *options, *(name for name, _ in files)],
            cwd=scratch,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        )
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def write(name: str, title: str, protocol: str, columns: list[str], rows: list[list[object]]) -> None:
    """Save one result file docs/results/NAME.json."""
    write_result(ROOT / "docs" / "results" / f"{name}.json", title, COMMAND, protocol, columns, rows)


def main() -> None:
    """Measure, print and save the three tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="flights of 32 pictures")
    args = parser.parse_args()
    host = f"{machine()}; load average {os.getloadavg()[0]:.1f} at the start (a shared host)."
    files = [(name, data) for name, data, kind in corpus() if kind.__name__ != "ImageTooLargeError"] + heavy()
    sizes = dict(files)
    rows = measure("tests.decode_peak", files, "--size", "224")
    for row in rows:
        print(json.dumps(row))
    one = (
        "Each file alone through `load_views` (decoding, faces, crops, preview) at the bot's default limits "
        "(224 px model input, MAX_IMAGE_BYTES 10 MiB, DECODE_MEMORY_BYTES 256 MiB) in a forked process whose peak RSS "
        f"is reset first; seconds are wall time, CPU seconds the child's own (what a quiet core would take). {host}"
    )
    write(
        "reliability-accepted",
        "Accepted pictures of the corpus: memory and time of each, alone",
        one,
        ["file", "KB", "peak above idle (MB)", "reserved (MB)", "seconds", "CPU seconds"],
        [
            [row["file"], round(len(sizes[row["file"]]) / 1024), row["peak_mb"], row["reserved_mb"]]
            + [row["seconds"], row["cpu_seconds"]]
            for row in rows
            if row["outcome"] == "accepted"
        ],
    )
    write(
        "reliability-refused",
        "Refused files of the corpus: what the member is told, and how soon",
        one + " over-limit.jpg is left out: it is refused by its size before it is opened.",
        ["file", "refusal", "seconds", "CPU seconds"],
        [
            [row["file"], row["message"], row["seconds"], row["cpu_seconds"]]
            for row in rows
            if row["outcome"] != "accepted"
        ],
    )
    flight = [(name, data) for name, data, _ in in_flight(32)]
    flights = []
    for run in range(1, args.runs + 1):
        (figures,) = measure("tests.flight_peak", flight, "--model", str(ROOT / "model"))
        print(json.dumps(figures))
        outcomes = list(figures["outcomes"].values())
        answered, busy = outcomes.count("answered"), outcomes.count("BusyError")
        flights.append(
            [run, len(outcomes), answered, len(outcomes) - answered - busy, busy]
            + [figures["idle_mb"], figures["peak_mb"], figures["above_idle_mb"], figures["seconds"]]
        )
    write(
        "reliability-flight",
        "32 hostile pictures in flight at once: the bot's memory",
        "Every heavy file of the corpus, then the hostile ones that pass the header's first look "
        "(`tests.hostile.in_flight`), asked at once of the search service with the shipped model and the bot's "
        "default settings (WORKERS 2, BATCH_SIZE 8, DECODE_WAIT_SECONDS 10), after a warm-up; RSS of the whole "
        f"process from /proc/self/status, its peak reset after the warm-up. {host}",
        [
            "run",
            "pictures",
            "answered",
            "refused",
            "busy",
            "idle RSS (MB)",
            "peak RSS (MB)",
            "above idle (MB)",
            "seconds",
        ],
        flights,
    )


if __name__ == "__main__":
    main()
