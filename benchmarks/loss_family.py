"""The loss family against pytorch-metric-learning 2.9: time and peak memory of one training step.

Each configuration runs in its own process (``benchmarks/harness.py``): one forward and backward
pass of the loss on L2-normalised random embeddings (D = 128, P×K batches with K = 4), the
normalisation included on both sides (pytorch-metric-learning normalises inside its distances).
Both sides compute the same quantity with the same settings; the step records the loss value so
that the table shows they agree.

===============================  ================================================================
tripletkit                       pytorch-metric-learning
===============================  ================================================================
ContrastiveLoss                  ContrastiveLoss (euclidean, margins 0 / 1)
ProxyNCALoss (temperature 1)     ProxyNCALoss (softmax_scale 1)
ProxyAnchorLoss                  ProxyAnchorLoss (margin 0.1, alpha 32)
MultiSimilarityLoss              MultiSimilarityLoss (2, 50, 0.5)
InfoNCELoss (temperature 0.07)   NTXentLoss (temperature 0.07)
DistanceWeightedMarginLoss       MarginLoss + DistanceWeightedMiner
CrossBatchMemory(BatchTriplet)   CrossBatchMemory(TripletMarginLoss), batch-all, margin 0.05
===============================  ================================================================

The cross-batch memory case mines a batch of 256 against a full memory of 65,536 embeddings.

Run: ``python benchmarks/loss_family.py`` (``--quick`` for B = 1,024 only, ``--only NAME`` to
filter, ``--threads N``: threads per process, 1 by default because on a shared machine
multi-threaded timings of small operations are dominated by threads waiting for a core). Each
configuration runs ``--rounds`` times per library, alternating, and the fastest run of each is
reported (every run is in the JSON). Writes ``benchmarks/results/loss_family.json`` and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Measurement,
    format_outcome,
    machine_info,
    markdown_table,
    measure,
    ratio,
    save_results,
)

DIM = 128
PER_CLASS = 4
XBM_MEMORY = 65_536
#: A run slower than this (seconds per step) is not repeated in further rounds.
SLOW_S = 10.0
XBM_BATCH = 256

#: (case, tripletkit loss, peer loss); the names are keys of ``_build``.
PAIRS = [
    ("contrastive", "ContrastiveLoss", "ContrastiveLoss"),
    ("proxy_nca", "ProxyNCALoss", "ProxyNCALoss"),
    ("proxy_anchor", "ProxyAnchorLoss", "ProxyAnchorLoss"),
    ("multi_similarity", "MultiSimilarityLoss", "MultiSimilarityLoss"),
    ("info_nce", "InfoNCELoss", "NTXentLoss"),
    ("margin", "DistanceWeightedMarginLoss", "MarginLoss + DistanceWeightedMiner"),
]


def _build(library: str, case: str, num_classes: int):
    """The loss callable ``(embeddings, labels) -> loss`` of one library for one case."""
    if library == "tripletkit":
        from tripletkit import losses

        return {
            "contrastive": lambda: losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0),
            "proxy_nca": lambda: losses.ProxyNCALoss(num_classes, DIM, temperature=1.0),
            "proxy_anchor": lambda: losses.ProxyAnchorLoss(num_classes, DIM),
            "multi_similarity": lambda: losses.MultiSimilarityLoss(),
            "info_nce": lambda: losses.InfoNCELoss(temperature=0.07),
            "margin": lambda: losses.DistanceWeightedMarginLoss(learn_beta=False),
        }[case]()
    from pytorch_metric_learning import losses, miners

    if case == "margin":
        loss, miner = losses.MarginLoss(margin=0.2, beta=1.2), miners.DistanceWeightedMiner()
        return lambda embeddings, labels: loss(embeddings, labels, miner(embeddings, labels))
    return {
        "contrastive": lambda: losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0),
        "proxy_nca": lambda: losses.ProxyNCALoss(num_classes, DIM),
        "proxy_anchor": lambda: losses.ProxyAnchorLoss(num_classes, DIM),
        "multi_similarity": lambda: losses.MultiSimilarityLoss(),
        "info_nce": lambda: losses.NTXentLoss(temperature=0.07),
    }[case]()


def _batch(batch: int, num_classes: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(batch, DIM, generator=generator, requires_grad=True)
    classes = torch.randperm(num_classes, generator=generator)[: batch // PER_CLASS]
    return raw, classes.repeat_interleave(PER_CLASS)


def loss_step(library: str, case: str, batch: int, seed: int = 0):
    """Harness target: one forward + backward of ``case`` on a P×K batch."""
    import torch
    import torch.nn.functional as F

    num_classes = batch // PER_CLASS
    raw, labels = _batch(batch, num_classes, seed)
    loss_fn = _build(library, case, num_classes)
    proxies = getattr(loss_fn, "proxies", None)
    if proxies is not None:  # the same starting proxies on both sides: comparable loss values
        generator = torch.Generator().manual_seed(seed + 2)
        with torch.no_grad():
            proxies.copy_(torch.randn(proxies.shape, generator=generator))
    values = []

    def step():
        raw.grad = None
        loss = loss_fn(F.normalize(raw, dim=1), labels)
        loss.backward()
        values.append(float(loss.detach()))

    step.extra = lambda: {
        "loss": values[-1],
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
    }
    return step


def _xbm_loss(library: str, loss: str):
    """The loss a cross-batch memory wraps: batch-all triplet (margin 0.05, euclidean, as
    pytorch-metric-learning's defaults), contrastive or multi-similarity."""
    if library == "tripletkit":
        from tripletkit import losses

        return {
            "triplet": lambda: losses.BatchTripletLoss(
                margin=0.05, mining="all", distance="euclidean"
            ),
            "contrastive": lambda: losses.ContrastiveLoss(),
            "multi_similarity": lambda: losses.MultiSimilarityLoss(),
        }[loss]()
    from pytorch_metric_learning import losses

    return {
        "triplet": lambda: losses.TripletMarginLoss(margin=0.05),
        "contrastive": lambda: losses.ContrastiveLoss(),
        "multi_similarity": lambda: losses.MultiSimilarityLoss(),
    }[loss]()


def xbm_step(library: str, num_classes: int, loss: str = "triplet", seed: int = 0):
    """Harness target: a batch of 256 against a full cross-batch memory of 65,536 embeddings."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed + 1)
    memory = F.normalize(torch.randn(XBM_MEMORY, DIM, generator=generator), dim=1)
    memory_labels = torch.randint(0, num_classes, (XBM_MEMORY,), generator=generator)
    wrapped = _xbm_loss(library, loss)
    if library == "tripletkit":
        from tripletkit.mining import CrossBatchMemory

        loss_fn = CrossBatchMemory(wrapped, size=XBM_MEMORY, embedding_dim=DIM)
        for start in range(0, XBM_MEMORY, 8192):
            loss_fn.enqueue(memory[start : start + 8192], memory_labels[start : start + 8192])
    else:
        from pytorch_metric_learning import losses

        loss_fn = losses.CrossBatchMemory(wrapped, embedding_size=DIM, memory_size=XBM_MEMORY)
        for start in range(0, XBM_MEMORY, 8192):
            rows = slice(start, start + 8192)
            loss_fn.add_to_memory(memory[rows], memory_labels[rows], 8192)
    values = []

    def step():
        # A new batch at every step, the same sequence for both libraries: the memories evolve
        # alike, and no batch meets copies of itself from earlier steps.
        raw, labels = _batch(XBM_BATCH, num_classes, seed + len(values))
        loss = loss_fn(F.normalize(raw, dim=1), labels)
        loss.backward()
        values.append(float(loss.detach()))

    step.extra = lambda: {
        "loss": values[-1],
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
    }
    return step


XBM_NAMES = {
    "triplet": "batch-all triplet",
    "contrastive": "contrastive",
    "multi_similarity": "multi-similarity",
}


def _outcome(m: Measurement) -> str:
    """The harness's outcome, with a failed allocation reported as running out of memory."""
    asked = re.search(r"tried to allocate (\d+) bytes", str(m.detail))
    if m.status == "error" and asked:
        return f"out of memory (tried to allocate {int(asked.group(1)) / 2**30:,.0f} GiB)"
    return format_outcome(m)


def _loss_value(m: Measurement) -> str:
    if m.status != "ok" or not isinstance(m.detail, dict):
        return "-"
    return f"{m.detail['loss']:.5f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 1,024 only, no XBM")
    parser.add_argument("--only", default=None, help="run only cases whose name contains this")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs per library, alternated; the fastest is kept"
    )
    parser.add_argument("--rss-limit-mb", type=float, default=8000.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per process (torch, MKL, numba); 1 gives stable timings on a shared machine",
    )
    args = parser.parse_args()
    threads = str(args.threads)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads}
    common = {"repeats": args.repeats, "rss_limit_mb": args.rss_limit_mb, "env": env}

    # (label, size, target, kwargs, tripletkit name, peer name)
    jobs = []
    batches = (1024,) if args.quick else (1024, 4096)
    for case, ours_name, peer_name in PAIRS:
        if not args.only or args.only in case:
            for batch in batches:
                config = {"case": case, "batch": batch}
                label = f"{ours_name} vs {peer_name}"
                jobs.append((label, f"B={batch:,}", "loss_family:loss_step", config))
    xbm_cases = [("triplet", 11_318), ("triplet", 512), ("contrastive", 11_318)]
    xbm_cases.append(("multi_similarity", 11_318))
    for loss, num_classes in [] if args.quick else xbm_cases:
        if not args.only or args.only in f"xbm_{loss}":
            config = {"loss": loss, "num_classes": num_classes}
            size = f"B=256, M=65,536, {num_classes:,} classes"
            jobs.append(
                (f"CrossBatchMemory({XBM_NAMES[loss]})", size, "loss_family:xbm_step", config)
            )

    rows, measurements = [], []
    for label, size, target, config in jobs:
        best: dict[str, Measurement] = {}
        # Alternate the two libraries for a few rounds and keep each one's fastest median: the
        # machine is shared, and its load changes between (not within) runs.
        for _ in range(args.rounds):
            for library in ("tripletkit", "pml"):
                done = best.get(library)
                if done is not None and (done.status != "ok" or done.median_s > SLOW_S):
                    continue  # failed, or so slow that the machine's noise does not matter
                m = measure(
                    f"{library} {label}",
                    target,
                    {"library": library, **config},
                    timeout_s=900,
                    **common,
                )
                measurements.append(m)
                if library not in best or (
                    m.status == "ok" and m.median_s < best[library].median_s
                ):
                    best[library] = m
        ours, peer = best["tripletkit"], best["pml"]
        rows.append(
            [
                label,
                size,
                _outcome(ours),
                _outcome(peer),
                ratio(peer, ours),
                f"{_loss_value(ours)} / {_loss_value(peer)}",
            ]
        )
        print(rows[-1], flush=True)
        _save(rows, measurements, args, env)

    table = _save(rows, measurements, args, env)
    print(table)
    print(f"\nmachine: {machine_info()}")


def _save(rows, measurements, args, env) -> str:
    """Write the results so far (a long run that is interrupted keeps what it measured)."""
    header = ["loss", "size", "tripletkit", "pml 2.9", "pml / tripletkit time", "loss values"]
    table = markdown_table(rows, header)
    save_results("loss_family", measurements, {"table": table, "args": vars(args), "env": env})
    return table


if __name__ == "__main__":
    main()
