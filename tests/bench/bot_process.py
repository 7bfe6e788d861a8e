"""The bot as the benchmark runs it: `bot.py`'s `run()` in its own process, plus an event-loop lag probe.

Run by tests/bench/bench_bot.py: python -m tests.bench.bot_process LAG_JSON [--keras] (settings from the environment).
The probe's samples, `[unix time, lag in ms]`, are written to LAG_JSON when the bot shuts down. With `--keras` the
model is served through its Keras model, as before TensorFlow Lite, for comparison.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

from hxhbot.runtime_env import prepare

prepare()  # before NumPy and TensorFlow are imported, as bot.py does

from hxhbot.config import load_settings  # noqa: E402
from hxhbot.discord.bot import run  # noqa: E402
from hxhbot.engine.embedder import Embedder  # noqa: E402

PROBE_SLEEP = 0.005


def serve_through_keras() -> None:
    """Make the search service load the Keras model where it loads the TensorFlow Lite copy."""

    def load_keras(cls: type[Embedder], model_dir: str, max_batch: int = 64, threads: int = 1) -> Embedder:
        return cls.load_keras(model_dir, max_batch)

    Embedder.load = classmethod(load_keras)  # type: ignore[method-assign, assignment]


async def probe(samples: list[tuple[float, float]]) -> None:
    """Sleep 5 ms at a time and record how late each wake-up is: the event loop's lag."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(PROBE_SLEEP)
        samples.append((time.time(), (time.perf_counter() - started - PROBE_SLEEP) * 1000))


async def main(lag_file: str) -> None:
    """Run the bot until SIGTERM, probing its loop, then write the samples."""
    samples: list[tuple[float, float]] = []
    task = asyncio.create_task(probe(samples))
    try:
        await run(load_settings(require_token=True, dotenv=False))
    finally:
        task.cancel()
        with open(lag_file, "w") as out:
            json.dump(samples, out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if "--keras" in sys.argv[2:]:
        serve_through_keras()
    asyncio.run(main(sys.argv[1]))
