"""save_model / load_model: exact round trips, safetensors + JSON only, atomic and checked writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import tripletkit.models.serialization as serialization
from tripletkit.models import (
    EmbeddingModel,
    create_model,
    load_model,
    read_model_config,
    save_model,
)


def _trained(name: str, batch: torch.Tensor, **options: object) -> EmbeddingModel:
    """A model after a few optimiser steps: weights and batch-norm statistics off their init."""
    torch.manual_seed(0)
    model = create_model(name, **options).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(batch).sum().backward()
        optimizer.step()
    return model


CASES = [
    ("mlp", torch.randn(6, 5), {"in_features": 5, "batch_norm": True, "hidden_dims": (7, 3)}),
    ("small_cnn", torch.randn(6, 1, 12, 12), {"head": "mlp", "embedding_dim": 8}),
    (
        "resnet18",
        torch.randn(6, 1, 16, 16),
        {"stem": "small", "in_channels": 1, "normalize": False},
    ),
]


@pytest.mark.parametrize(("name", "batch", "options"), CASES)
def test_round_trip_is_exact(tmp_path: Path, name: str, batch: torch.Tensor, options: dict) -> None:
    model = _trained(name, batch, **options)
    save_model(model, tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    assert not loaded.training
    assert loaded.config == model.config
    original = model.state_dict()
    restored = loaded.state_dict()
    assert restored.keys() == original.keys()
    for key, tensor in original.items():
        assert torch.equal(restored[key], tensor), key
    assert torch.equal(loaded.embed(batch), model.embed(batch))


def test_files_are_safetensors_and_json(tmp_path: Path) -> None:
    model = _trained("small_cnn", torch.randn(4, 1, 8, 8))
    save_model(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    document = json.loads((tmp_path / "config.json").read_text())
    assert document["format"] == "tripletkit-model" and document["format_version"] == 1
    assert document["config"] == model.config
    assert document["embedding_dim"] == 64
    assert document["input_spec"] == model.input_spec.to_dict()
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as weights:
        assert set(weights.keys()) == set(model.state_dict())
    # safetensors: an 8-byte little-endian header length, then a JSON header (no pickle opcodes).
    raw = (tmp_path / "model.safetensors").read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header_length])["__metadata__"] == {"format": "pt"}


def test_saving_again_replaces_the_previous_save(tmp_path: Path) -> None:
    first = create_model("mlp", in_features=3, embedding_dim=2)
    second = create_model("mlp", in_features=4, embedding_dim=6)
    save_model(first, tmp_path)
    save_model(second, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config == second.config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_failed_save_leaves_the_previous_files_and_no_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = create_model("mlp", in_features=3, embedding_dim=2)
    save_model(model, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def crash(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(serialization, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(create_model("mlp", in_features=5), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    x = torch.randn(2, 3)
    assert torch.equal(load_model(tmp_path).embed(x), model.embed(x))


def test_weights_from_another_save_are_detected(tmp_path: Path) -> None:
    save_model(create_model("mlp", in_features=3, embedding_dim=2), tmp_path / "a")
    save_model(create_model("mlp", in_features=3, embedding_dim=2), tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes(
        (tmp_path / "b" / "model.safetensors").read_bytes()
    )
    with pytest.raises(ValueError, match="does not match the checksum"):
        load_model(tmp_path / "a")


def test_weights_that_do_not_fit_the_config_are_rejected(tmp_path: Path) -> None:
    save_model(create_model("mlp", in_features=3, embedding_dim=2), tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    document["config"]["embedding_dim"] = 4
    del document["weights_sha256"]
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="does not fit the architecture"):
        load_model(tmp_path)


def test_unreadable_directories_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json does not exist"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_model_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a tripletkit model config"):
        read_model_config(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"format": "tripletkit-model", "format_version": 99})
    )
    with pytest.raises(ValueError, match="format_version 99"):
        read_model_config(tmp_path)
    save_model(create_model("mlp", in_features=3), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_model(tmp_path)


def test_save_rejects_other_modules(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="EmbeddingModel"):
        save_model(torch.nn.Linear(2, 2), tmp_path)
