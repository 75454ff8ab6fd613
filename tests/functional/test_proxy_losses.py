"""Proxy-NCA and Proxy Anchor: against the float64 references, gradients, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import reference_losses as ref
from tripletkit.errors import NoPairsWarning
from tripletkit.functional import proxy_anchor_loss, proxy_nca_loss


@st.composite
def proxy_batches(draw):
    num_classes = draw(st.integers(1, 5))
    batch = draw(st.integers(1, 8))
    dim = draw(st.integers(1, 4))
    element = st.floats(-2.0, 2.0, allow_nan=False, width=32)
    x = np.array(draw(st.lists(element, min_size=batch * dim, max_size=batch * dim)))
    proxies = np.array(
        draw(st.lists(element, min_size=num_classes * dim, max_size=num_classes * dim))
    )
    labels = draw(st.lists(st.integers(0, num_classes - 1), min_size=batch, max_size=batch))
    return x.reshape(batch, dim), labels, proxies.reshape(num_classes, dim)


@settings(max_examples=60, deadline=None)
@given(data=proxy_batches(), temperature=st.sampled_from([1.0, 1 / 9, 0.05]))
def test_proxy_nca_matches_reference(data, temperature):
    x, labels, proxies = data
    loss = proxy_nca_loss(
        torch.tensor(x), torch.tensor(labels), torch.tensor(proxies), temperature=temperature
    )
    expected = ref.proxy_nca(x, labels, proxies, temperature=temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(data=proxy_batches(), margin=st.sampled_from([0.0, 0.1]), alpha=st.sampled_from([1.0, 32.0]))
def test_proxy_anchor_matches_reference(data, margin, alpha):
    x, labels, proxies = data
    loss = proxy_anchor_loss(
        torch.tensor(x), torch.tensor(labels), torch.tensor(proxies), margin=margin, alpha=alpha
    )
    expected = ref.proxy_anchor(x, labels, proxies, margin=margin, alpha=alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_hand_computed_values():
    proxies = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    anchor = proxy_anchor_loss(x, labels, proxies, margin=0.0, alpha=1.0)
    assert anchor.item() == pytest.approx(np.log1p(np.exp(-1.0)) + np.log(2.0), rel=1e-12)
    nca = proxy_nca_loss(x, labels, proxies, temperature=0.5)
    # logits -(2 - 2 cos) / 0.5: own proxy 0, the other -4.
    assert nca.item() == pytest.approx(np.log1p(np.exp(-4.0)), rel=1e-12)


@pytest.mark.parametrize("fn", [proxy_nca_loss, proxy_anchor_loss])
def test_gradcheck_embeddings_and_proxies(fn):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    proxies = torch.randn(4, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3])
    assert torch.autograd.gradcheck(lambda a, p: fn(a, labels, p), (x, proxies))


def test_proxy_anchor_is_finite_at_large_scale_and_with_empty_classes():
    x = torch.randn(4, 8, requires_grad=True)
    proxies = torch.randn(50, 8, requires_grad=True)  # 46 proxies without positives
    loss = proxy_anchor_loss(x * 1e3, torch.tensor([0, 0, 1, 1]), proxies, alpha=1e4)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert torch.isfinite(proxies.grad).all()


def test_zero_embedding_rows_are_finite():
    x = torch.zeros(3, 4, requires_grad=True)
    proxies = torch.randn(2, 4, requires_grad=True)
    for fn in (proxy_nca_loss, proxy_anchor_loss):
        loss = fn(x, torch.tensor([0, 1, 1]), proxies)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_empty_batch_warns_and_is_zero():
    proxies = torch.randn(3, 4, requires_grad=True)
    for fn in (proxy_nca_loss, proxy_anchor_loss):
        with pytest.warns(NoPairsWarning):
            loss = fn(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), proxies)
        assert loss.item() == 0.0 and loss.requires_grad


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fn", [proxy_nca_loss, proxy_anchor_loss])
def test_half_precision_inputs(fn, dtype):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(16, 8, generator=generator)
    proxies = torch.randn(4, 8, generator=generator)
    labels = torch.arange(4).repeat(4)
    full = fn(x, labels, proxies)
    half_x = x.to(dtype).requires_grad_(True)
    half = fn(half_x, labels, proxies)
    half.backward()
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)
    assert half_x.grad.dtype == dtype


def test_labels_out_of_range_raise():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        proxy_nca_loss(torch.randn(2, 4), torch.tensor([0, 3]), torch.randn(3, 4))
    with pytest.raises(ValueError, match="dimension"):
        proxy_anchor_loss(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(3, 5))
    with pytest.raises(ValueError, match="temperature"):
        proxy_nca_loss(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(3, 4), temperature=0)
