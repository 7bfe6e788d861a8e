"""Index benchmark: build and query time of Annoy at the chosen settings against exact search.

Run: python -m tests.bench.bench_index [--sizes 1800 50000 500000] [--dim 128] [--json OUT]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hxhbot.index import GalleryIndex, GalleryItem, annoy_settings
from tests.bench.report import machine, print_table, write_json


def clustered(size: int, dim: int, per_cluster: int = 25, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """Unit vectors in clusters of `per_cluster`, like a gallery of characters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, size // per_cluster), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = centres[np.arange(size) % len(centres)] + rng.normal(scale=spread / np.sqrt(dim), size=(size, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def measure(size: int, dim: int, queries: int, n_trees: int | None, search_k: int | None) -> dict:
    """Build an index of `size` vectors and compare its top-10 with exact search."""
    vectors = clustered(size, dim)
    items = [GalleryItem(str(row % 1000), "", "") for row in range(size)]
    started = time.perf_counter()
    index = GalleryIndex.build(vectors, items, "bench", n_trees=n_trees, search_k=search_k)
    build_s = time.perf_counter() - started
    probes = clustered(queries, dim, seed=1)
    exact, approx = [], []
    started = time.perf_counter()
    for probe in probes:
        exact.append(set(np.argpartition(-(vectors @ probe), 10)[:10].tolist()))
    exact_ms = (time.perf_counter() - started) / queries * 1000
    started = time.perf_counter()
    for probe in probes:
        approx.append(set(index.annoy.get_nns_by_vector(probe.tolist(), 10, search_k=index.search_k)))
    annoy_ms = (time.perf_counter() - started) / queries * 1000
    recall = float(np.mean([len(a & e) / 10 for a, e in zip(approx, exact)]))
    return {
        "size": size, "dim": dim, "n_trees": index.meta["n_trees"], "search_k": index.search_k,
        "build_s": round(build_s, 2), "annoy_ms": round(annoy_ms, 3), "exact_ms": round(exact_ms, 3),
        "recall@10": round(recall, 4),
    }


def main() -> None:
    """Measure every size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1800, 50_000, 500_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--n-trees", type=int, nargs="*", default=[None])
    parser.add_argument("--search-k", type=int, nargs="*", default=[None])
    parser.add_argument("--json", default="tests/bench/results/index.json")
    args = parser.parse_args()
    rows = [
        measure(size, args.dim, args.queries, trees, k)
        for size in args.sizes for trees in args.n_trees for k in args.search_k
    ]
    print_table(f"Index: Annoy vs exact numpy search ({machine()})", rows)
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
