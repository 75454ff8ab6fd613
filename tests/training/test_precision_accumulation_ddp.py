"""Gradient accumulation (replayed by hand), bfloat16 autocast on CPU, and a 2-process torchrun."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tripletkit.data import FeatureDataset, PKSampler
from tripletkit.losses import BatchTripletLoss
from tripletkit.training import TrainData, Trainer, resolve_config
from tripletkit.training import trainer as trainer_module
from tripletkit.training.checkpoint import load_checkpoint
from tripletkit.training.run_log import read_metrics

BASE = {
    "data.p": 4,
    "data.k": 4,
    "data.batches_per_epoch": 4,
    "train.epochs": 1,
    "train.quiet": True,
    "train.report": False,
    "train.tensorboard": False,
    "optim.lr": 0.01,
    "optim.weight_decay": 0.0,
    "optim.warmup_fraction": 0.0,
    "optim.schedule": "constant",
    "optim.grad_clip": None,
}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(8).repeat_interleave(10)
    return torch.randn(80, 12, generator=generator) + labels[:, None] * 0.1, labels


def _model() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6))


def _fit(tmp_path: Path, **overrides) -> tuple[torch.nn.Module, torch.nn.Module, Path]:
    x, y = _data()
    model = _model()
    initial = copy.deepcopy(model)
    config = resolve_config(overrides={**BASE, **overrides})
    run = tmp_path / "run"
    Trainer(
        model,
        BatchTripletLoss(margin=0.5, mining="all"),
        TrainData(FeatureDataset(x, y), FeatureDataset(x, y)),
        config,
        run,
    ).fit()
    return initial, model, run


def test_gradient_accumulation_equals_a_hand_replay(tmp_path):
    initial, trained, run = _fit(tmp_path, **{"train.grad_accumulation": 2})
    steps = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "step"]
    assert len(steps) == 2  # 4 batches, 2 per optimizer step

    # Replay: the same P×K batches, each micro-batch's loss / 2 accumulated, one AdamW step per pair.
    x, y = _data()
    sampler = PKSampler(y, 4, 4, seed=0)
    sampler.set_epoch(0)
    batches = list(sampler)[:4]
    model = initial
    loss_fn = BatchTripletLoss(margin=0.5, mining="all")
    # The trainer's fused AdamW: the last layer's bias has a zero gradient up to rounding (the
    # distances do not see it), which Adam's normalised step turns into updates of order lr that
    # differ between the fused and the unfused implementations' rounding.
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0, fused=True)
    for first in (0, 2):
        optimizer.zero_grad()
        for batch in batches[first : first + 2]:
            (loss_fn(model(x[batch]), y[batch]) / 2).backward()
        optimizer.step()
    for replayed, got in zip(model.parameters(), trained.parameters(), strict=True):
        torch.testing.assert_close(got, replayed, rtol=1e-5, atol=1e-6)
    # Accumulating is not the same as stepping on each batch: the weights differ from that.
    _, per_batch, _ = _fit(tmp_path / "single")
    assert any(
        not torch.allclose(a, b, atol=1e-6)
        for a, b in zip(per_batch.parameters(), trained.parameters(), strict=True)
    )


def test_bf16_autocast_on_cpu_trains_in_bfloat16_and_keeps_fp32_weights(tmp_path):
    _, fp32_model, _ = _fit(tmp_path / "fp32")
    _, bf16_model, run = _fit(tmp_path / "bf16", **{"train.precision": "bf16"})
    for p in bf16_model.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
    # Close to the fp32 run (bfloat16 keeps 8 bits of mantissa) but not identical: autocast ran.
    diffs = [
        (a - b).abs().max().item()
        for a, b in zip(fp32_model.parameters(), bf16_model.parameters(), strict=True)
    ]
    assert max(diffs) > 0
    assert max(diffs) < 0.05
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "step"]
    assert len(losses) == 4 and all(0 <= v < 10 for v in losses)


def _native_bfloat16(monkeypatch, present: bool) -> None:
    """Make this CPU look as if it had (or lacked) bfloat16 instructions."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: present)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_trains_as_the_precision_it_resolves_to(
    tmp_path, monkeypatch, native, expected
):
    _native_bfloat16(monkeypatch, native)
    _, auto_model, run = _fit(tmp_path / "auto", **{"train.precision": "auto"})
    _, same_model, _ = _fit(tmp_path / "same", **{"train.precision": expected})
    for a, b in zip(auto_model.parameters(), same_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert json.loads((run / "summary.json").read_text())["precision"] == expected
    # ... and not as the other one (the two precisions give different weights here).
    other = "fp32" if expected == "bf16" else "bf16"
    _, other_model, _ = _fit(tmp_path / "other", **{"train.precision": other})
    assert any(
        not torch.equal(a, b)
        for a, b in zip(auto_model.parameters(), other_model.parameters(), strict=True)
    )


def test_resolve_precision(monkeypatch):
    from tripletkit.training.precision import resolve_precision

    cpu = torch.device("cpu")
    for given in ("fp32", "bf16", "fp16"):
        assert resolve_precision(given, cpu) == given
    _native_bfloat16(monkeypatch, True)
    assert resolve_precision("auto", cpu) == "bf16"
    _native_bfloat16(monkeypatch, False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    # A CUDA device: bf16 where the GPU supports it (asked of torch, not of the CPU).
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", cuda) == "fp32"
    # Native bfloat16 only: a GPU that emulates it (supported only with emulation) is fp32.
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )
    assert resolve_precision("auto", cuda) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", cuda) == "bf16"
    assert resolve_precision("auto", torch.device("meta")) == "fp32"


def _fp16_on_cpu(monkeypatch) -> None:
    """Let the trainer run float16 on CPU (a CUDA precision; CPU autocast computes it too, which
    lets the loss scaling be checked here), on inputs 10× larger, whose scaled gradients
    overflow float16 at the initial scale 2**16 (the scaler must skip that step and back off) and
    fit at half of it (the steps after are taken)."""
    monkeypatch.setattr(trainer_module, "FP16_REFUSED_DEVICES", ())
    quiet = _data

    def loud() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = quiet()
        return x * 10, y

    monkeypatch.setattr(sys.modules[__name__], "_data", loud)


def _replay_fp16(
    initial: torch.nn.Module, scaled: bool, accumulation: int = 1, clip: float | None = None
) -> tuple[torch.nn.Module, dict]:
    """The trainer's 4 batches by hand under float16 autocast, with (or without) a loss scaler:
    ``accumulation`` batches per optimizer step, gradients unscaled before clipping."""
    from tripletkit.training.trainer import clip_gradients

    x, y = _data()
    sampler = PKSampler(y, 4, 4, seed=0)
    sampler.set_epoch(0)
    batches = list(sampler)[:4]
    model = copy.deepcopy(initial)
    loss_fn = BatchTripletLoss(margin=0.5, mining="all")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0, fused=True)
    scaler = torch.amp.GradScaler("cpu", enabled=scaled)
    for first in range(0, 4, accumulation):
        for batch in batches[first : first + accumulation]:
            with torch.autocast("cpu", dtype=torch.float16):
                embeddings = model(x[batch])
            loss = loss_fn(embeddings.float(), y[batch])
            scaler.scale(loss / accumulation).backward()
        scaler.unscale_(optimizer)
        if clip is not None:
            clip_gradients(list(model.parameters()), clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return model, scaler.state_dict()


@pytest.mark.parametrize(("accumulation", "clip"), [(1, None), (2, 1.0)])
def test_fp16_trains_with_a_dynamic_loss_scale(tmp_path, monkeypatch, accumulation, clip):
    _fp16_on_cpu(monkeypatch)
    options = {"train.grad_accumulation": accumulation, "optim.grad_clip": clip}
    initial, trained, run = _fit(
        tmp_path, **{"train.precision": "fp16", "train.device": "cpu"}, **options
    )
    replayed, scaler_state = _replay_fp16(initial, True, accumulation, clip)
    for a, b in zip(trained.parameters(), replayed.parameters(), strict=True):
        assert torch.equal(a, b)
    # The first step overflowed at the initial scale 2**16 and was skipped: the scale came down;
    # later steps were taken.
    assert scaler_state["scale"] < 2.0**16
    assert any(
        not torch.equal(a, b)
        for a, b in zip(initial.parameters(), trained.parameters(), strict=True)
    )
    _, state = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert state["grad_scaler"] == scaler_state
    # Without the scaler the same float16 steps end elsewhere: the test sees the scaling.
    unscaled, _ = _replay_fp16(initial, False, accumulation, clip)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(trained.parameters(), unscaled.parameters(), strict=True)
    )


def test_fp16_resume_continues_with_the_saved_loss_scale(tmp_path, monkeypatch):
    _fp16_on_cpu(monkeypatch)
    fp16 = {"train.precision": "fp16", "train.device": "cpu"}
    _, straight, _ = _fit(tmp_path / "straight", **fp16, **{"train.epochs": 2})
    # One epoch, then resumed for a second: the same weights only if the loss scale, lowered in
    # the first epoch, is restored with the optimizer.
    _, _, run = _fit(tmp_path / "resumed", **fp16)
    _, state = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert state["grad_scaler"]["scale"] < 2.0**16
    x, y = _data()
    resumed = _model()
    Trainer(
        resumed,
        BatchTripletLoss(margin=0.5, mining="all"),
        TrainData(FeatureDataset(x, y), FeatureDataset(x, y)),
        resolve_config(overrides={**BASE, **fp16, "train.epochs": 2}),
        run,
    ).fit(resume=True)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_fp16_on_cpu_is_refused_with_advice(tmp_path):
    with pytest.raises(ValueError, match="bf16"):
        _fit(tmp_path, **{"train.precision": "fp16", "train.device": "cpu"})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun_two_processes(arguments: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 ARGUMENTS`` on CPU with src/ and the repository importable;
    asserts that it succeeded."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)]),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        *arguments,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("projector", [None, "16,8"])
def test_torchrun_two_processes_trains_with_mining_across_ranks(tmp_path, projector):
    """``torchrun --nproc_per_node=2 -m tripletkit train`` on CPU (gloo): one run directory, written
    by rank 0, with each rank drawing its own P×K batches; with a projector, the loss's forward
    pass goes through the DistributedDataParallel wrapper too."""
    run = tmp_path / "ddp"
    sets = {
        "data.dataset": "digits",
        "data.p": 5,
        "data.k": 4,
        "data.batches_per_epoch": 6,
        "train.epochs": 1,
        "train.tensorboard": False,
    }
    if projector is not None:
        sets["model.projector"] = projector
    arguments = ["-m", "tripletkit", "train", "--run-dir", str(run), "--quiet", "--no-report"]
    for key, value in sets.items():
        arguments += ["--set", f"{key}={value}"]
    done = _torchrun_two_processes(arguments)
    assert done.stdout.count("run directory:") == 1  # rank 0 alone reports
    summary = json.loads((run / "summary.json").read_text())
    assert summary["after"]["map_at_r"] > 0
    assert (run / "model" / "model.safetensors").is_file()
    steps = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "step"]
    # Only rank 0 logs: one line per optimizer step, not two.
    assert [r["step"] for r in steps] == list(range(1, 7))
    # Mining ran over the gathered global batch: 2 ranks × P×K = 40 anchors per step.
    assert all(r["num_selected"] > 0 for r in steps)
    assert max(r["num_valid_triplets"] for r in steps) > 20 * 3 * 16
    if projector is not None:
        saved = json.loads((run / "model" / "config.json").read_text())
        assert saved["config"]["projector"] == [16, 8]
        # The loss trained through the projector (through the DDP wrapper): its weights moved.
        after = load_file(str(run / "model" / "model.safetensors"))
        before = load_file(str(run / "model_initial" / "model.safetensors"))
        moved = [
            k for k in after if k.startswith("projector.") and not torch.equal(after[k], before[k])
        ]
        assert moved


def _api_under_torchrun(scenario: str, tmp_path: Path) -> list[dict]:
    """Run ``ddp_trainer_worker.py SCENARIO`` on two ranks; each rank's record."""
    worker = Path(__file__).with_name("ddp_trainer_worker.py")
    _torchrun_two_processes([str(worker), scenario, str(tmp_path / "run"), str(tmp_path)])
    return [json.loads((tmp_path / f"{scenario}-rank{r}.json").read_text()) for r in (0, 1)]


def test_trainer_under_torchrun_stops_early_on_every_rank_and_returns_the_best_model(tmp_path):
    """``fit`` opens the gloo group itself and closes it before returning (a group left open
    until interpreter exit can abort a rank: SIGABRT, "terminate called without an active
    exception"). Rank 0 alone validates; its early-stopping decision (patience 1, validation
    worse after epoch 1) reaches every rank, so both stop after epoch 2 of 4 instead of one rank
    waiting forever in the next step's collectives; both end with the best epoch's weights and the
    same result, in the caller's own module."""
    ranks = _api_under_torchrun("owned", tmp_path)
    for record in ranks:
        assert record["initialized_after_fit"] is False
        assert record["model_is_callers"] is True
        assert record["stopped_early"] is True
        assert record["epochs_run"] == 2
        assert record["best_epoch"] == 0
        assert record["after_map_at_r"] == 0.6
    # DDP kept the replicas in step, and rank 0's best weights (epoch 1) reached rank 1.
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    untrained = sum(float(p.detach().double().sum()) for p in _model().parameters())
    assert ranks[0]["checksum"] != pytest.approx(untrained, rel=1e-9)
    best = load_file(str(tmp_path / "run" / "checkpoints" / "best.safetensors"))
    best_sum = sum(float(v.double().sum()) for k, v in best.items() if k.startswith("model."))
    assert ranks[1]["checksum"] == pytest.approx(best_sum, rel=1e-9)
    last = load_file(str(tmp_path / "run" / "checkpoints" / "last.safetensors"))
    last_sum = sum(float(v.double().sum()) for k, v in last.items() if k.startswith("model."))
    assert last_sum != pytest.approx(best_sum, rel=1e-9)  # epoch 2 moved on from the best


def test_trainer_under_torchrun_leaves_a_callers_group_open_and_never_wraps_twice(tmp_path):
    """With a group the caller opened, ``fit`` leaves it open, and hands the model back unwrapped
    from DistributedDataParallel, so the same Trainer can ``fit`` again."""
    ranks = _api_under_torchrun("caller", tmp_path)
    for record in ranks:
        assert record["first_fit"]["wrapped"] is False
        assert record["wrapped_after_second_fit"] is False
        assert record["model_is_callers"] is True
        assert record["callers_group_still_open"] is True
    assert ranks[0]["first_fit"]["checksum"] == pytest.approx(
        ranks[1]["first_fit"]["checksum"], rel=1e-9
    )
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    assert ranks[0]["checksum"] != pytest.approx(ranks[0]["first_fit"]["checksum"], rel=1e-9)


def test_trainer_under_torchrun_refuses_ranks_with_different_training_sets(tmp_path):
    """The P×K sampler splits one epoch between the ranks, which only works when every rank
    loaded the same training set: otherwise every rank raises a clear error (and the group
    ``fit`` opened is closed anyway)."""
    for record in _api_under_torchrun("mismatch", tmp_path):
        assert "the training labels differ between ranks" in record["error"]
        assert record["initialized_after_fit"] is False


def test_warns_when_training_ends_below_the_untrained_model(tmp_path):
    x, y = _data()
    scores = iter([0.9, 0.5, 0.6])  # before training, then epochs 1 and 2

    def evaluate(embeddings, labels):
        return {"map_at_r": next(scores), "precision_at_1": 0.5}

    config = resolve_config(overrides={**BASE, "train.epochs": 2})
    result = Trainer(
        _model(),
        BatchTripletLoss(margin=0.5, mining="all"),
        TrainData(FeatureDataset(x, y), FeatureDataset(x, y)),
        config,
        tmp_path / "run",
        evaluate,
    ).fit()
    assert result.best_epoch == 1
    warning = next(d for d in result.diagnoses if "below the untrained model's (0.9000)" in d)
    assert "mining='easy-positive'" in warning  # suggested, since this run mines "all"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["diagnoses"] == result.diagnoses
