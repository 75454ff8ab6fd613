"""Batch triplet losses, forward + backward: tripletkit against its peers and the distance floor.

Each configuration runs in its own process (``benchmarks/harness.py``): median time of the step,
peak RSS, and "out of memory" / "timeout" where a peer cannot finish. D = 128, margin 0.2,
L2-normalised Gaussian embeddings, ``B / K`` classes of K items.

* **floor**: the distance matrix alone (x·xᵀ with norms, forward + backward, plain torch), the cost of
  any implementation that computes the matrix unfused.
* **tripletkit**, every mining mode, default distance (squared euclidean): reported as a ratio to the
  floor.
* **peers**, on euclidean distances (their default), against tripletkit on the same distance:
  pytorch-metric-learning 2.9 (TripletMarginLoss without a miner = batch-all; with
  TripletMarginMiner("semihard"); with BatchHardMiner) and sentence-transformers 6.2
  (BatchAllTripletLoss, BatchSemiHardTripletLoss, BatchHardTripletLoss).

Usage::

    python benchmarks/losses.py                 # the full run (about an hour on 2 cores)
    python benchmarks/losses.py --quick         # B in {1024, 4096}
    python benchmarks/losses.py --device cuda   # on a GPU, where there is one

Writes ``benchmarks/results/losses[-<device>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    RESULTS_DIR,
    Measurement,
    format_outcome,
    machine_info,
    markdown_table,
    measure,
    ratio,
    save_results,
)

MODES = ("all", "hard", "semihard", "semihard-window", "hard-window", "easy-positive")
PEER_TASKS = (("batch-all", "all"), ("semi-hard", "semihard"), ("batch-hard", "hard"))
PEERS_UP_TO = 16_384  # both peers' batch-all already runs out of 20 GB here


def _repeats(batch: int, device: str) -> tuple[int, bool, float]:
    """(timed repeats, warm-up, minimum seconds of timing) for a batch size."""
    if device.startswith("cuda"):  # steps of milliseconds: many repeats, a short minimum time
        return 10, True, 1.0
    if batch >= 65_536:
        return 1, False, 0.0
    if batch >= 16_384:
        return 2, True, 0.0
    return 5, True, 3.0


def run(batches, ks, device, rss_limit_mb, timeout_s):
    results: list[Measurement] = []

    def go(name, target, config):
        repeats, warmup, min_time_s = _repeats(config["batch"], device)
        m = measure(
            name,
            target,
            {**config, "device": device},
            repeats=repeats,
            warmup=warmup,
            min_time_s=min_time_s,
            timeout_s=timeout_s,
            rss_limit_mb=rss_limit_mb,
        )
        print(
            f"{name:45s} B={config['batch']:>6} K={config['k']:>2}  {format_outcome(m)}", flush=True
        )
        results.append(m)
        return m

    for batch in batches:
        for k in ks:
            base = {"batch": batch, "k": k}
            go("floor", "loss_targets:floor", base)
            for mode in MODES:
                go(f"tripletkit {mode}", "loss_targets:tripletkit", {**base, "mining": mode})
            if batch > PEERS_UP_TO:
                continue
            for _task, mode in PEER_TASKS:
                go(
                    f"tripletkit {mode} (euclidean)",
                    "loss_targets:tripletkit",
                    {**base, "mining": mode, "distance": "euclidean"},
                )
                go(f"pml {mode}", "loss_targets:pml", {**base, "variant": mode})
                go(
                    f"sentence-transformers {mode}",
                    "loss_targets:sentence_transformers",
                    {**base, "variant": mode},
                )
    return results


def _find(results, name, batch, k):
    for m in results:
        if m.name == name and m.config["batch"] == batch and m.config["k"] == k:
            return m
    return None


def report(results, batches, ks, device: str = "cpu") -> str:
    lines = []
    rows = []
    for batch in batches:
        for k in ks:
            floor = _find(results, "floor", batch, k)
            if floor is None:
                continue
            row = [f"{batch:,}", str(k), format_outcome(floor)]
            for mode in MODES:
                m = _find(results, f"tripletkit {mode}", batch, k)
                row.append(f"{format_outcome(m)} ({ratio(m, floor)})" if m else "-")
            rows.append(row)
    lines.append(
        "**tripletkit, every mining mode, against the floor** (time / peak RSS, ratio to floor)\n"
    )
    lines.append(markdown_table(rows, ["B", "K", "floor", *MODES]))

    rows = []
    for batch in batches:
        for k in ks:
            for task, mode in PEER_TASKS:
                ours = _find(results, f"tripletkit {mode} (euclidean)", batch, k)
                if ours is None:
                    continue
                pml_m = _find(results, f"pml {mode}", batch, k)
                st_m = _find(results, f"sentence-transformers {mode}", batch, k)
                rows.append(
                    [
                        f"{batch:,}",
                        str(k),
                        task,
                        format_outcome(ours),
                        format_outcome(pml_m),
                        ratio(pml_m, ours),
                        format_outcome(st_m),
                        ratio(st_m, ours),
                    ]
                )
    lines.append(
        "\n**Against the peers** (euclidean distance for all; speed-up = peer time / tripletkit time)\n"
    )
    lines.append(
        markdown_table(
            rows,
            [
                "B",
                "K",
                "task",
                "tripletkit",
                "pytorch-metric-learning",
                "speed-up",
                "sentence-transformers",
                "speed-up",
            ],
        )
    )
    info = machine_info()
    where = f"{info['cpus']} CPUs"
    if device.startswith("cuda"):
        where = f"{info['cuda']} ({where}; memory is the CUDA allocator's peak)"
    lines.append(
        f"\nMeasured {info['date']} on {where}, torch {info['torch']}, "
        f"{info['torch_threads']} threads, load average {info['load_average'][0]:.2f} at the end."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="B in {1024, 4096} only")
    parser.add_argument("--batches", type=int, nargs="*")
    parser.add_argument("--ks", type=int, nargs="*", default=[4, 32])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rss-limit-mb", type=float, default=20_000)
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the saved results of the batch sizes not run now (add rows to an earlier run)",
    )
    args = parser.parse_args()
    batches = args.batches or ([1024, 4096] if args.quick else [1024, 4096, 16384, 65536])
    results = run(batches, args.ks, args.device, args.rss_limit_mb, args.timeout_s)
    stem = "losses" if args.device == "cpu" else f"losses-{args.device}"
    if args.merge and (RESULTS_DIR / f"{stem}.json").is_file():
        saved = json.loads((RESULTS_DIR / f"{stem}.json").read_text())
        kept = [
            Measurement(**m) for m in saved["measurements"] if m["config"]["batch"] not in batches
        ]
        results = kept + results
        batches = sorted({*batches, *saved.get("batches", [])})
    path = save_results(stem, results, {"batches": batches, "ks": args.ks})
    summary = report(results, batches, args.ks, args.device)
    (RESULTS_DIR / f"{stem}.md").write_text(summary + "\n")
    print(summary)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
