"""Peak memory one picture takes on the bot's path: python -m tests.decode_peak [--size 224] FILE... (a JSON line each).

Each file goes through `load_views` (decoding, faces, crops, preview) at the bot's default limits, in a forked child
whose peak resident memory is first reset to its current size (Linux: /proc/self/clear_refs): `peak_mb` is what
that picture alone added above idle, `reserved_mb` what its decoding held of the memory budget, `seconds` and
`cpu_seconds` its wall and CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hxhbot.engine.crops import load_views
from hxhbot.engine.detector import FaceDetector
from hxhbot.engine.images import DEFAULT_MAX_DECODE_BYTES, ImageError
from hxhbot.engine.memory_budget import MemoryBudget
from tests.conftest import character_image, encode


class RecordingBudget(MemoryBudget):
    """The bot's default memory budget, remembering the most it held."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_MAX_DECODE_BYTES, 0.0)
        self.most = 0

    @contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        """Reserve as the budget does, and remember the bytes held."""
        with super().reserve(size):
            self.most = max(self.most, self.held)
            yield


def peak_above_idle(data: bytes, size: int, detector: FaceDetector) -> dict[str, object]:
    """Take `data` to its views in a child process: its outcome ('accepted' or the ImageError's class name), the MB
    it added to the child's peak RSS, the MB its decoding reserved, the seconds it took (wall and CPU) and the refusal's
    sentence."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reset the peak, decode, report, and leave without cleanup
        os.close(read)
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            budget = RecordingBudget()
            started, cpu = time.perf_counter(), time.process_time()
            try:
                load_views(data, size, detector, budget=budget, preview=True)
                outcome, message = "accepted", ""
            except ImageError as error:
                outcome, message = type(error).__name__, str(error)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
            report = {"outcome": outcome, "peak_mb": round(grown, 1), "reserved_mb": round(budget.most / 2**20, 1)}
            times = {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3)}
            os.write(write, json.dumps({**report, **times, "message": message}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(report)


def main() -> None:
    """Print each file's outcome, peak memory above idle, reserved memory and time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--size", type=int, default=224, help="model input side to decode for")
    args = parser.parse_args()
    detector = FaceDetector()
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP"):  # first use loads each decoder: not the decoding's cost
        load_views(encode(character_image((200, 40, 40), 0, size=700), fmt), args.size, detector, preview=True)
    for path in args.files:
        print(json.dumps({"file": path.name, **peak_above_idle(path.read_bytes(), args.size, detector)}), flush=True)


if __name__ == "__main__":
    main()
