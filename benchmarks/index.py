"""The vector index at scale: queries/second and Recall@10 of HNSW and IVF-PQ against exact search.

Data: ``N`` vectors (default 1,000,000 × 128) drawn around ``N / 100`` random centres (standard
normal) with per-coordinate noise 0.3, L2-normalised; 1,000 queries drawn from the same mixture
(not in the index). Recall@10 is the fraction of the exact 10 nearest neighbours (cosine, from
``tripletkit.evaluation.knn``) that the index returns. Each kind is built and queried in its own
process (``benchmarks/harness.py``): the time is one batched search of all queries (median of
repeats), without fetching metadata; the build time and peak RSS are reported beside it.

    python benchmarks/index.py                       # 1,000,000 × 128
    python benchmarks/index.py --n 100000 --kinds flat hnsw
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import format_outcome, markdown_table, measure, save_results

NUM_QUERIES = 1_000
K = 10


def make_vectors(n: int, dim: int, seed: int):
    """``(vectors (n, dim), queries (1000, dim))`` float32 unit vectors from one mixture."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), dim), dtype=np.float32)
    total = n + NUM_QUERIES
    points = np.empty((total, dim), dtype=np.float32)
    for start in range(0, total, 100_000):
        stop = min(start + 100_000, total)
        chosen = rng.integers(0, centres.shape[0], stop - start)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        points[start:stop] = centres[chosen] + 0.3 * noise
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points[:n], points[n:]


def index_target(kind: str, n: int, dim: int, seed: int, params: dict | None = None):
    import numpy as np

    from tripletkit.evaluation import knn
    from tripletkit.index import VectorIndex

    vectors, queries = make_vectors(n, dim, seed)
    exact = knn(queries, vectors, K, distance="cosine").indices.numpy()
    start = time.perf_counter()
    index = VectorIndex.build(vectors, kind=kind, metric="cosine", **(params or {}))
    build_s = time.perf_counter() - start
    found = index.search(queries, K, with_metadata=False).ids
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact, strict=True)]))

    def step() -> None:
        index.search(queries, K, with_metadata=False)

    step.extra = {"build_s": build_s, "recall_at_10": recall, "params": index.params}
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivfpq"])
    parser.add_argument("--timeout", type=float, default=3_000)
    args = parser.parse_args()
    results = []
    for kind in args.kinds:
        config = dict(kind=kind, n=args.n, dim=args.dim, seed=args.seed)
        m = measure(
            kind,
            "index:index_target",
            config,
            repeats=3,
            timeout_s=args.timeout,
            rss_limit_mb=20_000,
        )
        print(f"{kind}: {format_outcome(m)} {m.detail}", flush=True)
        results.append(m)
    exact = next((m for m in results if m.name == "flat" and m.status == "ok"), None)
    rows = []
    for m in results:
        if m.status != "ok":
            rows.append([m.name, format_outcome(m), "-", "-", "-", "-"])
            continue
        qps = NUM_QUERIES / m.median_s
        speedup = f"{exact.median_s / m.median_s:.1f}×" if exact else "-"
        rows.append(
            [
                m.name,
                f"{qps:,.0f}",
                speedup,
                f"{m.detail['recall_at_10']:.4f}",
                f"{m.detail['build_s']:.0f} s",
                f"{m.peak_rss_mb:,.0f} MiB",
            ]
        )
    header = ["kind", "queries/s", "vs exact", "Recall@10", "build", "peak RSS"]
    table = markdown_table(rows, header)
    title = f"{args.n:,} × {args.dim} clustered unit vectors, {NUM_QUERIES:,} queries, k = {K}"
    print(f"\n### Vector index: {title}\n\n{table}\n")
    path = save_results("index", results, {"config": vars(args), "markdown": table})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
