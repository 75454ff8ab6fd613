"""ensemble_models: the members' unit vectors / sqrt(n), concatenated, against float64 by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tripletkit.models import (
    EmbeddingModel,
    create_model,
    ensemble_models,
    load_model,
    read_model_config,
    save_model,
)


def _mlp(seed: int, dim: int, normalize: bool = True, in_features: int = 6) -> EmbeddingModel:
    torch.manual_seed(seed)
    return create_model(
        "mlp", in_features=in_features, hidden_dims=(5,), embedding_dim=dim, normalize=normalize
    )


def _unit64(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().double()
    return x / x.norm(dim=1, keepdim=True)


def test_embedding_is_the_members_unit_vectors_over_sqrt_n_hand_checked() -> None:
    first, second = _mlp(0, 3), _mlp(1, 4, normalize=False)  # the second is normalised here
    both = ensemble_models([first, second])
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = torch.cat([_unit64(first(x)), _unit64(second(x))], dim=1) / math.sqrt(2)
    got = both.embed(x)
    assert got.shape == (7, 7) and both.embedding_dim == 7
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(7), atol=1e-6, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    dims=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    seed=st.integers(0, 10_000),
)
def test_property_cosine_is_the_mean_of_the_members_cosines(dims: list[int], seed: int) -> None:
    members = [_mlp(seed + i, dim) for i, dim in enumerate(dims)]
    both = ensemble_models(members)
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(5, 6, generator=generator), torch.randn(5, 6, generator=generator)
    cosine = (both.embed(x).double() * both.embed(y).double()).sum(1)
    with torch.no_grad():
        expected = torch.stack(
            [(_unit64(m(x)) * _unit64(m(y))).sum(1) for m in members], dim=0
        ).mean(0)
    torch.testing.assert_close(cosine, expected, atol=1e-6, rtol=0)


def test_weights_are_copied_and_the_members_left_unchanged() -> None:
    first, second = _mlp(0, 3), _mlp(1, 3)
    before = {k: v.clone() for k, v in first.state_dict().items()}
    both = ensemble_models([first, second])
    assert not both.training
    with torch.no_grad():
        for parameter in both.parameters():
            parameter.add_(1.0)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_saved_ensemble_loads_with_the_same_embeddings_and_names_its_members(tmp_path) -> None:
    first, second = _mlp(0, 3), _mlp(1, 2)
    both = ensemble_models([first, second])
    save_model(both, tmp_path / "ens")
    config = read_model_config(tmp_path / "ens")["config"]
    assert config["name"] == "ensemble"
    assert [m["embedding_dim"] for m in config["members"]] == [3, 2]
    loaded = load_model(tmp_path / "ens")
    x = torch.randn(4, 6)
    torch.testing.assert_close(loaded.embed(x), both.embed(x), atol=0, rtol=0)


def test_text_ensemble_of_a_fine_tuned_and_the_pretrained_encoder_round_trips(tmp_path) -> None:
    pretrained = create_model("text_encoder")
    tuned = create_model("text_encoder")
    with torch.no_grad():  # a stand-in for fine-tuning: every weight moved a little
        generator = torch.Generator().manual_seed(0)
        for parameter in tuned.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
    both = ensemble_models([pretrained, tuned])
    texts = ["a large bright star", "the act of running", "dog, domestic dog"]
    members = [m.embed(texts).double() for m in (pretrained, tuned)]
    expected = torch.cat(members, dim=1) / math.sqrt(2)
    torch.testing.assert_close(both.embed(texts).double(), expected, atol=1e-5, rtol=0)
    save_model(both, tmp_path / "text-ens")
    loaded = load_model(tmp_path / "text-ens")
    torch.testing.assert_close(loaded.embed(texts), both.embed(texts), atol=1e-6, rtol=0)
    assert not torch.allclose(members[0], members[1])  # the two members really differ


def test_errors_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        ensemble_models([])
    bare = EmbeddingModel(_mlp(0, 3).backbone, embedding_dim=3)  # built without the registry
    with pytest.raises(TypeError, match="has no config"):
        ensemble_models([_mlp(0, 3), bare])
    image = create_model("small_cnn")
    with pytest.raises(ValueError, match=r"same kind of input.*VectorInputSpec.*ImageInputSpec"):
        ensemble_models([_mlp(0, 3), image])
    with pytest.raises(ValueError, match=r"same input.*in_features=6.*in_features=4"):
        ensemble_models([_mlp(0, 3), _mlp(1, 3, in_features=4)])
    with pytest.raises(ValueError, match="same input"):  # normalised differently
        ensemble_models([image, create_model("small_cnn", in_channels=3)])
    with pytest.raises(ValueError, match="needs members"):
        create_model("ensemble")
    with pytest.raises(ValueError, match=r"members\[0\] must be a model config"):
        create_model("ensemble", members=["mlp"])


def test_nested_ensembles_weigh_every_leaf_model_equally() -> None:
    first, second, third = _mlp(0, 3), _mlp(1, 2), _mlp(2, 4)
    nested = ensemble_models([ensemble_models([first, second]), third])
    flat = ensemble_models([first, second, third])
    assert len(nested.backbone.members) == 3
    x = torch.randn(5, 6)
    torch.testing.assert_close(nested.embed(x), flat.embed(x), atol=0, rtol=0)


def test_a_members_training_only_projector_is_left_out() -> None:
    torch.manual_seed(0)
    with_projector = create_model("mlp", in_features=6, embedding_dim=3, projector=[8, 2])
    both = ensemble_models([with_projector, _mlp(1, 3)])
    assert all("projector" not in m for m in both.config["members"])
    assert not any(k.startswith("backbone.members.0.projector") for k in both.state_dict())
    x = torch.randn(4, 6)
    with torch.no_grad():
        expected = _unit64(with_projector(x)) / math.sqrt(2)  # the embedding, not the projection
    torch.testing.assert_close(both.embed(x)[:, :3].double(), expected, atol=1e-6, rtol=0)


def test_text_members_may_truncate_at_different_lengths() -> None:
    short, full = create_model("text_encoder", max_length=8), create_model("text_encoder")
    both = ensemble_models([short, full])
    text = ["a long definition " * 10]
    expected = torch.cat([short.embed(text), full.embed(text)], dim=1) / math.sqrt(2)
    torch.testing.assert_close(both.embed(text), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(short.embed(text), full.embed(text))  # truncation mattered
