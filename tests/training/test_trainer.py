"""The Trainer end to end on scikit-learn digits: learning, checkpoints, exact resume after kill -9,
early stopping, the run directory's contents, and the command line."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tripletkit.cli import main as cli_main
from tripletkit.data import FeatureDataset
from tripletkit.losses import BatchTripletLoss
from tripletkit.training import RunConfig, TrainData, Trainer, resolve_config
from tripletkit.training.build import train
from tripletkit.training.run_log import read_metrics

FAST = {
    "data.dataset": "digits",
    "data.p": 5,
    "data.k": 8,
    "train.epochs": 2,
    "train.quiet": True,
    "train.report": False,
    "train.tensorboard": False,
    "train.checkpoint_every_steps": 1,
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tripletkit", *args]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _fast_flags(run_dir: Path) -> list[str]:
    flags = ["train", "--run-dir", str(run_dir), "--quiet", "--no-report"]
    for key, value in FAST.items():
        if key not in ("train.quiet", "train.report"):
            flags += ["--set", f"{key}={value}"]
    return flags


def test_trains_and_writes_a_complete_run_directory(tmp_path):
    config = resolve_config(overrides=FAST)
    outcome = train(config, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "summary.json", "test.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "last.safetensors").is_file()
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert (run / "model" / "model.safetensors").is_file()
    assert (run / "model_initial" / "model.safetensors").is_file()
    records = read_metrics(run / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 3  # before training + 2 epochs
    assert steps and all(
        {"loss", "active_triplet_fraction", "samples_per_s", "lr"} <= set(r) for r in steps
    )
    assert set(outcome.test_before) >= {"precision_at_1", "r_precision", "map_at_r"}
    assert set(outcome.test_after) >= {"precision_at_1", "r_precision", "map_at_r"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["train_classes"] == [0, 1, 2, 3, 4]
    assert summary["data"]["test_classes"] == [5, 6, 7, 8, 9]


def _clustered_vectors() -> tuple[torch.Tensor, TrainData, RunConfig]:
    """12 noisy Gaussian clusters of 16-d vectors (30 each) and a 3-epoch config for them.

    Validation holds out every third item of the training classes, so the metric rises clearly
    once the model learns."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(12, 16, generator=generator) * 2
    labels = torch.arange(12).repeat_interleave(30)
    x = centers[labels] + 2 * torch.randn(360, 16, generator=generator)
    train_side = torch.arange(360) % 3 != 0
    config = resolve_config(
        overrides={
            "data.p": 4,
            "data.k": 8,
            "train.epochs": 3,
            "train.quiet": True,
            "train.report": False,
            "train.tensorboard": False,
            "optim.lr": 0.01,
        }
    )
    data = TrainData(
        FeatureDataset(x[train_side], labels[train_side]),
        FeatureDataset(x[~train_side], labels[~train_side]),
    )
    return x, data, config


def test_learns_on_feature_vectors(tmp_path):
    _, data, config = _clustered_vectors()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    result = Trainer(
        model, BatchTripletLoss(margin=0.2, mining="semihard"), data, config, tmp_path / "run"
    ).fit()
    assert result.after["map_at_r"] > result.before["map_at_r"] + 0.1


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_kill_at_a_random_step_then_resume_gives_the_same_weights(tmp_path, precision):
    """kill -9 a training process at a random step; resuming it ends exactly like a clean run
    (in float32, and under bfloat16 autocast, which the Fashion-MNIST recipe trains in where the
    CPU has bfloat16 instructions)."""
    clean = tmp_path / "clean"
    flags = ["--precision", precision]
    subprocess.run(_cli(*_fast_flags(clean), *flags), env=_env(), check=True, timeout=600)
    total_steps = sum(1 for r in read_metrics(clean / "metrics.jsonl") if r["kind"] == "step")

    killed = tmp_path / "killed"
    kill_at = random.Random().randint(2, total_steps - 2)
    process = subprocess.Popen(_cli(*_fast_flags(killed), *flags), env=_env())
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        metrics = killed / "metrics.jsonl"
        done = (
            sum(1 for r in read_metrics(metrics) if r["kind"] == "step") if metrics.exists() else 0
        )
        if done >= kill_at:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run ended before step {kill_at}"
    assert not (killed / "model").exists()

    subprocess.run(
        _cli("train", "--resume", str(killed), "--quiet", "--no-report"),
        env=_env(),
        check=True,
        timeout=600,
    )
    clean_weights, resumed_weights = _final_weights(clean), _final_weights(killed)
    assert clean_weights.keys() == resumed_weights.keys()
    for name in clean_weights:
        assert torch.equal(clean_weights[name], resumed_weights[name]), name
    clean_summary = json.loads((clean / "summary.json").read_text())
    resumed_summary = json.loads((killed / "summary.json").read_text())
    for key in ("precision_at_1", "r_precision", "map_at_r"):
        assert clean_summary["after"][key] == resumed_summary["after"][key]
    steps = [r["step"] for r in read_metrics(killed / "metrics.jsonl") if r["kind"] == "step"]
    assert steps == sorted(set(steps)) == list(range(1, total_steps + 1))


def test_early_stopping_and_best_checkpoint(tmp_path):
    overrides = {
        **FAST,
        "train.epochs": 6,
        "train.early_stopping_patience": 1,
        "optim.lr": 0.05,  # large enough that validation soon stops improving
    }
    outcome = train(resolve_config(overrides=overrides), run_dir=tmp_path / "run")
    history = outcome.result.history
    assert outcome.result.stopped_early
    assert len(history) < 6
    best = max(history, key=lambda h: h["map_at_r"])
    assert outcome.result.best_epoch == best["epoch"]


def test_resume_refuses_a_different_configuration(tmp_path):
    config = resolve_config(overrides=FAST)
    train(config, run_dir=tmp_path / "run")
    changed = resolve_config(overrides={**FAST, "loss.margin": 0.5})
    with pytest.raises(ValueError, match="its loss configuration differs"):
        train(changed, run_dir=tmp_path / "run", resume=True)


def test_cli_errors_are_one_line_with_exit_code_2(capsys):
    assert cli_main(["train", "--set", "loss.margn=0.3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "tripletkit train: error: unknown config key 'loss.margn'; did you mean 'loss.margin'?"
    ]
    assert cli_main(["train", "--epochs", "many"]) == 2
    assert "must be an integer" in capsys.readouterr().err


def test_cli_help_documents_every_config_key(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for section, values in RunConfig().to_dict().items():
        for key in values:
            assert f"{section}.{key} =" in out


def test_cli_train_prints_before_and_after(tmp_path, capsys):
    code = cli_main(_fast_flags(tmp_path / "run"))
    assert code == 0
    out = capsys.readouterr().out
    assert "MAP@R" in out and "before" in out and "after" in out
    assert f"run directory: {tmp_path / 'run'}" in out
    assert "precision:" not in out  # said only when train.precision is auto


def test_cli_train_says_what_auto_precision_resolved_to(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert cli_main([*_fast_flags(tmp_path / "run"), "--precision", "auto"]) == 0
    assert "precision: bf16 (train.precision auto)" in capsys.readouterr().out


class _Recording(torch.nn.Module):
    """A triplet loss that records the width of every batch of embeddings it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = BatchTripletLoss(margin=0.2, mining="semihard")
        self.widths: list[int] = []

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.widths.append(int(embeddings.shape[1]))
        return self.loss(embeddings, labels)


def test_a_projector_trains_the_embedding_before_it(tmp_path):
    from tripletkit.models import create_model, load_model

    x, data, config = _clustered_vectors()
    torch.manual_seed(0)
    model = create_model("mlp", in_features=16, embedding_dim=8, projector=[12, 4])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = _Recording()
    result = Trainer(model, loss, data, config, tmp_path / "run").fit()
    # The loss saw only the projector's 4-d output; validation measured the 8-d embedding, and it
    # learned: the gradients reached the layers before the projector.
    assert loss.widths and set(loss.widths) == {4}
    assert result.after["map_at_r"] > result.before["map_at_r"] + 0.1
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("backbone.") for k in changed)
    assert any(k.startswith("projector.") for k in changed)
    saved = load_model(tmp_path / "run" / "model")
    assert saved.config["projector"] == [12, 4]
    assert saved.embed(x[:5]).shape == (5, 8)


def test_train_builds_the_configured_projector_and_sizes_proxies_to_it(tmp_path):
    from tripletkit.models import load_model

    config = resolve_config(
        overrides={
            **FAST,
            "train.epochs": 1,
            "model.projector": [16, 6],
            "loss.name": "proxy_anchor",
        }
    )
    train(config, run_dir=tmp_path / "run")
    saved = load_model(tmp_path / "run" / "model")
    assert (saved.embedding_dim, saved.loss_dim) == (64, 6)


def test_a_frozen_projector_is_not_trained_and_the_backbone_trains_through_it(tmp_path):
    from tripletkit.models import load_model

    config = resolve_config(
        overrides={
            **FAST,
            "train.epochs": 1,
            "model.projector": [16, 6],
            "model.projector_frozen": True,
        }
    )
    train(config, run_dir=tmp_path / "run")
    initial = load_model(tmp_path / "run" / "model_initial").state_dict()
    final = load_model(tmp_path / "run" / "model")
    assert final.projector_frozen
    changed = {k for k, v in final.state_dict().items() if not torch.equal(v, initial[k])}
    assert not any(k.startswith("projector.") for k in changed)
    assert any(k.startswith("backbone.") for k in changed)


def test_projector_frozen_without_a_projector_is_a_config_error():
    with pytest.raises(ValueError, match=r"model\.projector_frozen.*no projector"):
        resolve_config(overrides={**FAST, "model.projector_frozen": True})


class _OwnProjector(torch.nn.Module):
    """A user's model that happens to have a ``projector`` submodule and a plain forward."""

    def __init__(self) -> None:
        super().__init__()
        self.projector = torch.nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(x)


def test_a_user_module_with_a_projector_attribute_is_called_plainly(tmp_path):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(8).repeat_interleave(10)
    x = torch.randn(8, 16, generator=generator)[labels] + torch.randn(80, 16, generator=generator)
    config = resolve_config(
        overrides={
            "data.p": 4,
            "data.k": 4,
            "data.batches_per_epoch": 3,
            "train.epochs": 1,
            "train.quiet": True,
            "train.report": False,
            "train.tensorboard": False,
        }
    )
    data = TrainData(FeatureDataset(x, labels), FeatureDataset(x, labels))
    loss = _Recording()
    Trainer(_OwnProjector(), loss, data, config, tmp_path / "run").fit()
    assert loss.widths == [8, 8, 8]


def test_a_checkpoint_from_before_a_config_key_existed_still_resumes(tmp_path):
    from tripletkit.training.checkpoint import load_checkpoint, save_checkpoint

    config = resolve_config(overrides={**FAST, "train.epochs": 1})
    train(config, run_dir=tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.safetensors"
    tensors, state = load_checkpoint(last)
    del state["config"]["model"]["projector"]  # as written before model.projector existed
    save_checkpoint(last, tensors, state)
    longer = resolve_config(overrides={**FAST, "train.epochs": 2})
    outcome = train(longer, run_dir=tmp_path / "run", resume=True)
    assert outcome.result.history[-1]["epoch"] == 1
    # A real difference in that key is still refused.
    tensors, state = load_checkpoint(last)
    state["config"]["model"].pop("projector", None)
    save_checkpoint(last, tensors, state)
    projected = resolve_config(overrides={**FAST, "train.epochs": 3, "model.projector": [8]})
    with pytest.raises(ValueError, match="its model configuration differs"):
        train(projected, run_dir=tmp_path / "run", resume=True)


def test_clip_gradients_matches_torch_clip_grad_norm_bit_for_bit() -> None:
    """The trainer's clipping skips torch's multiply by a scale of exactly 1; the gradients and
    the returned norm must be torch's own, below, at and above the threshold."""
    from tripletkit.training.trainer import clip_gradients

    torch.manual_seed(0)
    for scale in (0.01, 1.0, 3.0, 100.0):
        grads = [torch.randn(7, 3) * scale, torch.randn(5) * scale]
        ours = [torch.zeros_like(g, requires_grad=True) for g in grads]
        theirs = [torch.zeros_like(g, requires_grad=True) for g in grads]
        for a, b, g in zip(ours, theirs, grads, strict=True):
            a.grad, b.grad = g.clone(), g.clone()
        max_norm = float(torch.cat([g.flatten() for g in grads]).norm())  # exactly at the norm
        for limit in (max_norm * 0.5, max_norm, max_norm * 2):
            norm = clip_gradients(ours, limit)
            expected = torch.nn.utils.clip_grad_norm_(theirs, limit, foreach=True)
            assert torch.equal(norm, expected)
            for a, b in zip(ours, theirs, strict=True):
                assert torch.equal(a.grad, b.grad)
    # A non-finite norm is left to torch's own scaling (a scale of 0 here: inf -> NaN, 1 -> 0).
    ours, theirs = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    ours.grad, theirs.grad = torch.tensor([float("inf"), 1.0]), torch.tensor([float("inf"), 1.0])
    clip_gradients([ours], 1.0)
    torch.nn.utils.clip_grad_norm_([theirs], 1.0, foreach=True)
    assert (
        torch.equal(ours.grad.isnan(), theirs.grad.isnan()) and ours.grad[1] == theirs.grad[1] == 0
    )


def test_a_failing_run_closes_its_metrics_log_with_every_step_written(tmp_path):
    """metrics.jsonl stays open through a fit (one line-buffered handle); a run that fails at a
    step still has the steps before it on disk, and the handle is closed on the way out."""
    _, data, config = _clustered_vectors()
    inner = BatchTripletLoss(margin=0.2, mining="semihard")
    calls = {"n": 0}

    class FailsAtStep4(torch.nn.Module):
        margin = 0.2

        def forward(self, embeddings, labels):
            calls["n"] += 1
            loss = inner(embeddings, labels)
            return loss * float("nan") if calls["n"] == 4 else loss

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    trainer = Trainer(model, FailsAtStep4(), data, config, tmp_path / "run")
    with pytest.raises(RuntimeError, match="the loss became nan at step 3"):
        trainer.fit()
    assert trainer._run_log is None
    steps = [
        r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "step"
    ]
    assert steps == [1, 2, 3]
