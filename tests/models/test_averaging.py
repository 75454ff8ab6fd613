"""average_models: the weighted mean of weights against a float64 hand computation."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tripletkit.models import EmbeddingModel, average_models, create_model, load_model, save_model


def _perturbed_copies(model: EmbeddingModel, count: int, seed: int) -> list[EmbeddingModel]:
    """Copies of ``model`` whose every float entry (weights, BN statistics) moved differently."""
    generator = torch.Generator().manual_seed(seed)
    copies = []
    for index in range(count):
        member = copy.deepcopy(model)
        with torch.no_grad():
            for name, tensor in member.state_dict().items():
                if name.endswith("running_var"):  # stays positive
                    tensor.mul_(1 + torch.rand(tensor.shape, generator=generator))
                elif tensor.is_floating_point():
                    tensor.add_(torch.randn(tensor.shape, generator=generator))
                else:
                    tensor.fill_(10 + index)  # num_batches_tracked: must come from models[0]
        copies.append(member)
    return copies


def _base() -> EmbeddingModel:
    torch.manual_seed(0)
    return create_model("mlp", in_features=5, hidden_dims=(7,), batch_norm=True, embedding_dim=3)


def test_uniform_average_matches_float64_mean_entry_by_entry() -> None:
    members = _perturbed_copies(_base(), 3, seed=1)
    soup = average_models(members)
    states = [m.state_dict() for m in members]
    soup_state = soup.state_dict()
    assert set(soup_state) == set(states[0])
    checked_float = checked_int = 0
    for name, value in soup_state.items():
        if value.is_floating_point():
            expected = sum(s[name].double() for s in states) / 3
            torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-6)
            assert value.dtype == states[0][name].dtype
            checked_float += 1
        else:
            assert torch.equal(value, states[0][name])
            checked_int += 1
    assert checked_float >= 6 and checked_int >= 1  # linear weights, biases, BN stats; BN counter


def test_batch_norm_running_statistics_are_averaged() -> None:
    first, second = _perturbed_copies(_base(), 2, seed=2)
    soup = average_models([first, second])
    names = [n for n in soup.state_dict() if n.endswith("running_mean")]
    assert names
    for name in names:
        expected = (first.state_dict()[name] + second.state_dict()[name]) / 2
        torch.testing.assert_close(soup.state_dict()[name], expected)


def test_weighted_average_hand_checked() -> None:
    # weights 1 and 3: θ = (1·θ_0 + 3·θ_1) / 4
    first, second = _perturbed_copies(_base(), 2, seed=3)
    soup = average_models([first, second], weights=[1, 3])
    for name, value in soup.state_dict().items():
        if value.is_floating_point():
            expected = (first.state_dict()[name] + 3 * second.state_dict()[name]) / 4
            torch.testing.assert_close(value, expected)


def test_zero_weight_member_is_ignored_and_single_model_is_a_copy() -> None:
    first, second = _perturbed_copies(_base(), 2, seed=4)
    soup = average_models([first, second], weights=[1.0, 0.0])
    x = torch.randn(4, 5)
    first.eval()
    torch.testing.assert_close(soup(x), first(x))
    alone = average_models([second])
    assert alone is not second
    second.eval()
    torch.testing.assert_close(alone(x), second(x))


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(1, 4),
    weights=st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=4, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_property_weighted_mean_of_every_float_entry(
    count: int, weights: list[float], seed: int
) -> None:
    weights = weights[:count]
    members = _perturbed_copies(_base(), count, seed=seed)
    if sum(weights) <= 0:
        with pytest.raises(ValueError, match="at least one must be positive"):
            average_models(members, weights=weights)
        return
    soup = average_models(members, weights=weights)
    total = sum(weights)
    for name, value in soup.state_dict().items():
        if value.is_floating_point():
            expected = sum(
                w * m.state_dict()[name].double() for w, m in zip(weights, members, strict=True)
            )
            torch.testing.assert_close(value.double(), expected / total, rtol=1e-5, atol=1e-5)


def test_inputs_are_left_unchanged_and_result_is_in_eval_mode() -> None:
    members = _perturbed_copies(_base(), 2, seed=5)
    for member in members:
        member.train()
    before = [copy.deepcopy(m.state_dict()) for m in members]
    soup = average_models(members)
    assert not soup.training
    assert all(m.training for m in members)
    for member, state in zip(members, before, strict=True):
        for name, value in member.state_dict().items():
            assert torch.equal(value, state[name])


def test_projector_and_config_survive_and_the_soup_saves(tmp_path) -> None:
    torch.manual_seed(0)
    base = create_model("mlp", in_features=5, embedding_dim=4, projector=[6, 3])
    members = _perturbed_copies(base, 2, seed=6)
    soup = average_models(members)
    assert soup.config == base.config
    assert soup.loss_dim == 3
    x = torch.randn(5, 5)
    save_model(soup, tmp_path / "soup")
    loaded = load_model(tmp_path / "soup")
    torch.testing.assert_close(loaded(x, project=True), soup(x, project=True))


def test_errors_name_what_is_wrong() -> None:
    first, second = _perturbed_copies(_base(), 2, seed=7)
    with pytest.raises(ValueError, match="at least one model"):
        average_models([])
    with pytest.raises(ValueError, match="got 1 weights for 2 models"):
        average_models([first, second], weights=[1.0])
    with pytest.raises(ValueError, match="finite and non-negative"):
        average_models([first, second], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="finite and non-negative"):
        average_models([first, second], weights=[1.0, float("nan")])
    wider = create_model("mlp", in_features=5, hidden_dims=(8,), batch_norm=True, embedding_dim=3)
    with pytest.raises(ValueError, match=r"models\[1\] has a different architecture: .*shape"):
        average_models([first, wider])
    no_bn = create_model("mlp", in_features=5, hidden_dims=(7,), embedding_dim=3)
    with pytest.raises(ValueError, match=r"models\[1\] has a different architecture: .*missing"):
        average_models([first, no_bn])
