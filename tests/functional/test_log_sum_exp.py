"""The masked log-sum-exp helper against torch.logsumexp and autograd."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tripletkit.functional.log_sum_exp import log_sum_exp_weights


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    add_one=st.booleans(),
    offset=st.sampled_from([0.0, 3.0, -500.0, 500.0]),
    scale=st.sampled_from([1.0, 100.0]),
)
def test_weights_and_value_match_autograd(data, add_one, offset, scale):
    rows, cols = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    values = data.draw(st.lists(st.floats(-3, 3), min_size=rows * cols, max_size=rows * cols))
    mask_values = data.draw(st.lists(st.booleans(), min_size=rows * cols, max_size=rows * cols))
    x = torch.tensor(values, dtype=torch.float64).reshape(rows, cols) * scale
    mask = torch.tensor(mask_values).reshape(rows, cols)
    leaf = x.clone().requires_grad_(True)
    shifted = (leaf + offset).masked_fill(~mask, float("-inf"))
    if add_one:
        shifted = torch.cat([shifted, torch.zeros(rows, 1, dtype=torch.float64)], dim=1)
    expected = torch.logsumexp(shifted, dim=1)
    value, weights, peak = log_sum_exp_weights(x.clone(), mask, add_one=add_one, offset=offset)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(peak, x.masked_fill(~mask, float("-inf")).amax(dim=1))
    nonempty = torch.isfinite(expected)
    if bool(nonempty.any()):
        expected[nonempty].sum().backward()
        torch.testing.assert_close(weights[nonempty], leaf.grad[nonempty], rtol=1e-10, atol=1e-12)
    assert bool((weights[~nonempty] == 0).all())


def test_empty_rows():
    x = torch.randn(2, 3)
    mask = torch.tensor([[False, False, False], [True, False, True]])
    for add_one, empty_value in ((False, float("-inf")), (True, 0.0)):
        value, weights, peak = log_sum_exp_weights(x.clone(), mask, add_one=add_one)
        assert float(value[0]) == empty_value and float(peak[0]) == float("-inf")
        assert torch.equal(weights[0], torch.zeros(3)) and torch.isfinite(weights).all()


@pytest.mark.parametrize("add_one", [False, True])
def test_large_magnitudes_do_not_overflow(add_one):
    x = torch.tensor([[1e4, 1e4 - 1.0, -1e4]])
    value, weights, _ = log_sum_exp_weights(
        x.clone(), torch.ones_like(x, dtype=torch.bool), add_one=add_one
    )
    assert torch.isfinite(value).all() and torch.isfinite(weights).all()
    assert float(weights.sum()) == pytest.approx(1.0)
