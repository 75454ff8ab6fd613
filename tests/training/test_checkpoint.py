"""Checkpoints: round trip, atomic replacement, clear errors on corrupt or foreign files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from tripletkit.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_optimizer_state,
    pack,
    save_checkpoint,
    unpack,
)


def test_optimizer_state_round_trip(tmp_path):
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    state = {"optimizer": pack(optimizer.state_dict(), tensors, "optimizer"), "epoch": 3}
    save_checkpoint(tmp_path / "last.safetensors", tensors, state)
    loaded, loaded_state = load_checkpoint(tmp_path / "last.safetensors")
    restored = unpack(loaded_state["optimizer"], loaded)
    fresh = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters(), lr=0.5)
    fresh.load_state_dict(restored)
    assert fresh.state_dict()["param_groups"][0]["lr"] == 0.1
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(
            torch.as_tensor(fresh.state_dict()["state"][0][key]), torch.as_tensor(value)
        )
    assert loaded_state["epoch"] == 3
    assert (tmp_path / "last.json").exists()


@pytest.mark.parametrize("fused", [False, True])
def test_resumed_fused_adamw_on_channels_last_weights_continues_exactly(tmp_path, fused):
    """The moments of a channels-last weight come back from a (contiguous) checkpoint laid out
    like the weight: otherwise fused AdamW pairs the wrong elements, and the resumed run drifts."""
    inputs = [torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(i)) for i in range(6)]

    def layer() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)

    def train(model, optimizer, batch) -> None:
        for x in batch:
            optimizer.zero_grad()
            model(x).pow(2).sum().backward()
            optimizer.step()

    straight = layer()
    train(straight, torch.optim.AdamW(straight.parameters(), lr=0.01, fused=fused), inputs)
    resumed = layer()
    first = torch.optim.AdamW(resumed.parameters(), lr=0.01, fused=fused)
    train(resumed, first, inputs[:3])
    tensors: dict[str, torch.Tensor] = {}
    save_checkpoint(
        tmp_path / "c.safetensors", tensors, {"optimizer": pack(first.state_dict(), tensors, "o")}
    )
    loaded, state = load_checkpoint(tmp_path / "c.safetensors")
    second = torch.optim.AdamW(resumed.parameters(), lr=0.01, fused=fused)
    load_optimizer_state(second, unpack(state["optimizer"], loaded))
    weight = resumed.weight
    assert second.state[weight]["exp_avg"].stride() == weight.stride()
    train(resumed, second, inputs[3:])
    assert torch.equal(straight.weight, resumed.weight)
    assert torch.equal(straight.bias, resumed.bias)


def test_pack_keeps_tuples_and_int_keys():
    tensors: dict[str, torch.Tensor] = {}
    tree = {0: (torch.ones(2), "a"), "b": [1, None, 2.5]}
    assert unpack(pack(tree, tensors, "x"), tensors) == {
        0: (tensors["x.0.0"], "a"),
        "b": [1, None, 2.5],
    }


def test_corrupt_truncated_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(100)}, {"step": 1})
    data = (tmp_path / "c.safetensors").read_bytes()
    (tmp_path / "c.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(tmp_path / "c.safetensors")
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(tmp_path / "pickle.safetensors")
    save_file({"w": torch.ones(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a tripletkit checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_a_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    """SIGKILL a process in the middle of writing a large checkpoint: the old one still loads."""
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, {"w": torch.zeros(10)}, {"step": 1})
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from tripletkit.training import checkpoint
        original = checkpoint.save_file
        def save_then_die(tensors, filename, metadata=None):
            original(tensors, filename, metadata=metadata)
            os.kill(os.getpid(), signal.SIGKILL)  # after writing the temp file, before the rename
        checkpoint.save_file = save_then_die
        checkpoint.save_checkpoint({str(path)!r}, {{"w": torch.ones(1_000_000)}}, {{"step": 2}})
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert result.returncode == -9
    tensors, state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(tensors["w"], torch.zeros(10))
