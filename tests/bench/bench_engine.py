"""Engine benchmark on whole pictures: decode + detect + embed + rank of a 1280×720 picture, throughput, indexing.

Run: python -m tests.bench.bench_engine [--data ../shared/datasets/hxh-dev] [--model model] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hxhbot.config import Settings
from hxhbot.engine.confidence import DEFAULT
from hxhbot.engine.crops import load_views
from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.embedder import Embedder
from hxhbot.engine.gallery import scan_gallery
from hxhbot.engine.identification import rank_picture
from hxhbot.engine.images import decode_image, load_image
from hxhbot.engine.indexing import build_gallery_index
from hxhbot.engine.model_dir import build_pretrained
from hxhbot.engine.search import SearchService
from tests.bench.report import cpu_times, machine, print_table, steal_since, write_json

FRAME = (1280, 720)


def batched_throughput(embedder: Embedder, arrays: np.ndarray, rounds: int = 3) -> float:
    """Arrays per second embedding `arrays`, repeated into batches of 256, after one warm-up batch."""
    batch = arrays[np.arange(256) % len(arrays)]
    embedder.embed(batch)
    started = time.perf_counter()
    for _ in range(rounds):
        embedder.embed(batch)
    return rounds * len(batch) / (time.perf_counter() - started)


def frames(paths: list[Path]) -> list[bytes]:
    """Each picture fitted into a 1280×720 screenshot-like frame, as a JPEG (quality 90)."""
    out = []
    for path in paths:
        picture = decode_image(path.read_bytes(), max_bytes=1 << 30)
        picture.thumbnail(FRAME, Image.Resampling.LANCZOS)
        frame = Image.new("RGB", FRAME, (20, 24, 30))
        frame.paste(picture, ((FRAME[0] - picture.width) // 2, (FRAME[1] - picture.height) // 2))
        buffer = io.BytesIO()
        frame.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


async def service_throughput(service: SearchService, queries: list[bytes], total: int = 256) -> float:
    """Pictures per second through the search service with `total` requests in flight at once."""
    try:
        await service.start()
        await asyncio.gather(*(service.rank(queries[n % len(queries)]) for n in range(32)))  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(service.rank(queries[n % len(queries)]) for n in range(total)))
        return total / (time.perf_counter() - started)
    finally:
        await service.close()


def measure(name: str, embedder: Embedder, data_dir: Path, repeats: int) -> dict:
    """Index the data set, then time single 1280×720 requests stage by stage, and the batched service."""
    before = cpu_times()
    embedder.warm_up()
    detector = FaceDetector()
    files, _ = scan_gallery(data_dir)
    queries = frames([file.path for file in files[:: max(1, len(files) // repeats)]])
    with tempfile.TemporaryDirectory() as index_dir:
        index, summary = build_gallery_index(data_dir, embedder, index_dir, detector=detector)
        stages, views_per_picture = [], []  # ms of decode + detect, embed, rank per query
        for data in queries:
            started = time.perf_counter()
            views = load_views(data, embedder.input_size, detector)
            decoded = time.perf_counter()
            vectors = embedder.embed(views.arrays)
            embedded = time.perf_counter()
            rank_picture(index.similarities(vectors), views.boxes, DEFAULT, 5)
            stages.append([decoded - started, embedded - decoded, time.perf_counter() - embedded])
            views_per_picture.append(len(views.arrays))
        stages_ms = np.array(stages) * 1000
        latencies = stages_ms.sum(axis=1)
        arrays = np.stack([load_image(data, embedder.input_size) for data in queries[:64]])
        batched = batched_throughput(embedder, arrays)
        pictures_s = asyncio.run(service_throughput(SearchService(embedder, index, Settings(), detector), queries))
    return {
        "model": name,
        "input": embedder.input_size,
        "dim": embedder.dim,
        "gallery": summary.images,
        "views/picture": round(float(np.mean(views_per_picture)), 2),
        "index_pictures_s": round(summary.images / summary.seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        **{
            f"{stage}_p50": round(float(np.percentile(stages_ms[:, column], 50)), 1)
            for column, stage in enumerate(("decode+detect", "embed", "rank"))
        },
        "pictures_s": round(pictures_s, 1),
        "embed_batched_views_s": round(batched),
        "noise": steal_since(before),
    }


def main() -> None:
    """Measure the default model and the raw ImageNet features."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/hxh-dev"))
    parser.add_argument("--model", type=Path, default=Path("model"))
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--json", default="tests/bench/results/engine.json")
    args = parser.parse_args()
    rows = [
        measure("default (model/)", Embedder.load(args.model), args.data, args.repeats),
        measure("pretrained", Embedder.from_model(build_pretrained(), "pretrained"), args.data, args.repeats),
    ]
    print_table(f"Engine: whole 1280×720 pictures, one at a time, and batched ({machine()})", rows)
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
