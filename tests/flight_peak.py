"""Peak memory of the bot's engine with pictures in flight at once: python -m tests.flight_peak [--model DIR] FILE...

Opens the search service as the bot does after its first start (the model in `--model`, whose TensorFlow Lite copy
is made first in a process of its own, as a first start does once; an index of a small generated gallery), warms it
up on a picture of each format, resets the process's peak resident memory (Linux: /proc/self/clear_refs), then asks
for every FILE at once and prints one JSON object: the peak RSS in MB (of the whole process, and above idle), the
seconds until the last answer, and each file's outcome ('answered' or the error's class name).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from hxhbot.config import Settings
from hxhbot.engine.images import ImageError
from hxhbot.engine.model_dir import lite_model
from hxhbot.engine.search import BusyError, SearchService
from tests.conftest import character_image, encode, write_gallery

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP")


def memory_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def convert_apart(model_dir: Path) -> None:
    """Make the model's TensorFlow Lite copy in a fresh process, so that converting takes none of this one's memory."""
    child = multiprocessing.get_context("spawn").Process(target=lite_model, args=(model_dir,))
    child.start()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"converting {model_dir} to TensorFlow Lite failed (exit code {child.exitcode})")


async def in_flight(settings: Settings, files: list[Path]) -> dict[str, object]:
    """Identify every file at once through a freshly opened service; the figures described above."""
    service = SearchService.open(settings)
    try:
        for fmt in FORMATS:  # first use loads each decoder and grows the model's buffers: part of idle
            await service.rank(encode(character_image((200, 40, 40), 0, size=700), fmt))
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        idle = memory_mb("VmRSS")
        started = time.perf_counter()
        results = await asyncio.gather(*(service.rank(path.read_bytes()) for path in files), return_exceptions=True)
        seconds = time.perf_counter() - started
        peak = memory_mb("VmHWM")
    finally:
        await service.close()
    outcomes = {}
    for path, result in zip(files, results):
        if isinstance(result, BaseException) and not isinstance(result, (ImageError, BusyError)):
            raise result
        outcomes[path.name] = type(result).__name__ if isinstance(result, BaseException) else "answered"
    return {
        "files": len(files),
        "idle_mb": round(idle, 1),
        "peak_mb": round(peak, 1),
        "above_idle_mb": round(peak - idle, 1),
        "seconds": round(seconds, 2),
        "outcomes": outcomes,
    }


def main() -> None:
    """Print the figures of one flight of every FILE."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--model", type=Path, default=Settings().model_dir, help="model directory (the bot's)")
    parser.add_argument("--wait", type=float, default=Settings().decode_wait_seconds, help="DECODE_WAIT_SECONDS")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    convert_apart(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(
            model_dir=args.model,
            gallery_dir=write_gallery(Path(scratch) / "gallery"),
            index_dir=Path(scratch) / "index",
        )
        figures = asyncio.run(in_flight(replace(settings, decode_wait_seconds=args.wait), args.files))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
