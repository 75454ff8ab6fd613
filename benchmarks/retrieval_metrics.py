"""Retrieval metrics on N × D embeddings: tripletkit against pytorch-metric-learning, side by side.

Both compute precision@1, R-precision and MAP@R of a labelled set searched against itself, on the
same L2-normalised, class-clustered embeddings (generated identically in each child process from
a seed). pytorch-metric-learning runs ``AccuracyCalculator(k="max_bin_count")`` restricted to those
three metrics (its k-NN is faiss's exact ``IndexFlatL2``); tripletkit runs
``tripletkit.evaluation.retrieval_metrics`` with its default cosine distance (the same ranking on
unit vectors). Each configuration runs in its own process (``benchmarks/harness.py``): time is the
median step, memory the peak RSS of the process, imports and data included.

    python benchmarks/retrieval_metrics.py                   # 100,000 × 128, 1,000 classes
    python benchmarks/retrieval_metrics.py --n 20000 --classes 200 --repeats 1
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import format_outcome, markdown_table, measure, save_results

METRICS = ("precision_at_1", "r_precision", "map_at_r")
PML_NAMES = {
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "map_at_r": "mean_average_precision_at_r",
}


def make_embeddings(n: int, dim: int, classes: int, noise: float, seed: int) -> tuple[Any, Any]:
    """Class-clustered unit vectors: a random centre per class plus isotropic noise."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=generator)
    centres = torch.randn(classes, dim, generator=generator)
    x = centres[labels] + noise * torch.randn(n, dim, generator=generator)
    return torch.nn.functional.normalize(x, dim=1), labels


def tripletkit_target(n: int, dim: int, classes: int, noise: float, seed: int):
    from tripletkit.evaluation import retrieval_metrics

    x, labels = make_embeddings(n, dim, classes, noise, seed)
    result: dict[str, float] = {}

    def step() -> None:
        out = retrieval_metrics(x, labels)
        result.update({name: out[name] for name in METRICS})

    step.extra = lambda: result
    return step


def pml_target(n: int, dim: int, classes: int, noise: float, seed: int):
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    logging.getLogger("PML").setLevel(logging.ERROR)
    x, labels = make_embeddings(n, dim, classes, noise, seed)
    calculator = AccuracyCalculator(
        include=tuple(PML_NAMES.values()), k="max_bin_count", device=torch.device("cpu")
    )
    result: dict[str, float] = {}

    def step() -> None:
        out = calculator.get_accuracy(x, labels)
        result.update({name: out[pml] for name, pml in PML_NAMES.items()})

    step.extra = lambda: result
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--noise", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3_600)
    args = parser.parse_args()
    config = dict(n=args.n, dim=args.dim, classes=args.classes, noise=args.noise, seed=args.seed)
    common = dict(repeats=args.repeats, timeout_s=args.timeout, rss_limit_mb=20_000)
    ours = measure("tripletkit", "retrieval_metrics:tripletkit_target", config, **common)
    print(f"tripletkit: {format_outcome(ours)}", flush=True)
    peer = measure("pytorch-metric-learning", "retrieval_metrics:pml_target", config, **common)
    print(f"pytorch-metric-learning: {format_outcome(peer)}", flush=True)

    differences = {}
    if ours.status == peer.status == "ok":
        differences = {m: abs(ours.detail[m] - peer.detail[m]) for m in METRICS}
    rows = []
    for m in (ours, peer):
        speed = memory = "-"
        if m.status == "ok" and ours.status == "ok":
            speed = f"{m.median_s / ours.median_s:.2f}×"
            memory = f"{m.peak_rss_mb / ours.peak_rss_mb:.2f}×"
        values = [f"{m.detail[k]:.6f}" if m.status == "ok" else "-" for k in METRICS]
        rows.append([m.name, format_outcome(m), speed, memory, *values])
    header = ["implementation", "time / peak RSS", "time vs tripletkit", "memory vs tripletkit"]
    header += ["P@1", "R-precision", "MAP@R"]
    table = markdown_table(rows, header)
    title = f"{args.n:,} × {args.dim} embeddings, {args.classes:,} classes (self-retrieval)"
    print(f"\n### Retrieval metrics: {title}\n\n{table}\n")
    print(f"largest |difference| in the metric values: {max(differences.values(), default=0):.2e}")
    path = save_results(
        "retrieval_metrics",
        [ours, peer],
        {"config": config, "metric_differences": differences, "markdown": table},
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
