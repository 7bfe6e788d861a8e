"""Bot benchmark through the local Discord-compatible server: load, /reindex, memory and soak.

Run: python -m tests.bench.bench_bot [--data ../shared/datasets/hxh-dev] [--model model] [--soak 2000] [--out DIR]

The bot runs as it does in production, in a process of its own (tests/bench/bot_process.py) talking
HTTP and websocket to the fake Discord server in this one: its loop lag and resident memory are the
bot's alone. Both processes share the machine's cores, as they would not with the real Discord.
It runs twice: serving through TensorFlow Lite, then through the Keras model as before, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hxhbot.config import Settings
from hxhbot.engine.embedder import Embedder
from hxhbot.engine.gallery import scan_gallery
from hxhbot.engine.images import TRUSTED_DECODE_BYTES, TRUSTED_MAX_BYTES, load_image
from tests.bench.bench_engine import batched_throughput
from tests.bench.report import Conditions, print_table
from tests.conftest import character_image, encode
from tests.fake_discord.server import FakeDiscord, FakeInteraction
from tests.hostile import corpus, heavy
from training.results import write_result

CALLBACK = "/interactions/{interaction_id}/{token}/callback"
FOLLOWUP = "/webhooks/{app_id}/{token}"


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` now, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far, threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile of `values`, rounded, or NaN when there are none."""
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def lag_p99(samples: list[list[float]], window: tuple[float, float]) -> float:
    """The 99th-percentile loop lag in ms of the probe samples taken within `window` (unix times)."""
    return percentile([lag for at, lag in samples if window[0] <= at <= window[1]], 99)


async def answered(interaction: FakeInteraction, timeout: float = 120.0) -> tuple[str, float]:
    """Wait for the bot's final answer to an interaction: ('answer'|'refusal'|'none', seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        routes = [(r.route, r.json or {}) for r in interaction.requests]
        for route, body in routes:
            if route == CALLBACK and body.get("type") == 4:
                return "refusal", time.monotonic() - interaction.created
            if route == FOLLOWUP:
                kind = "answer" if body.get("embeds") else "refusal"
                return kind, time.monotonic() - interaction.created
        await asyncio.sleep(0.01)
    return "none", timeout


async def whois(
    server: FakeDiscord,
    data: bytes,
    filename: str = "q.jpg",
    content_type: str = "image/jpeg",
    declared_size: int | None = None,
) -> tuple[str, float]:
    """Send one /whois and wait for its answer."""
    attachment = server.add_attachment(data, filename, content_type, declared_size=declared_size)
    return await answered(await server.send_slash_command("whois", {"image": attachment}))


async def load(server: FakeDiscord, queries: list[bytes], concurrency: int, pid: int) -> dict:
    """`concurrency` simultaneous /whois requests, and the CPU the bot and the fake server spent on them."""
    started = time.perf_counter()
    window = time.time()
    bot_cpu, server_cpu = cpu_seconds(pid), cpu_seconds(os.getpid())
    results = await asyncio.gather(*(whois(server, queries[i % len(queries)]) for i in range(concurrency)))
    wall = time.perf_counter() - started
    bot_cpu, server_cpu = cpu_seconds(pid) - bot_cpu, cpu_seconds(os.getpid()) - server_cpu
    latencies = [seconds * 1000 for kind, seconds in results if kind == "answer"]
    return {
        "concurrent": concurrency,
        "answered": f"{len(latencies)}/{concurrency}",
        "per_s": round(len(latencies) / wall, 1),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "bot_cpu_ms_per_req": round(bot_cpu / concurrency * 1000, 1),
        "fake_discord_cores": round(server_cpu / wall, 2),
        "window": (window, time.time()),
    }


def generate_gallery(gallery: Path, characters: int, images: int = 25) -> None:
    """Replace the gallery with `characters` × `images` generated pictures (72 × 25, as the original)."""
    shutil.rmtree(gallery)
    rng = random.Random(0)
    for character in range(characters):
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        folder = gallery / f"Character {character:02d}"
        folder.mkdir(parents=True)
        for number in range(images):
            (folder / f"{number:02d}.jpg").write_bytes(encode(character_image(colour, number, 256)))


async def reindex(server: FakeDiscord, gallery: Path, query: bytes, characters: int) -> dict:
    """Re-index a generated gallery of `characters` × 25 pictures while /whois keeps being asked."""
    generate_gallery(gallery, characters)
    started = time.perf_counter()
    window = time.time()
    owner = await server.send_slash_command("reindex", user_id=server.owner_id)
    latencies: list[float] = []
    final = ""
    while not final and time.perf_counter() - started < 900:
        kind, seconds = await whois(server, query)
        latencies.append(seconds * 1000)
        contents = [r.json.get("content", "") for r in owner.requests if r.json]
        final = next((text for text in contents if text.startswith(("Index rebuilt", "The rebuild failed"))), "")
        await asyncio.sleep(0.25)
    return {
        "reindex_s": round(time.perf_counter() - started, 1),
        "whois_during": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "max_ms": percentile(latencies, 100),
        "summary": final.splitlines()[0] if final else "no summary",
        "window": (window, time.time()),
    }


async def soak(server: FakeDiscord, queries: list[bytes], total: int, concurrency: int, pid: int) -> dict:
    """`total` mixed requests: valid images, hostile and heavy files, oversized declarations, non-images."""
    hostile = [(name, data) for name, data, _ in corpus()] + heavy()
    rng = random.Random(1)
    counts = {"answer": 0, "refusal": 0, "none": 0}
    semaphore = asyncio.Semaphore(concurrency)

    async def one(number: int) -> None:
        roll = rng.random()
        async with semaphore:
            if roll < 0.5:
                result = await whois(server, queries[number % len(queries)])
            elif roll < 0.7:
                name, data = hostile[number % len(hostile)]
                result = await whois(server, data, name, "image/png")
            elif roll < 0.85:
                result = await whois(server, queries[0], declared_size=64 * 1024 * 1024)
            else:
                result = await whois(server, b"%PDF-1.4 not an image", "doc.pdf", "application/pdf")
        counts[result[0]] += 1

    before = rss_mb(pid)
    started = time.perf_counter()
    window = time.time()
    growth = []  # after every 1,000 requests: does memory level off?
    for first in range(0, total, 1000):
        await asyncio.gather(*(one(number) for number in range(first, min(total, first + 1000))))
        growth.append(round(rss_mb(pid) - before))
    return {
        "requests": total,
        "answers": counts["answer"],
        "refusals": counts["refusal"],
        "unanswered": counts["none"],
        "seconds": round(time.perf_counter() - started, 1),
        "rss_growth_mb": growth[-1] if growth else 0,
        "growth_per_1000_mb": growth,
        "window": (window, time.time()),
    }


def batched_limit(model: Path, queries: list[bytes], keras: bool) -> tuple[str, float]:
    """The model's name and the batched embedding throughput of the path the bot serves it by (views/s)."""
    settings = Settings()
    embedder = (
        Embedder.load_keras(model, settings.batch_size)
        if keras
        else Embedder.load(model, settings.batch_size, settings.model_threads)
    )
    arrays = np.stack(
        [
            load_image(data, embedder.input_size, max_bytes=TRUSTED_MAX_BYTES, max_decode_bytes=TRUSTED_DECODE_BYTES)
            for data in queries[:64]
        ]
    )
    return embedder.config.variant, batched_throughput(embedder, arrays)


async def run(args: argparse.Namespace, keras: bool) -> dict:
    """Start the fake server and the bot's process (serving through Keras with `keras`), then measure everything."""
    files, _ = scan_gallery(args.data)
    queries = [item.path.read_bytes() for item in files[::7]]
    variant, limit = batched_limit(args.model, queries, keras)
    server = FakeDiscord(heartbeat_interval_ms=5000, interaction_deadline=10.0)
    await server.start()
    scratch = Path(tempfile.mkdtemp(prefix="hxhbot-bench-"))
    gallery = scratch / "gallery"
    shutil.copytree(args.data.resolve(), gallery, copy_function=os.symlink)
    env = {
        **os.environ,
        "DISCORD_TOKEN": server.token,
        "DISCORD_API_BASE": server.api_base,
        "GALLERY_DIR": str(gallery),
        "MODEL_DIR": str(args.model),
        "INDEX_DIR": str(scratch / "index"),
        "FEEDBACK_DB": str(scratch / "feedback.sqlite3"),
        "COOLDOWN_SECONDS": "0",
        "QUEUE_SIZE": "1024",
        "LOG_LEVEL": "WARNING",
    }
    lag_file = scratch / "lag.json"
    with open(scratch / "bot.log", "wb") as log:
        bot = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.bot_process",
            str(lag_file),
            *(["--keras"] if keras else []),
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        await server.wait_until_ready(timeout=600)
        await asyncio.sleep(1.0)
        await load(server, queries, 16, bot.pid)  # warm-up: first-use imports and traces are not the steady state
        idle = rss_mb(bot.pid)
        rows = [await load(server, queries, n, bot.pid) for n in args.concurrency]
        after_load = rss_mb(bot.pid)
        soaked = await soak(server, queries, args.soak, 32, bot.pid)
        reindexed = await reindex(server, gallery, queries[0], args.reindex_characters)
        memory = {"idle_mb": round(idle), "after_load_mb": round(after_load), "after_soak_mb": round(rss_mb(bot.pid))}
    finally:
        bot.send_signal(signal.SIGTERM)
        exit_code = await bot.wait()
        await server.stop()
    samples = json.loads(lag_file.read_text())
    for row in (*rows, soaked, reindexed):
        row["loop_lag_p99_ms"] = lag_p99(samples, row.pop("window"))
    for row in rows:
        row["vs_batched_limit"] = f"{row['per_s'] / limit:.0%}"
    memory["exit_code"] = exit_code
    shutil.rmtree(scratch)
    return {
        "batched_limit_img_s": round(limit),
        "load": rows,
        "soak": soaked,
        "reindex": reindexed,
        "memory": memory,
        "model": variant,
    }


PATHS = {"TensorFlow Lite": False, "Keras, as before": True}  # the embedding path: serve through Keras?


def main(argv: list[str] | None = None) -> int:
    """Run the bot benchmark through each embedding path, print its tables and write the result files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/hxh-dev"))
    parser.add_argument("--model", type=Path, default=Path("model"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--soak", type=int, default=2000)
    parser.add_argument("--reindex-characters", type=int, default=72, help="of 25 generated pictures each")
    parser.add_argument("--out", type=Path, default=Path("docs/results"), help="folder of bot*.json")
    args = parser.parse_args(argv)
    command = "python -m tests.bench.bench_bot " + " ".join(sys.argv[1:] if argv is None else argv)
    conditions = Conditions()
    figures = {name: asyncio.run(run(args, keras)) for name, keras in PATHS.items()}
    where = conditions.describe()
    variant = next(iter(figures.values()))["model"]
    protocol = (
        f"The {variant} model of `{args.model}`, the gallery and the queries from `{args.data.name}`; the bot in a "
        f"process of its own, as `bot.py` starts it (default settings), against the local Discord server; each "
        f"embedding path in turn. {where}"
    )
    load_columns = ["embedding path", "concurrent /whois", "answered", "per second", "p50 ms", "p95 ms"]
    load_columns += ["loop lag p99 ms", "bot CPU ms / request", "batched limit, views/s"]
    load_rows = [
        [name, row["concurrent"], row["answered"], row["per_s"], row["p50_ms"], row["p95_ms"]]
        + [row["loop_lag_p99_ms"], row["bot_cpu_ms_per_req"], figures[name]["batched_limit_img_s"]]
        for name in figures
        for row in figures[name]["load"]
    ]
    soak_columns = ["embedding path", "soak requests", "answers", "refusals", "unanswered", "loop lag p99 ms"]
    soak_columns += ["/reindex s", "pictures", "/whois meanwhile", "their p50 ms", "their max ms"]
    soak_rows = [
        [name, f["soak"]["requests"], f["soak"]["answers"], f["soak"]["refusals"], f["soak"]["unanswered"]]
        + [f["soak"]["loop_lag_p99_ms"], f["reindex"]["reindex_s"], 25 * args.reindex_characters]
        + [f["reindex"]["whois_during"], f["reindex"]["p50_ms"], f["reindex"]["max_ms"]]
        for name, f in figures.items()
    ]
    memory_columns = ["embedding path", "idle MB", "after the load MB", "after the soak MB", "exit code"]
    memory_rows = [
        [name, f["memory"]["idle_mb"], f["memory"]["after_load_mb"], f["memory"]["after_soak_mb"]]
        + [f["memory"]["exit_code"]]
        for name, f in figures.items()
    ]
    for name, title, columns, rows in (
        ("bot", "Bot under load: simultaneous /whois", load_columns, load_rows),
        ("bot-soak", "Bot soak (mixed requests) and /reindex while /whois is asked", soak_columns, soak_rows),
        (
            "bot-memory",
            "Resident memory of the bot's process, and its exit code after SIGTERM",
            memory_columns,
            memory_rows,
        ),
    ):
        print_table(f"{title} ({where})", [dict(zip(columns, row)) for row in rows])
        write_result(args.out / f"{name}.json", title, command, protocol, columns, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
