"""Explicit-triplet margin loss against the reference and torch's own TripletMarginLoss."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.reference import reference_triplet_margin
from tripletkit.functional import triplet_margin_loss

METRICS = ("squared_euclidean", "euclidean", "cosine", "dot")


@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 12),
    metric=st.sampled_from(METRICS),
    swap=st.booleans(),
    soft=st.booleans(),
    margin=st.sampled_from((0.0, 0.2, 1.0)),
    duplicate=st.booleans(),
)
def test_matches_reference(seed, rows, metric, swap, soft, margin, duplicate):
    generator = torch.Generator().manual_seed(seed)
    a, p, n = torch.randn(3, rows, 4, generator=generator, dtype=torch.float64).unbind(0)
    if duplicate:  # anchor == positive: the zero distance must not give a NaN gradient
        p = a.clone()
    inputs = [t.clone().requires_grad_() for t in (a, p, n)]
    got = triplet_margin_loss(*inputs, margin=margin, distance=metric, swap=swap, soft=soft)
    got_grads = torch.autograd.grad(got, inputs)
    ref_inputs = [t.clone().requires_grad_() for t in (a, p, n)]
    want = reference_triplet_margin(
        *ref_inputs, margin=margin, distance=metric, swap=swap, soft=soft
    )
    want_grads = torch.autograd.grad(want, ref_inputs)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


def test_equals_torch_triplet_margin_loss_for_euclidean():
    generator = torch.Generator().manual_seed(0)
    a, p, n = torch.randn(3, 64, 8, generator=generator, dtype=torch.float64).unbind(0)
    for swap in (False, True):
        expected = torch.nn.TripletMarginLoss(margin=0.5, swap=swap, eps=0.0)(a, p, n)
        got = triplet_margin_loss(a, p, n, margin=0.5, distance="euclidean", swap=swap)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_soft_margin_is_exact_and_never_overflows():
    a = torch.zeros(3, 1, dtype=torch.float64)
    p = torch.tensor([[30.0], [0.0], [0.0]], dtype=torch.float64, requires_grad=True)
    n = torch.tensor([[0.0], [30.0], [0.0]], dtype=torch.float64, requires_grad=True)
    # d_ap - d_an = 900, -900, 0 (squared euclidean): softplus = 900, ~e^-900, log 2.
    losses = triplet_margin_loss(a, p, n, soft=True, reduction="none")
    torch.testing.assert_close(
        losses, torch.tensor([900.0, 0.0, 0.6931471805599453], dtype=torch.float64)
    )
    losses.sum().backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(n.grad).all()
    # float32, d_ap - d_an = 1e30: softplus must not overflow through exp().
    huge = triplet_margin_loss(
        torch.zeros(1, 1), torch.tensor([[1e15]]), torch.zeros(1, 1), soft=True
    )
    assert float(huge) == pytest.approx(1e30)


def test_overflowing_distances_are_a_clear_error_not_nan():
    a = torch.zeros(1, 1)
    far = torch.tensor([[1e20]])
    with pytest.raises(
        ValueError, match="overflowed to Inf/NaN although the embeddings are finite"
    ):
        triplet_margin_loss(a, far, far)


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric):
    generator = torch.Generator().manual_seed(3)
    inputs = [
        torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    ]
    for soft in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, p, n, soft=soft: triplet_margin_loss(
                a, p, n, margin=0.4, distance=metric, swap=True, soft=soft
            ),
            inputs,
        )


def test_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="must have the same shape"):
        triplet_margin_loss(x, x, torch.randn(5, 3))
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        triplet_margin_loss(x, x, x, reduction="avg")
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        triplet_margin_loss(x, x, x, margin=float("nan"))
    bad = x.clone()
    bad[2, 0] = float("inf")
    with pytest.raises(ValueError, match="negative has 1 of 4 rows containing NaN or Inf"):
        triplet_margin_loss(x, x, bad)
