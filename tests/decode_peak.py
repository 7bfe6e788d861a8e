"""Peak memory one decoding adds: python -m tests.decode_peak [--size 224] FILE... (one JSON line per file).

Each file is decoded by `load_image` in a forked child whose peak resident memory is first reset to its
current size (Linux: /proc/self/clear_refs), so `peak_mb` is what that decoding alone added above idle.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
from pathlib import Path

from hxhbot.engine.images import ImageError, load_image
from tests.conftest import character_image, encode


def peak_above_idle(data: bytes, size: int) -> tuple[str, float]:
    """Decode `data` in a child process: ('accepted' or the ImageError's class name, MB added to its peak RSS)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reset the peak, decode, report, and leave without cleanup
        os.close(read)
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                load_image(data, size)
                outcome = "accepted"
            except ImageError as error:
                outcome = type(error).__name__
            grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
            os.write(write, json.dumps([outcome, grown]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    outcome, grown = json.loads(report)
    return outcome, grown


def main() -> None:
    """Print each file's outcome and peak memory above idle."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--size", type=int, default=224, help="model input side to decode for")
    args = parser.parse_args()
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP"):  # first use loads each decoder: not the decoding's cost
        load_image(encode(character_image((200, 40, 40), 0), fmt), args.size)
    for path in args.files:
        outcome, grown = peak_above_idle(path.read_bytes(), args.size)
        print(json.dumps({"file": path.name, "outcome": outcome, "peak_mb": round(grown, 1)}), flush=True)


if __name__ == "__main__":
    main()
