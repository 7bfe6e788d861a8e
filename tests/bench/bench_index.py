"""Index benchmark: build and query time of Annoy at the chosen settings against exact search.

Run: python -m tests.bench.bench_index [--sizes 1800 50000 500000] [--dim 3072] [--json OUT]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hxhbot.engine.index import GalleryIndex, GalleryItem
from tests.bench.report import cpu_times, machine, print_table, steal_since, write_json


def clustered(size: int, dim: int, per_cluster: int = 25, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """Unit vectors in clusters of `per_cluster`, like a gallery of characters (built in float32 chunks)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, size // per_cluster), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = np.empty((size, dim), dtype=np.float32)
    for start in range(0, size, 10_000):
        rows = np.arange(start, min(size, start + 10_000))
        chunk = centres[rows % len(centres)] + rng.standard_normal((len(rows), dim), dtype=np.float32) * (
            spread / np.sqrt(dim)
        )
        points[rows] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return points


def exact_top10(vectors: np.ndarray, probes: np.ndarray) -> list[set[int]]:
    """The true 10 nearest rows of every probe, by blocks of rows."""
    best = np.full((len(probes), 10), -np.inf, dtype=np.float32), np.zeros((len(probes), 10), dtype=np.int64)
    for start in range(0, len(vectors), 50_000):
        sims = probes @ vectors[start : start + 50_000].T
        rows = np.argpartition(-sims, 9, axis=1)[:, :10]
        candidates = np.concatenate([best[0], np.take_along_axis(sims, rows, 1)], axis=1)
        ids = np.concatenate([best[1], rows + start], axis=1)
        keep = np.argpartition(-candidates, 9, axis=1)[:, :10]
        best = np.take_along_axis(candidates, keep, 1), np.take_along_axis(ids, keep, 1)
    return [set(row.tolist()) for row in best[1]]


def measure(size: int, dim: int, queries: int, n_trees: int | None, search_ks: list[int | None]) -> list[dict]:
    """Build an index of `size` vectors; compare its top-10 and speed with exact search at each `search_k`."""
    vectors = clustered(size, dim)
    items = [GalleryItem(str(row % 1000), "", "") for row in range(size)]
    started = time.perf_counter()
    index = GalleryIndex.build(vectors, items, "bench", n_trees=n_trees)
    build_s = time.perf_counter() - started
    probes = clustered(queries, dim, seed=1)
    exact = exact_top10(vectors, probes)
    timed = probes[: min(queries, 20)]
    started = time.perf_counter()
    for probe in timed:
        np.argpartition(-(vectors @ probe), 10)[:10]
    exact_ms = (time.perf_counter() - started) / len(timed) * 1000
    rows = []
    for search_k in search_ks:
        search_k = search_k or index.search_k
        started = time.perf_counter()
        approx = [set(index.annoy.get_nns_by_vector(probe.tolist(), 10, search_k=search_k)) for probe in probes]
        annoy_ms = (time.perf_counter() - started) / queries * 1000
        recall = float(np.mean([len(a & e) / 10 for a, e in zip(approx, exact)]))
        rows.append(
            {
                "size": size,
                "dim": dim,
                "n_trees": index.meta["n_trees"],
                "search_k": search_k,
                "build_s": round(build_s, 1),
                "annoy_ms": round(annoy_ms, 2),
                "recall@10": round(recall, 3),
                "exact_ms": round(exact_ms, 2),
                "served_by": "exact" if index.matrix is not None else "annoy",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure every size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1800, 50_000, 500_000])
    parser.add_argument("--dim", type=int, default=3072, help="the default model's embedding size")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--n-trees", type=int, nargs="*", default=[None])
    parser.add_argument("--search-k", type=int, nargs="*", default=[None])
    parser.add_argument("--json", default="tests/bench/results/index.json")
    args = parser.parse_args(argv)
    before = cpu_times()
    rows = [
        row
        for size in args.sizes
        for trees in args.n_trees
        for row in measure(size, args.dim, args.queries, trees, args.search_k)
    ]
    print_table(f"Index: Annoy vs exact numpy search ({machine()}; {steal_since(before)})", rows)
    write_json(args.json, {"machine": machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
