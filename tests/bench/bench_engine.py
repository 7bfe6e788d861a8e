"""Engine benchmark on whole pictures, served through TensorFlow Lite beside the Keras model in the same run.

Run: python -m tests.bench.bench_engine [--data ../shared/datasets/hxh-dev] [--model model] [--repeats 60]
     [--json docs/results/engine.json] [--batches-json docs/results/embedding-batches.json]

Each query is a picture of the data set fitted into a 1280×720 JPEG frame, like a screenshot. One at a time, every
stage is timed (decode, face search, crops, embedding by each path, ranking); then each path serves 256 requests in
flight through the search service, indexes the whole data set, and embeds views batched.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from hxhbot.config import load_settings
from hxhbot.engine.confidence import DEFAULT
from hxhbot.engine.crops import decode_for_views, faces, load_views, picture_views
from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.embedder import Embedder
from hxhbot.engine.gallery import scan_gallery
from hxhbot.engine.identification import rank_picture
from hxhbot.engine.images import TRUSTED_DECODE_BYTES, TRUSTED_MAX_BYTES, decode_image, to_array
from hxhbot.engine.index import GalleryIndex
from hxhbot.engine.indexing import build_gallery_index
from hxhbot.engine.interpreter import LiteInterpreter
from hxhbot.engine.model_dir import lite_model
from hxhbot.engine.preview import numbered_preview
from hxhbot.engine.search import SearchService
from hxhbot.runtime_env import prepare
from tests.bench.report import Conditions, print_table
from training.results import write_result

FRAME = (1280, 720)
STAGES = ("decode", "detect", "crops", "rank", "preview")


def batched_throughput(embedder: Embedder, arrays: np.ndarray, views: int = 256, rounds: int = 3) -> float:
    """Views per second embedding `arrays` repeated into `views` at once, after one warm-up round."""
    batch = arrays[np.arange(views) % len(arrays)]
    embedder.embed(batch)
    started = time.perf_counter()
    for _ in range(rounds):
        embedder.embed(batch)
    return rounds * len(batch) / (time.perf_counter() - started)


def frames(paths: list[Path]) -> list[bytes]:
    """Each picture fitted into a 1280×720 screenshot-like frame, as a JPEG (quality 90)."""
    out = []
    for path in paths:
        picture = decode_image(
            path.read_bytes(),
            max_bytes=TRUSTED_MAX_BYTES,
            max_decode_bytes=TRUSTED_DECODE_BYTES,  # a data set's 4,000 px pictures, not a stranger's
            draft_size=max(FRAME),
        )
        picture.thumbnail(FRAME, Image.Resampling.LANCZOS)
        frame = Image.new("RGB", FRAME, (20, 24, 30))
        frame.paste(picture, ((FRAME[0] - picture.width) // 2, (FRAME[1] - picture.height) // 2))
        buffer = io.BytesIO()
        frame.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


async def service_throughput(service: SearchService, queries: list[bytes], total: int) -> tuple[float, float]:
    """Pictures per second through the search service with `total` requests in flight at once, and CPU ms each."""
    try:
        await service.start()
        await asyncio.gather(*(service.rank(queries[n % len(queries)]) for n in range(32)))  # warm-up
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(service.rank(queries[n % len(queries)]) for n in range(total)))
        return total / (time.perf_counter() - started), (time.process_time() - cpu) / total * 1000
    finally:
        await service.close()


def one_at_a_time(queries: list[bytes], embedder: Embedder, index: GalleryIndex) -> dict[str, np.ndarray]:
    """Milliseconds of every stage for each query, one picture at a time, as the search service runs them."""
    detector, beside = FaceDetector(), ThreadPoolExecutor(1)
    times: dict[str, list[float]] = {name: [] for name in (*STAGES, "embed", "embed CPU", "views")}
    for data in queries:
        started = time.perf_counter()
        picture = decode_for_views(data, embedder.input_size)
        decoded = time.perf_counter()
        whole = beside.submit(to_array, picture, embedder.input_size)  # as `load_views` for a picture alone
        small = detector.shrink(picture)  # the face search and the preview share it
        boxes = faces(small, detector)
        detected = time.perf_counter()
        arrays = picture_views(picture, boxes, embedder.input_size, whole.result())
        cropped, cpu = time.perf_counter(), time.process_time()
        vectors = embedder.embed(arrays, alone=True)
        embedded = time.perf_counter()
        times["embed CPU"].append(time.process_time() - cpu)
        rank_picture(index.similarities(vectors), boxes, DEFAULT, 5)
        ranked = time.perf_counter()
        numbered_preview(small, boxes)
        times["preview"].append(time.perf_counter() - ranked)
        times["decode"].append(decoded - started)
        times["detect"].append(detected - decoded)
        times["crops"].append(cropped - detected)
        times["embed"].append(embedded - cropped)
        times["rank"].append(ranked - embedded)
        times["views"].append(len(arrays) / 1000)
    return {name: np.array(values) * 1000 for name, values in times.items()}


PATHS = ("lite", "keras")


def measure(model: Path, data_dir: Path, repeats: int, service_requests: int) -> tuple[list[list], dict]:
    """One row per embedding path of the model in `model`, each measured in a process of its own (one path's
    threads never run beside the other's); and what was measured."""
    context = multiprocessing.get_context("spawn")
    rows, facts = [], {}
    for path in PATHS:
        with ProcessPoolExecutor(1, mp_context=context) as child:
            row, facts[path] = child.submit(measure_path, path, model, data_dir, repeats, service_requests).result()
        rows.append(row)
    return rows, facts["lite"]


def measure_path(path: str, model: Path, data_dir: Path, repeats: int, service_requests: int) -> tuple[list, dict]:
    """Every figure of one embedding path (`lite` or `keras`) of the model in `model`, in this process."""
    settings = load_settings(dotenv=False)  # the defaults, or what MODEL_THREADS etc. say
    if path == "lite":
        name = f"TensorFlow Lite (XNNPACK, {settings.model_threads} thread{'s' if settings.model_threads > 1 else ''})"
        embedder = Embedder.load(model, settings.batch_size, settings.model_threads)
    else:
        name, embedder = "Keras (tf.function), as before", Embedder.load_keras(model, settings.batch_size)
    embedder.warm_up()
    files, _ = scan_gallery(data_dir)
    queries = frames([file.path for file in files[:: max(1, len(files) // repeats)]])
    detector = FaceDetector()
    with tempfile.TemporaryDirectory() as scratch:
        index, summary = build_gallery_index(data_dir, embedder, scratch, detector=detector)
        stages = one_at_a_time(queries, embedder, index)
        views = np.concatenate([load_views(data, embedder.input_size, detector).arrays for data in queries[:16]])
        service = SearchService(embedder, index, settings, detector)
        pictures_s, cpu_ms = asyncio.run(service_throughput(service, queries, service_requests))
    total = sum(stages[stage] for stage in ("decode", "detect", "crops", "embed", "rank"))
    row = [
        name,
        _ms(np.percentile(total, 50)),
        _ms(np.percentile(total, 95)),
        *(
            _ms(np.percentile(stages[stage], 50))
            for stage in ("decode", "detect", "crops", "embed", "embed CPU", "rank")
        ),
        round(pictures_s, 1),
        _ms(cpu_ms),
        round(summary.images / summary.seconds, 1),
        round(batched_throughput(embedder, views)),
    ]
    facts = {
        "queries": len(queries),
        "views": float(np.mean(stages["views"])),
        "preview": float(np.percentile(stages["preview"], 50)),
        "gallery": summary.images,
        "variant": embedder.config.variant,
        "size": embedder.input_size,
        "views_sample": views,
    }
    return row, facts


def interpreter_rates(model: Path, views: np.ndarray, size: int) -> list[list]:
    """Views per second of the TensorFlow Lite copy by threads and views an invoke (`views` repeated to 64)."""
    content, batch = lite_model(model), views[np.arange(64) % len(views)]
    rows = []
    for threads in (1, 2):
        for per_invoke in (1, 2, 4, 8):
            interpreter = LiteInterpreter(content, size, threads, per_invoke)
            interpreter(batch[:per_invoke])  # XNNPACK packs its weights on the first invoke
            started = time.perf_counter()
            interpreter(batch)
            rows.append([threads, per_invoke, round(len(batch) / (time.perf_counter() - started))])
    return rows


def _ms(value: float) -> float:
    """Milliseconds to one decimal."""
    return round(float(value), 1)


def main(argv: list[str] | None = None) -> int:
    """Measure both embedding paths of the model, print the tables and write the result files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/hxh-dev"))
    parser.add_argument("--model", type=Path, default=Path("model"))
    parser.add_argument("--repeats", type=int, default=60, help="1280×720 queries timed one at a time")
    parser.add_argument("--service-requests", type=int, default=256, help="requests in flight through the service")
    parser.add_argument("--json", type=Path, default=Path("docs/results/engine.json"))
    parser.add_argument("--batches-json", type=Path, default=Path("docs/results/embedding-batches.json"))
    args = parser.parse_args(argv)
    command = "python -m tests.bench.bench_engine " + " ".join(sys.argv[1:] if argv is None else argv)
    prepare()  # each path's process starts as bot.py's does
    conditions = Conditions()
    rows, facts = measure(args.model, args.data, args.repeats, args.service_requests)
    columns = [
        "embedding path",
        "p50 ms",
        "p95 ms",
        "decode",
        "detect",
        "crops",
        "embed",
        "embed, CPU ms",
        "rank",
        "pictures/s, service",
        "service, CPU ms a picture",
        "pictures/s, indexing",
        "views/s, batched",
    ]
    protocol = (
        f"The {facts['variant']} model of `{args.model}`, each embedding path in a process of its own (default "
        f"settings, or what the environment sets); {facts['queries']} pictures of `{args.data.name}`, each fitted "
        f"into a 1280×720 JPEG frame ({facts['views']:.2f} views a picture: the frame and each face), timed one at a "
        f"time as a picture alone is served: p50/p95 of decode + detect + crops + embed + rank, then each stage's p50 "
        f"in ms (the frame's own view is made on another thread during the face search, so crops is what is left; "
        f"drawing the numbered preview on the face search's small copy, not counted, {facts['preview']:.1f} ms), and "
        f"the CPU time the process spent embedding. Then {args.service_requests} of them in flight through the search "
        f"service (its CPU time a picture), the {facts['gallery']} pictures indexed, and 256 views embedded at once. "
        f"{conditions.describe()}"
    )
    print_table(f"Engine ({conditions.describe()})", [dict(zip(columns, row)) for row in rows])
    write_result(args.json, "Engine: 1280×720 pictures, by embedding path", command, protocol, columns, rows)
    conditions = Conditions()
    batches = interpreter_rates(args.model, facts["views_sample"], facts["size"])
    batch_columns = ["interpreter threads", "views an invoke", "views/s"]
    print_table("TensorFlow Lite by threads and views an invoke", [dict(zip(batch_columns, row)) for row in batches])
    write_result(
        args.batches_json,
        "The TensorFlow Lite copy by threads and views an invoke",
        command,
        f"64 views of the same pictures, embedded by one interpreter made for each setting. {conditions.describe()}",
        batch_columns,
        batches,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
