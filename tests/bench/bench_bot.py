"""Bot benchmark through the local Discord-compatible server: load, /reindex, memory and soak.

Run: python -m tests.bench.bench_bot [--data ../shared/datasets/anime-faces-dev] [--model model] [--json OUT]

The bot, the fake Discord server and this driver share one process and one event loop, as the
end-to-end tests do: loop lag and resident memory include the fake server's (small) share.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from hxhbot.bot import HxhBot
from hxhbot.config import Settings
from hxhbot.discord_api import point_discord_at
from tests.bench.report import machine, print_table, write_json
from tests.conftest import character_image, encode
from tests.fake_discord.server import FakeDiscord, FakeInteraction
from tests.hostile import corpus

CALLBACK = "/interactions/{interaction_id}/{token}/callback"
FOLLOWUP = "/webhooks/{app_id}/{token}"


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class LagProbe:
    """A task that sleeps 5 ms at a time and records how late it wakes: the event loop's lag."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            self.delays.append((time.perf_counter() - started - 0.005) * 1000)

    def p99_and_reset(self) -> float:
        """The 99th-percentile lag in ms since the last call."""
        value = float(np.percentile(self.delays, 99)) if self.delays else 0.0
        self.delays.clear()
        return value


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


async def whois(server: FakeDiscord, data: bytes, filename: str = "q.jpg", content_type: str = "image/jpeg",
                declared_size: int | None = None) -> tuple[str, float]:
    """Send one /whois and wait for its answer."""
    attachment = server.add_attachment(data, filename, content_type, declared_size=declared_size)
    return await answered(await server.send_slash_command("whois", {"image": attachment}))


async def load(server: FakeDiscord, queries: list[bytes], concurrency: int, probe: LagProbe) -> dict:
    """`concurrency` simultaneous /whois requests."""
    probe.p99_and_reset()
    started = time.perf_counter()
    results = await asyncio.gather(*(whois(server, queries[i % len(queries)]) for i in range(concurrency)))
    wall = time.perf_counter() - started
    latencies = [seconds * 1000 for kind, seconds in results if kind == "answer"]
    return {
        "concurrent": concurrency, "answered": f"{len(latencies)}/{concurrency}",
        "per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(latencies, 50))), "p95_ms": round(float(np.percentile(latencies, 95))),
        "loop_lag_p99_ms": round(probe.p99_and_reset(), 1),
    }


async def reindex(server: FakeDiscord, bot: HxhBot, gallery: Path, query: bytes) -> dict:
    """Re-index a generated 1,800-image gallery while /whois keeps being asked."""
    rng = random.Random(0)
    for character in range(72):
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        folder = gallery / f"Character {character:02d}"
        folder.mkdir(parents=True)
        for number in range(25):
            (folder / f"{number:02d}.jpg").write_bytes(encode(character_image(colour, number, 256)))
    bot.settings = bot.search.settings = dataclasses.replace(bot.settings, gallery_dir=gallery)
    started = time.perf_counter()
    owner = await server.send_slash_command("reindex", user_id=server.owner_id)
    latencies = []
    while True:
        kind, seconds = await whois(server, query)
        latencies.append(seconds * 1000)
        if not bot.search.reindexing:
            break
        await asyncio.sleep(0.25)
    seconds = time.perf_counter() - started
    final: list[str] = []
    for _ in range(100):  # the summary edit follows the swap
        final = [r.json["content"] for r in owner.requests if r.json and "Index rebuilt" in r.json.get("content", "")]
        if final:
            break
        await asyncio.sleep(0.1)
    return {
        "gallery": len(bot.search.index), "reindex_s": round(seconds, 1),
        "whois_during": len(latencies), "p50_ms": round(float(np.percentile(latencies, 50))),
        "max_ms": round(max(latencies)), "summary": final[-1] if final else "?",
    }


async def soak(server: FakeDiscord, queries: list[bytes], total: int, concurrency: int) -> dict:
    """`total` mixed requests: valid images, hostile files, oversized declarations, non-images."""
    hostile = corpus()
    rng = random.Random(1)
    counts = {"answer": 0, "refusal": 0, "none": 0}
    semaphore = asyncio.Semaphore(concurrency)

    async def one(number: int) -> None:
        roll = rng.random()
        async with semaphore:
            if roll < 0.5:
                result = await whois(server, queries[number % len(queries)])
            elif roll < 0.7:
                name, data, _ = hostile[number % len(hostile)]
                result = await whois(server, data, name, "image/png")
            elif roll < 0.85:
                result = await whois(server, queries[0], declared_size=64 * 1024 * 1024)
            else:
                result = await whois(server, b"%PDF-1.4 not an image", "doc.pdf", "application/pdf")
        counts[result[0]] += 1

    before = rss_mb()
    started = time.perf_counter()
    await asyncio.gather(*(one(number) for number in range(total)))
    return {
        "requests": total, "answers": counts["answer"], "refusals": counts["refusal"],
        "unanswered": counts["none"], "seconds": round(time.perf_counter() - started, 1),
        "rss_growth_mb": round(rss_mb() - before, 1),
    }


async def run(args: argparse.Namespace) -> dict:
    """Start the fake server and the bot, then measure everything."""
    server = FakeDiscord(heartbeat_interval_ms=5000, interaction_deadline=10.0)
    await server.start()
    scratch = Path(tempfile.mkdtemp(prefix="hxhbot-bench-"))
    settings = Settings(
        discord_token=server.token, gallery_dir=args.data, model_dir=args.model, index_dir=scratch / "index",
        discord_api_base=server.api_base, cooldown_seconds=0, queue_size=1024,
    )
    point_discord_at(settings.discord_api_base)
    bot = HxhBot(settings)
    await bot.login(server.token)
    runner = asyncio.create_task(bot.connect())
    await server.wait_until_ready()
    await bot.wait_until_ready()
    probe = LagProbe()
    await asyncio.sleep(1.0)
    queries = [Path(item.path).read_bytes() for item in bot.search.index.items[::7]]
    arrays = np.stack([bot.search._decode(data) for data in queries[:64]])
    batch = arrays[np.arange(256) % len(arrays)]
    bot.search.embedder.embed(batch)
    started = time.perf_counter()
    bot.search.embedder.embed(batch)
    limit = len(batch) / (time.perf_counter() - started)
    await load(server, queries, 16, probe)  # warm-up: first-use imports and traces are not the steady state
    idle = rss_mb()
    rows = [await load(server, queries, n, probe) for n in args.concurrency]
    for row in rows:
        row["vs_batched_limit"] = f"{row['per_s'] / limit:.0%}"
    after_load = rss_mb()
    soaked = await soak(server, queries, args.soak, 32)
    reindexed = await reindex(server, bot, scratch / "gallery", queries[0])
    memory = {"idle_mb": round(idle), "after_load_mb": round(after_load), "after_soak_mb": round(rss_mb())}
    probe.task.cancel()
    await bot.close()
    await runner
    await server.stop()
    return {"batched_limit_img_s": round(limit), "load": rows, "soak": soaked, "reindex": reindexed,
            "memory": memory, "model": bot.search.embedder.config.variant}


def main() -> None:
    """Run the bot benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/anime-faces-dev"))
    parser.add_argument("--model", type=Path, default=Path("model"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--soak", type=int, default=2000)
    parser.add_argument("--json", default="tests/bench/results/bot.json")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    where = f"{machine()}; model {figures['model']}; batched limit {figures['batched_limit_img_s']} img/s"
    print_table(f"Bot under load, /whois through the local Discord server ({where})", figures["load"])
    print_table("Soak: mixed requests", [figures["soak"]])
    print_table("/reindex of 1,800 generated images, /whois answered meanwhile", [figures["reindex"]])
    print_table("Resident memory (bot + fake server, one process)", [figures["memory"]])
    write_json(args.json, {"machine": machine(), **figures})


if __name__ == "__main__":
    main()
