"""The multiple-negatives ranking loss: tripletkit against sentence-transformers, in one process.

B L2-normalised (query, positive) pairs of 128 features plus B hard negatives; forward and backward
of the loss alone (no model), temperature 0.05 = sentence-transformers' scale 20. tripletkit with
and without its additive margin; sentence-transformers'
``MultipleNegativesRankingLoss.compute_loss_from_embeddings``. The implementations take turns
(median of 7 rounds), so the machine's speed drifts alike for all; the loss values are printed to
show that the two libraries compute the same loss (the margin one is larger by design).

Usage::

    python benchmarks/mnrl.py        # writes benchmarks/results/mnrl.json and .md
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, machine_info, markdown_table
from tripletkit.losses import MultipleNegativesRankingLoss

SIZES = (1024, 4096)
ROUNDS = 7


def _implementations():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss as PeerLoss,
        )

    peer = PeerLoss(model=torch.nn.Identity())  # the loss of embeddings only: no model is called
    plain = MultipleNegativesRankingLoss(temperature=0.05)
    margin = MultipleNegativesRankingLoss(temperature=0.05, margin=0.1)
    return {
        "tripletkit": lambda q, p, n: plain(q, p, n),
        "tripletkit, margin 0.1": lambda q, p, n: margin(q, p, n),
        "sentence-transformers": lambda q, p, n: peer.compute_loss_from_embeddings([q, p, n], None),
    }


def main() -> None:
    torch.set_num_threads(2)
    implementations = _implementations()
    rows, records = [], []
    for batch in SIZES:
        generator = torch.Generator().manual_seed(0)
        inputs = [
            torch.nn.functional.normalize(torch.randn(batch, 128, generator=generator), dim=1)
            for _ in range(3)
        ]

        def step(loss_fn, inputs=inputs):
            leaves = [x.clone().requires_grad_(True) for x in inputs]
            loss = loss_fn(*leaves)
            loss.backward()
            return float(loss.detach())

        values = {name: step(fn) for name, fn in implementations.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in implementations}
        for _ in range(ROUNDS):
            for name, fn in implementations.items():
                start = time.perf_counter()
                step(fn)
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(t) for name, t in times.items()}
        peer = median["sentence-transformers"]
        for name in implementations:
            rows.append(
                [
                    f"{batch:,}",
                    name,
                    f"{1000 * median[name]:.1f}",
                    f"{peer / median[name]:.2f}×",
                    f"{values[name]:.5f}",
                ]
            )
            records.append(
                {
                    "batch": batch,
                    "implementation": name,
                    "seconds": median[name],
                    "loss": values[name],
                }
            )
    machine = machine_info()
    table = markdown_table(
        rows, ["B", "implementation", "ms (forward + backward)", "speed-up vs peer", "loss"]
    )
    summary = (
        "### Multiple-negatives ranking loss (B pairs + B hard negatives, D = 128)\n\n"
        + table
        + f"\n\nMeasured {machine['date']} on {machine['cpus']} CPU cores, torch "
        f"{machine['torch']}; the implementations take turns, median of {ROUNDS} rounds."
    )
    print(summary)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "mnrl.json").write_text(
        json.dumps({"machine": machine, "results": records}, indent=2, default=str)
    )
    (RESULTS_DIR / "mnrl.md").write_text(summary + "\n")


if __name__ == "__main__":
    main()
