"""Engine benchmark: decode + embed + rank per image (p50/p95), batched throughput, single/batched ratio.

Run: python -m tests.bench.bench_engine [--data ../shared/datasets/anime-faces-dev] [--model model] [--json OUT]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hxhbot.confidence import DEFAULT
from hxhbot.embedder import Embedder
from hxhbot.images import load_image
from hxhbot.indexing import build_gallery_index
from hxhbot.model_dir import build_pretrained
from tests.bench.report import cpu_times, machine, print_table, steal_since, write_json


def batched_throughput(embedder: Embedder, arrays: np.ndarray, rounds: int = 3) -> float:
    """Images per second embedding `arrays`, repeated into batches of 256, after one warm-up batch."""
    batch = arrays[np.arange(256) % len(arrays)]
    embedder.embed(batch)
    started = time.perf_counter()
    for _ in range(rounds):
        embedder.embed(batch)
    return rounds * len(batch) / (time.perf_counter() - started)


def measure(name: str, embedder: Embedder, data_dir: Path, repeats: int) -> dict:
    """Index the data set, then time single requests and batched embedding."""
    before = cpu_times()
    embedder.warm_up()
    with tempfile.TemporaryDirectory() as index_dir:
        index, summary = build_gallery_index(data_dir, embedder, index_dir)
        queries = [Path(item.path).read_bytes() for item in index.items[:: max(1, len(index) // repeats)]]
        stages = []  # ms of decode, embed, rank per query
        for data in queries:
            started = time.perf_counter()
            array = load_image(data, embedder.input_size)
            decoded = time.perf_counter()
            vector = embedder.embed(array)[0]
            embedded = time.perf_counter()
            index.similarities(vector).rank([0], DEFAULT, 5)
            stages.append([decoded - started, embedded - decoded, time.perf_counter() - embedded])
        stages_ms = np.array(stages) * 1000
        latencies = stages_ms.sum(axis=1)
        arrays = np.stack([load_image(data, embedder.input_size) for data in queries])
        batched = batched_throughput(embedder, arrays)
        started = time.perf_counter()
        for array in arrays:
            embedder.embed(array)
        single = len(arrays) / (time.perf_counter() - started)
    return {
        "model": name, "input": embedder.input_size, "dim": embedder.dim, "gallery": len(index),
        "index_s": round(summary.seconds, 1), "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        **{f"{stage}_p50": round(float(np.percentile(stages_ms[:, column], 50)), 1)
           for column, stage in enumerate(("decode", "embed", "rank"))}, "batched_img_s": round(batched),
        "single_img_s": round(single), "single/batched": round(single / batched, 2),
        "noise": steal_since(before),
    }


def main() -> None:
    """Measure the default model and the pretrained baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/anime-faces-dev"))
    parser.add_argument("--model", type=Path, default=Path("model"))
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", default="tests/bench/results/engine.json")
    args = parser.parse_args()
    rows = [
        measure("default (model/)", Embedder.load(args.model), args.data, args.repeats),
        measure("pretrained", Embedder.from_model(build_pretrained(), "pretrained"), args.data, args.repeats),
    ]
    print_table(f"Engine: decode + embed + rank, one image at a time ({machine()})", rows)
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
