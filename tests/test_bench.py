"""Benchmark smoke: each benchmark runs on a few real pictures and writes its results (never a speed asserted)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.bench import bench_bot, bench_engine, bench_index

WIDE = "Kurapika/Nosferatzod__hunter_wiki__kurapika.jpg"  # 4000×2265: `make bench` once stopped on it
RESULT_KEYS = {"title", "command", "protocol", "date", "columns", "rows"}


def few_pictures(hxh_dev: Path, to: Path) -> Path:
    """Two characters of hxh-dev, three pictures each, the widest picture among them (linked, not copied)."""
    for character in ("Kurapika", "Gon Freecss"):
        (to / character).mkdir(parents=True)
        pictures = sorted(path for path in (hxh_dev / character).iterdir() if path.name != Path(WIDE).name)[:2]
        for picture in pictures + ([hxh_dev / WIDE] if character == "Kurapika" else []):
            os.symlink(picture, to / character / picture.name)
    return to


def result(path: Path, rows: int) -> dict:
    """A result file, checked against the docs' schema: `rows` rows, each as long as the columns."""
    written = json.loads(path.read_text())
    assert set(written) == RESULT_KEYS and len(written["rows"]) == rows
    assert all(len(row) == len(written["columns"]) for row in written["rows"])
    return written


def test_the_engine_benchmark_runs_and_writes_its_results(hxh_dev: Path, model_dir: Path, tmp_path: Path) -> None:
    data = few_pictures(hxh_dev, tmp_path / "data")
    engine, batches = tmp_path / "engine.json", tmp_path / "batches.json"
    options = ["--repeats", "3", "--service-requests", "4", "--json", str(engine), "--batches-json", str(batches)]
    assert bench_engine.main(["--data", str(data), "--model", str(model_dir), *options]) == 0
    written = result(engine, 2)
    assert [row[0] for row in written["rows"]][1] == "Keras (tf.function), as before"
    assert all(isinstance(cell, (int, float)) and cell >= 0 for row in written["rows"] for cell in row[1:])
    assert all(row[1] > 0 for row in written["rows"])  # a stage may round to 0.0 ms on a fast machine, never all
    assert written["command"].startswith("python -m tests.bench.bench_engine --data")
    assert 1 <= float(re.search(r"\(([\d.]+) views a picture", written["protocol"]).group(1)) <= 4  # frame + faces
    assert result(batches, 8)["columns"] == ["interpreter threads", "views an invoke", "views/s"]


def test_the_index_benchmark_runs_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "index.json"
    assert bench_index.main(["--sizes", "300", "--dim", "64", "--queries", "5", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["size"] == 300


@pytest.mark.timeout(900)
def test_the_bot_benchmark_runs_and_writes_its_results(hxh_dev: Path, model_dir: Path, tmp_path: Path) -> None:
    data = few_pictures(hxh_dev, tmp_path / "data")
    options = ["--concurrency", "2", "--soak", "6", "--reindex-characters", "1", "--out", str(tmp_path)]
    assert bench_bot.main(["--data", str(data), "--model", str(model_dir), *options]) == 0
    load = result(tmp_path / "bot.json", 2)
    assert [row[2] for row in load["rows"]] == ["2/2", "2/2"]  # every /whois answered, through either path
    assert [row[-1] for row in result(tmp_path / "bot-memory.json", 2)["rows"]] == [0, 0]  # exit codes
    assert [row[4] for row in result(tmp_path / "bot-soak.json", 2)["rows"]] == [0, 0]  # none unanswered
