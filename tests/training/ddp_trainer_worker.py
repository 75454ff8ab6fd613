"""One rank of the Python-API torchrun tests (run by tests/training/test_precision_accumulation_ddp.py
under ``torchrun --nproc_per_node=2``, not by pytest).

Usage: python ddp_trainer_worker.py SCENARIO RUN_DIR OUT_DIR

* ``owned``: ``fit`` opens the process group itself. Validation (rank 0 only) gets worse after the
  first epoch, so early stopping (patience 1) ends the run after epoch 2 of 4: every rank must
  leave the loop at the same epoch, and every rank must end with rank 0's best weights.
* ``caller``: the caller opens the group and calls ``fit`` twice on one Trainer: the model is
  handed back unwrapped after each call (so the second is not wrapped twice) and the caller's
  group is still open afterwards.
* ``mismatch``: rank 1 loads a different training set; ``fit`` raises on every rank (instead of
  the ranks splitting two different epochs) and still closes the group it opened.

Each rank writes ``OUT_DIR/<scenario>-rank<R>.json`` with what it saw.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from tests.training.test_precision_accumulation_ddp import BASE, _data, _model
from tripletkit.data import FeatureDataset
from tripletkit.losses import BatchTripletLoss
from tripletkit.training import TrainData, Trainer, resolve_config

# Validation scores of rank 0: before training, then epochs 1, 2, 3, 4 (never reached).
SCORES = [0.5, 0.6, 0.55, 0.7, 0.8]


def checksum(model: torch.nn.Module) -> float:
    return sum(float(p.detach().double().sum()) for p in model.parameters())


def trainer(
    model: torch.nn.Module, run_dir: str, overrides: dict, labels: torch.Tensor | None = None
) -> Trainer:
    x, y = _data()
    y = y if labels is None else labels
    scores = iter(SCORES)

    def evaluate(embeddings: torch.Tensor, labels: torch.Tensor) -> dict:
        return {"map_at_r": next(scores), "precision_at_1": 0.5}

    return Trainer(
        model,
        BatchTripletLoss(margin=0.5, mining="all"),
        TrainData(FeatureDataset(x, y), FeatureDataset(x, y)),
        resolve_config(overrides={**BASE, **overrides}),
        run_dir,
        evaluate,
    )


def owned(run_dir: str) -> dict:
    model = _model()
    overrides = {"train.epochs": 4, "train.early_stopping_patience": 1}
    run = trainer(model, run_dir, overrides)
    result = run.fit()
    return {
        "initialized_after_fit": dist.is_initialized(),
        "model_is_callers": run.model is model,
        "checksum": checksum(model),
        "stopped_early": result.stopped_early,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "after_map_at_r": result.after.get("map_at_r"),
    }


def caller(run_dir: str) -> dict:
    dist.init_process_group("gloo")
    model = _model()
    run = trainer(model, run_dir, {"train.epochs": 1})
    run.fit()
    first = {"wrapped": isinstance(run.model, torch.nn.parallel.DistributedDataParallel)}
    first["checksum"] = checksum(model)
    run.evaluate = trainer(model, run_dir, {}).evaluate  # fresh validation scores
    run.fit()
    out = {
        "first_fit": first,
        "wrapped_after_second_fit": isinstance(
            run.model, torch.nn.parallel.DistributedDataParallel
        ),
        "model_is_callers": run.model is model,
        "checksum": checksum(model),
        "callers_group_still_open": dist.is_initialized(),
    }
    dist.destroy_process_group()
    return out


def mismatch(run_dir: str) -> dict:
    _, labels = _data()
    if os.environ["RANK"] == "1":
        labels = labels.flip(0)
    run = trainer(_model(), run_dir, {}, labels)
    try:
        run.fit()
    except ValueError as error:
        return {"error": str(error), "initialized_after_fit": dist.is_initialized()}
    return {"error": None}


if __name__ == "__main__":
    scenario, run_dir, out_dir = sys.argv[1:4]
    record = {"owned": owned, "caller": caller, "mismatch": mismatch}[scenario](run_dir)
    rank = os.environ["RANK"]
    with open(os.path.join(out_dir, f"{scenario}-rank{rank}.json"), "w") as handle:
        json.dump(record, handle)
    # gloo's teardown at interpreter exit has aborted a rank now and then (SIGABRT, "terminate
    # called without an active exception"; in CI runs, after both records were written, after a
    # raised fit and after a successful one). What the scenarios test is in the records: leave
    # without the interpreter's teardown, as `python -m tripletkit` does under torchrun.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
