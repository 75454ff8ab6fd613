"""Distances against textbook formulas; finite gradients where hand-rolled versions give NaN."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.reference import reference_distances
from tripletkit.distances import (
    METRICS,
    indexed_paired_distances,
    paired_distances,
    pairwise_distances,
    pairwise_distances_vjp,
    pairwise_distances_vjp_self,
    resolve_distance,
)


@st.composite
def matrices(draw):
    rows_x, rows_y, dim = draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 5))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(rows_x, dim, generator=generator, dtype=torch.float64)
    y = torch.randn(rows_y, dim, generator=generator, dtype=torch.float64)
    if draw(st.booleans()):  # duplicate a row of x into y: zero distances
        y[draw(st.integers(0, rows_y - 1))] = x[draw(st.integers(0, rows_x - 1))]
    return x, y


@given(pair=matrices(), metric=st.sampled_from(METRICS))
def test_pairwise_matches_reference(pair, metric):
    x, y = pair
    torch.testing.assert_close(
        pairwise_distances(x, y, metric), reference_distances(x, y, metric), rtol=1e-10, atol=1e-10
    )


@given(pair=matrices(), metric=st.sampled_from(METRICS))
def test_paired_is_the_diagonal_of_pairwise(pair, metric):
    x, y = pair
    n = min(x.shape[0], y.shape[0])
    expected = torch.diagonal(reference_distances(x[:n], y[:n], metric))
    torch.testing.assert_close(
        paired_distances(x[:n], y[:n], metric), expected, rtol=1e-10, atol=1e-10
    )


@given(
    pair=matrices(),
    metric=st.sampled_from(METRICS),
    chunk=st.integers(1, 40),
    strategy=st.sampled_from(["auto", "gather", "blocks"]),
    data=st.data(),
)
def test_indexed_paired_equals_the_reference_of_the_gathered_rows(
    pair, metric, chunk, strategy, data
):
    x = torch.cat(pair)  # rows that repeat (zero distances) and rows that differ
    pairs = data.draw(st.integers(0, 30))
    index = st.lists(st.integers(0, x.shape[0] - 1), min_size=pairs, max_size=pairs)
    first, second = torch.tensor(data.draw(index)), torch.tensor(data.draw(index))
    got = indexed_paired_distances(x, first.long(), second.long(), metric, chunk_elements=chunk)
    expected = reference_distances(x, x, metric)[first.long(), second.long()]
    assert got.shape == (pairs,) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_indexed_paired_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"index rows of x, in \[0, 4\)"):
        indexed_paired_distances(x, torch.tensor([0, 4]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"index rows of x, in \[0, 4\)"):
        indexed_paired_distances(x, torch.tensor([-1]), torch.tensor([1]))
    with pytest.raises(ValueError, match="1-D index tensors of one length"):
        indexed_paired_distances(x, torch.tensor([0, 1]), torch.tensor([1]))
    with pytest.raises(ValueError, match="integer row indices"):
        indexed_paired_distances(x, torch.tensor([0.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="rows containing NaN or Inf"):
        indexed_paired_distances(torch.full((2, 2), float("nan")), [0], [1])


@given(pair=matrices(), metric=st.sampled_from(METRICS), sparse=st.booleans())
def test_vjp_equals_autograd(pair, metric, sparse):
    x, y = pair
    generator = torch.Generator().manual_seed(1)
    grad = torch.randn(x.shape[0], y.shape[0], generator=generator, dtype=torch.float64)
    grad[torch.rand(grad.shape, generator=generator) < 0.5] = 0.0
    xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
    expected = torch.autograd.grad(pairwise_distances(xl, yl, metric), (xl, yl), grad)
    got = pairwise_distances_vjp(x, y, grad.to_sparse() if sparse else grad, metric)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9)


@given(pair=matrices(), metric=st.sampled_from(METRICS), owned=st.booleans())
def test_self_vjp_equals_autograd(pair, metric, owned):
    x, y = pair
    if y.shape[0] > 1:  # duplicated rows: zero distances off the diagonal too
        x = torch.cat([x, y[:1], y[:1]])
    generator = torch.Generator().manual_seed(2)
    grad = torch.randn(x.shape[0], x.shape[0], generator=generator, dtype=torch.float64)
    grad[torch.rand(grad.shape, generator=generator) < 0.3] = 0.0
    xl = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(pairwise_distances(xl, metric=metric), (xl,), grad)
    given_grad = grad.clone()
    got = pairwise_distances_vjp_self(x, given_grad, metric, grad_owned=owned)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    if not owned:
        assert torch.equal(given_grad, grad)  # the caller's gradient is left alone


def test_distances_without_autograd_equal_those_with_it():
    """The in-place square root taken when no gradient is recorded gives the same values."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(30, 4, generator=generator)
    x[5] = x[7]
    with_grad = pairwise_distances(x.clone().requires_grad_(), metric="euclidean")
    with torch.no_grad():
        without = pairwise_distances(x, metric="euclidean")
    assert torch.equal(with_grad.detach(), without)
    assert without.diagonal().eq(0).all()


def test_euclidean_agrees_with_cdist():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 7, generator=generator), torch.randn(40, 7, generator=generator)
    torch.testing.assert_close(
        pairwise_distances(x, y, "euclidean"), torch.cdist(x, y), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("metric", METRICS)
def test_gradients_finite_at_zero_distance_and_duplicates(metric):
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, -1.0]], requires_grad=True)
    d = pairwise_distances(x, metric=metric)
    d.sum().backward()
    assert torch.isfinite(x.grad).all()
    if metric in ("squared_euclidean", "euclidean"):
        assert torch.equal(torch.diagonal(d), torch.zeros(4))
        assert float(d[0, 1].detach()) == 0.0


def test_euclidean_gradient_is_zero_where_distance_is_zero():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0]], requires_grad=True)
    y = torch.tensor([[1.0, 2.0]])
    pairwise_distances(x, y, "euclidean").sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("metric", METRICS)
def test_half_precision_is_computed_in_float32(dtype, metric):
    generator = torch.Generator().manual_seed(0)
    x32 = torch.randn(6, 4, generator=generator)
    x = x32.to(dtype)
    d = pairwise_distances(x, metric=metric)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, pairwise_distances(x.float(), metric=metric))


def test_squared_euclidean_never_negative():
    x = torch.randn(200, 3) * 1e4
    y = x + 1e-3
    assert (pairwise_distances(x, y) >= 0).all()


def test_errors():
    with pytest.raises(ValueError, match="unknown metric 'l1'; accepted: 'squared_euclidean'"):
        pairwise_distances(torch.randn(2, 2), metric="l1")
    with pytest.raises(ValueError, match="x has dimension 2 but y has dimension 3"):
        pairwise_distances(torch.randn(2, 2), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"x has shape \(2,\); expected a 2-D tensor"):
        pairwise_distances(torch.randn(2))
    with pytest.raises(ValueError, match="x has 2 rows but y has 3"):
        paired_distances(torch.randn(2, 2), torch.randn(3, 2))
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        pairwise_distances([[1.0, 2.0]])


def test_resolve_distance_accepts_functions():
    def manhattan(x, y):
        return torch.cdist(x, y, p=1)

    name, fn = resolve_distance(manhattan)
    assert name == "manhattan" and fn is manhattan
    with pytest.raises(ValueError, match="unknown distance"):
        resolve_distance("manhattan")
