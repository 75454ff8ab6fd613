"""Fashion-MNIST, class-disjoint: tripletkit's recipe against pytorch-metric-learning in one script.

Protocol (issue 6): train on the training images of classes 0-4 (30,000), evaluate on the 5,000
test images of classes 5-9 (never seen in training); P×K = 5×32 batches, 187 batches per epoch,
the same number of epochs for everyone. Every row is evaluated by the same code
(:func:`tripletkit.evaluation.retrieval_metrics`, cosine, the item itself left out).

Rows:

* ``raw pixels``: L2-normalised 784-d pixels, no training (the floor).
* ``pml …``: pytorch-metric-learning 2.9 ``TripletMarginLoss`` (margin 0.2) with
  ``TripletMarginMiner("semihard")``, with no miner (all triplets), and with ``BatchHardMiner``, on
  the anchor CNN (3 conv blocks 32/64/128 + BN, global average pool, 64-d, L2-normalised), Adam 1e-3,
  trained by a plain loop here, the network identical to tripletkit's ``small_cnn``.
* ``pml all triplets, tripletkit's network``: pml's batch-all loss on the recipe's network and
  learning rate, to separate what the network is worth from what the loss is worth. The network
  includes the recipe's training-only projector: pml's loss trains through it and the test embeds
  the features before it, as for the recipe.
* ``tripletkit recipe``: ``configs/fashion-mnist.toml`` through ``tripletkit.training.build.train``
  (the real trainer: augmentation, schedule, validation every epoch on held-out training-set
  images of classes 5-9, the best epoch kept).
* ``tripletkit semihard, anchor network``: tripletkit's trainer with the anchor's settings (64-d
  global-average-pool CNN, semi-hard, Adam 1e-3, no augmentation).

Also reported: seconds per epoch (training only) and the mean pairwise distance of the test
embeddings (near 0 = collapsed, whatever the ranking metrics say).

tripletkit's trainer makes glibc's malloc keep freed memory for reuse
(:mod:`tripletkit.training.allocator`, ``train.keep_freed_memory``); the plain pml loops here run
with the allocator as the process starts. Once a tripletkit row has run, the setting holds for
the rest of the process, so the pml rows run first. ``--keep-freed-memory`` applies it before
any row, so that every row, pml's included, runs with it.

Usage::

    python benchmarks/train_fmnist.py              # 5 epochs (about 15 minutes on an idle 2-core CPU)
    python benchmarks/train_fmnist.py --quick      # 1 epoch of 20 batches: checks the script runs

Writes ``benchmarks/results/train_fmnist.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, machine_info, markdown_table
from tripletkit.data.bundled import load_fashion_mnist
from tripletkit.data.splits import FASHION_MNIST_TRAIN_CLASSES
from tripletkit.evaluation import retrieval_metrics
from tripletkit.models import create_model
from tripletkit.training import resolve_config
from tripletkit.training.build import train
from tripletkit.training.config import load_config_file

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "fashion-mnist.toml"
P, K, BATCHES = 5, 32, 187


def _arrays():
    train_set, test_set = load_fashion_mnist("train"), load_fashion_mnist("test")
    train_mask = np.isin(train_set.labels, FASHION_MNIST_TRAIN_CLASSES)
    test_mask = ~np.isin(test_set.labels, FASHION_MNIST_TRAIN_CLASSES)

    def as_float(images):
        return torch.as_tensor(np.asarray(images), dtype=torch.float32).reshape(-1, 1, 28, 28) / 255

    return (
        as_float(train_set.images[train_mask]),
        torch.as_tensor(train_set.labels[train_mask]),
        as_float(test_set.images[test_mask]),
        torch.as_tensor(test_set.labels[test_mask]),
    )


def _scores(embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    metrics = retrieval_metrics(embeddings, labels)
    x = torch.nn.functional.normalize(embeddings.double(), dim=1)
    sample = x[:: max(len(x) // 2000, 1)]
    mean_distance = float(torch.cdist(sample, sample).mean())
    return {
        "precision_at_1": float(metrics["precision_at_1"]),
        "r_precision": float(metrics["r_precision"]),
        "map_at_r": float(metrics["map_at_r"]),
        "mean_pairwise_distance": mean_distance,
    }


def _embed(model, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    model.train()
    return out


def _pk_batches(labels: torch.Tensor, batches: int, generator: torch.Generator):
    by_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]
    for _ in range(batches):
        chosen = torch.randperm(len(by_class), generator=generator)[:P].tolist()
        yield torch.cat(
            [by_class[c][torch.randperm(len(by_class[c]), generator=generator)[:K]] for c in chosen]
        )


def _pml_trainer(
    miner: str | None,
    data,
    *,
    lr: float = 1e-3,
    model_options: dict | None = None,
    embedding_dim: int | None = 64,
    projector: list[int] | None = None,
    projector_frozen: bool = False,
):
    """pml's training loop of the issue's protocol: returns ``(model, step, normalise)``, where
    ``step(index)`` trains one step on the training images ``index``."""
    from pytorch_metric_learning import losses, miners

    xtr, ytr, _, _ = data
    torch.manual_seed(0)
    options = dict(model_options or {})
    model = create_model(
        "small_cnn",
        embedding_dim=embedding_dim,
        projector=projector,
        projector_frozen=projector_frozen,
        **options,
    )
    spec = model.input_spec
    mean, std = spec.mean[0], spec.std[0]
    loss_fn = losses.TripletMarginLoss(margin=0.2)
    mine = {
        None: None,
        "semihard": miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"),
        "batch-hard": miners.BatchHardMiner(),
    }[miner]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step(index: torch.Tensor) -> None:
        # With a projector the loss trains through it and the test embeds the layer before.
        embeddings = model((xtr[index] - mean) / std, project=projector is not None)
        labels = ytr[index]
        loss = (
            loss_fn(embeddings, labels, mine(embeddings, labels))
            if mine
            else loss_fn(embeddings, labels)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return model, step, (lambda x: (x - mean) / std)


def run_pml(miner: str | None, epochs: int, batches: int, data, **options: Any) -> dict[str, Any]:
    model, step, normalise = _pml_trainer(miner, data, **options)
    _, ytr, xte, yte = data
    generator = torch.Generator().manual_seed(0)
    seconds = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        for index in _pk_batches(ytr, batches, generator):
            step(index)
        seconds += time.perf_counter() - start
    scores = _scores(_embed(model, normalise(xte)), yte)
    return {**scores, "seconds_per_epoch": seconds / epochs}


def interleaved_step_times(data, rounds: int = 8, steps: int = 10) -> dict[str, float]:
    """Median milliseconds of one training step (forward, loss, backward, optimizer) of each
    library's recipe on one fixed P×K batch, the recipes taking turns in bursts of ``steps``.

    The epoch columns are measured one row after another, minutes apart, and this machine's speed
    drifts by up to 1.8× over an hour (the same plain loop measured 128 and 72 ms a step), so their
    ratios can mislead; taking turns puts every recipe under the same conditions. Data loading,
    augmentation and the trainer's bookkeeping are not included (the epoch columns include them).
    """
    from pytorch_metric_learning import losses, miners

    from tripletkit.losses import BatchTripletLoss
    from tripletkit.training.precision import resolve_precision

    cpu = torch.device("cpu")
    xtr, ytr, _, _ = data
    index = next(_pk_batches(ytr, 1, torch.Generator().manual_seed(0)))
    x, y = xtr[index], ytr[index]
    recipe = load_config_file(RECIPE)

    def pml_step(miner, bf16=False):
        torch.manual_seed(0)
        model = create_model("small_cnn", embedding_dim=64)
        spec = model.input_spec
        inputs = (x - spec.mean[0]) / spec.std[0]
        loss_fn = losses.TripletMarginLoss(margin=0.2)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                embeddings = model(inputs)
            embeddings = embeddings.float()
            loss = loss_fn(embeddings, y, miner(embeddings, y)) if miner else loss_fn(embeddings, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        return step

    def tripletkit_step():
        torch.manual_seed(0)
        model = create_model(
            "small_cnn",
            projector=recipe["model.projector"],
            projector_frozen=recipe.get("model.projector_frozen", False),
            **recipe["model.options"],
        )
        loss_fn = BatchTripletLoss(
            margin=recipe["loss.margin"], mining=recipe["loss.mining"], distance="squared_euclidean"
        )
        bf16 = resolve_precision(recipe.get("train.precision", "fp32"), cpu) == "bf16"
        # The trainer's optimizer: fused AdamW over the trained parameters.
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=recipe["optim.lr"], fused=True)

        def step():
            # The trainer's autocast: bfloat16 for the network where the recipe's precision
            # resolves to it, the loss in float32.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                embeddings = model(x, project=True)
            loss = loss_fn(embeddings.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    recipes = {
        "pml semihard miner, anchor network": pml_step(
            miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
        ),
        "pml all triplets, anchor network": pml_step(None),
        "pml BatchHardMiner, anchor network": pml_step(miners.BatchHardMiner()),
        "tripletkit recipe (configs/fashion-mnist.toml)": tripletkit_step(),
    }
    if resolve_precision("auto", cpu) == "bf16":
        # Not a pml recipe (its examples train in float32), but what a pml user could add: the
        # same bfloat16 autocast around the network.
        recipes["pml BatchHardMiner, anchor network, bf16 autocast"] = pml_step(
            miners.BatchHardMiner(), bf16=True
        )
    times: dict[str, list[float]] = {name: [] for name in recipes}
    for step in recipes.values():  # warm-up (first-call compilation, allocations)
        for _ in range(3):
            step()
    for _ in range(rounds):
        for name, step in recipes.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append(1000 * (time.perf_counter() - start) / steps)
    return {name: float(np.median(values)) for name, values in times.items()}


#: The pml loops timed in lockstep with tripletkit's trainer: the fastest (BatchHardMiner, which
#: collapses) and the one with the recipe's own mining (semi-hard).
LOCKSTEP_PEERS = {"pml BatchHardMiner": "batch-hard", "pml semihard miner": "semihard"}


def lockstep_epoch_seconds(
    data, batches: int, rounds: int = 2, burst: int = 10
) -> dict[str, list[float]]:
    """Seconds of one training epoch of tripletkit's recipe (its trainer: data loading,
    bookkeeping and mid-epoch checkpoints included) and of pml's loops of
    :data:`LOCKSTEP_PEERS` (anchor network, batches drawn and normalised in the loop), run in
    lockstep: before every ``burst``-th of the trainer's loss calls, each pml loop runs ``burst``
    steps, timed, and their seconds are taken out of the trainer's epoch. All epochs then run
    under the same machine conditions, burst by burst; this machine's speed drifts by 10-40%
    within minutes, which whole epochs taking turns cannot cancel (they measured 13.9-19.6 s for
    the same epoch). Bursts rather than single steps: alternating every step leaves each step the
    other loop's caches (both loops measured 2-3% slower that way, the recipe a little more)."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    from tripletkit.losses import BatchTripletLoss

    times: dict[str, list[float]] = {"tripletkit recipe": [], **{n: [] for n in LOCKSTEP_PEERS}}
    _, ytr, _, _ = data
    for _ in range(rounds):
        peers = {
            name: {
                "step": _pml_trainer(miner, data)[1],
                "batches": _pk_batches(ytr, batches, torch.Generator().manual_seed(0)),
                "seconds": 0.0,
                "steps": 0,
            }
            for name, miner in LOCKSTEP_PEERS.items()
        }
        calls = [0]

        def before_loss(module, args, peers=peers, calls=calls):
            if not isinstance(module, BatchTripletLoss):
                return
            calls[0] += 1
            if (calls[0] - 1) % burst:
                return
            for peer in peers.values():
                start = time.perf_counter()
                for _, index in zip(range(burst), peer["batches"], strict=False):
                    peer["step"](index)
                    peer["steps"] += 1
                peer["seconds"] += time.perf_counter() - start

        handle = register_module_forward_pre_hook(before_loss)
        try:
            recipe = run_tripletkit({"data.batches_per_epoch": batches, "train.epochs": 1}, RECIPE)
        finally:
            handle.remove()
        for name, peer in peers.items():
            if peer["steps"] != batches:
                raise RuntimeError(f"{name} ran {peer['steps']} steps in lockstep, not {batches}")
            times[name].append(round(peer["seconds"], 2))
        own = recipe["seconds_per_epoch"] - sum(peer["seconds"] for peer in peers.values())
        times["tripletkit recipe"].append(round(own, 2))
    return times


def run_tripletkit(overrides: dict[str, Any], config_file: Path | None) -> dict[str, Any]:
    flat = load_config_file(config_file) if config_file else {}
    flat.update(
        {
            "data.dataset": "fashion-mnist",
            "train.quiet": True,
            "train.report": False,
            "train.tensorboard": False,
            **overrides,
        }
    )
    config = resolve_config(overrides=flat)
    with tempfile.TemporaryDirectory() as tmp:
        outcome = train(config, run_dir=Path(tmp) / "run")
        # Re-embed the test set with the kept model to measure collapse the same way as above.
        from tripletkit.inference import embed_dataset, load_run, open_dataset

        run = load_run(Path(tmp) / "run")
        dataset, sources = open_dataset("fashion-mnist:test", run)
        embedded = embed_dataset(run, dataset, sources)
        scores = _scores(embedded.embeddings, torch.as_tensor(embedded.labels))
    history = outcome.result.history
    seconds = [h["seconds"] for h in history if "seconds" in h]
    return {
        **scores,
        "seconds_per_epoch": float(np.mean(seconds)) if seconds else float("nan"),
        "best_epoch": outcome.result.best_epoch,
        "test_before": outcome.test_before,
        "validation_map_at_r_per_epoch": [outcome.result.before.get("map_at_r")]
        + [h.get("map_at_r") for h in history],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 epoch of 20 batches")
    parser.add_argument(
        "--epoch-rounds",
        type=int,
        default=2,
        help="rounds of the lockstep epochs (the recipe and BatchHardMiner, one epoch each)",
    )
    parser.add_argument("--only", nargs="*", help="row keys to run (default: all)")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="make malloc keep freed memory before any row (pml's included), as the trainer does",
    )
    args = parser.parse_args()
    if args.keep_freed_memory:
        from tripletkit.training.allocator import keep_freed_memory

        keep_freed_memory()
    epochs, batches = (1, 20) if args.quick else (args.epochs, BATCHES)
    torch.manual_seed(0)
    data = _arrays()
    recipe = load_config_file(RECIPE)
    rows: list[tuple[str, str, Any]] = [
        ("pixels", "raw pixels (L2-normalised 784-d)", None),
        (
            "pml-semihard",
            "pml semihard miner, anchor network",
            lambda: run_pml("semihard", epochs, batches, data),
        ),
        (
            "pml-all",
            "pml all triplets, anchor network",
            lambda: run_pml(None, epochs, batches, data),
        ),
        (
            "pml-batchhard",
            "pml BatchHardMiner, anchor network",
            lambda: run_pml("batch-hard", epochs, batches, data),
        ),
        (
            "pml-all-recipe-network",
            "pml all triplets, tripletkit's network and lr",
            lambda: run_pml(
                None,
                epochs,
                batches,
                data,
                lr=recipe["optim.lr"],
                model_options=recipe["model.options"],
                embedding_dim=recipe.get("model.embedding_dim"),
                projector=recipe.get("model.projector"),
                projector_frozen=recipe.get("model.projector_frozen", False),
            ),
        ),
        (
            "tk-anchor",
            "tripletkit semihard, anchor network",
            lambda: run_tripletkit(
                {
                    "model.name": "small_cnn",
                    "loss.mining": "semihard",
                    "optim.lr": 1e-3,
                    "data.augment": False,
                    "data.p": P,
                    "data.k": K,
                    "data.batches_per_epoch": batches,
                    "train.epochs": epochs,
                },
                None,
            ),
        ),
        (
            "tk-recipe",
            "tripletkit recipe (configs/fashion-mnist.toml)",
            lambda: run_tripletkit(
                {"data.batches_per_epoch": batches, "train.epochs": epochs}, RECIPE
            ),
        ),
    ]
    results: dict[str, dict[str, Any]] = {}
    for key, label, runner in rows:
        if args.only and key not in args.only:
            continue
        start = time.perf_counter()
        if runner is None:
            xte, yte = data[2], data[3]
            result = {**_scores(xte.flatten(1), yte), "seconds_per_epoch": 0.0}
        else:
            result = runner()
        result["label"] = label
        result["wall_s"] = time.perf_counter() - start
        results[key] = result
        print(
            f"{label}: MAP@R {result['map_at_r']:.4f}  P@1 {result['precision_at_1']:.4f}  "
            f"{result['seconds_per_epoch']:.1f} s/epoch",
            flush=True,
        )

    pml_best = max((v["map_at_r"] for k, v in results.items() if k.startswith("pml")), default=None)
    table = []
    for result in results.values():
        gap = "" if pml_best is None else f"{100 * (result['map_at_r'] - pml_best):+.1f}"
        table.append(
            [
                result["label"],
                f"{result['precision_at_1']:.3f}",
                f"{result['r_precision']:.3f}",
                f"{result['map_at_r']:.3f}",
                gap,
                f"{result['seconds_per_epoch']:.1f}",
                f"{result['mean_pairwise_distance']:.3f}",
            ]
        )
    machine = machine_info()
    header = [
        "",
        "P@1",
        "R-precision",
        "MAP@R",
        "MAP@R − best pml (points)",
        "s/epoch",
        "mean pairwise distance",
    ]
    summary = (
        f"### Fashion-MNIST, train classes 0-4, test classes 5-9 ({epochs} epochs × {batches} "
        f"batches of {P}×{K})\n\n"
        + markdown_table(table, header)
        + f"\n\nMeasured {machine['date']} on {machine['cpus']} CPU cores, torch {machine['torch']}, "
        f"load average {machine['load_average'][0]:.1f} at the end (other jobs share the machine "
        "when it is above 2). `python benchmarks/train_fmnist.py` reproduces it."
    )
    if not args.only:
        steps = interleaved_step_times(data, rounds=2 if args.quick else 8)
        fastest_pml = min(
            v for k, v in steps.items() if k.startswith("pml") and "autocast" not in k
        )
        summary += (
            "\n\nOne training step on one fixed batch, the recipes taking turns (median of "
            "bursts of 10 steps; no data loading or bookkeeping):\n\n"
            + markdown_table(
                [[name, f"{ms:.1f}", f"{ms / fastest_pml:.2f}"] for name, ms in steps.items()],
                ["", "ms/step", "÷ fastest pml"],
            )
        )
        results["interleaved_step_ms"] = steps
        lockstep = lockstep_epoch_seconds(
            data, batches, rounds=1 if args.quick else args.epoch_rounds
        )
        recipe_s = lockstep["tripletkit recipe"]
        ratios = {
            name: [round(a / b, 3) for a, b in zip(recipe_s, lockstep[name], strict=True)]
            for name in LOCKSTEP_PEERS
        }
        summary += (
            "\n\nOne epoch each in lockstep (before every 10th of the trainer's loss calls, "
            "10 steps of each pml loop, timed; the trainer's epoch includes data loading, "
            "bookkeeping and mid-epoch checkpoints, less the pml steps), seconds per round:\n\n"
            + markdown_table(
                [
                    [name, " / ".join(f"{t:.2f}" for t in values)]
                    for name, values in lockstep.items()
                ]
                + [
                    [f"ratio tripletkit ÷ {name}", " / ".join(f"{r:.3f}" for r in values)]
                    for name, values in ratios.items()
                ],
                ["", "s/epoch"],
            )
        )
        results["lockstep_epoch_seconds"] = {**lockstep, "ratios": ratios}
    print(summary)
    stem = "train_fmnist-quick" if args.quick else "train_fmnist"
    if args.keep_freed_memory:
        stem += "-keep-freed-memory"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{stem}.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "epochs": epochs,
                "batches": batches,
                "keep_freed_memory_for_every_row": args.keep_freed_memory,
                "results": results,
            },
            indent=2,
            default=str,
        )
    )
    (RESULTS_DIR / f"{stem}.md").write_text(summary + "\n")


if __name__ == "__main__":
    main()
