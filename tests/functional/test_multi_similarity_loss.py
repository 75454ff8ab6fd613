"""Multi-similarity loss against the float64 reference, with and without pair mining."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import reference_losses as ref
from tests.loss_batches import labelled_batches, quietly, random_batch
from tripletkit.errors import NoPairsWarning
from tripletkit.functional import multi_similarity_loss


@settings(max_examples=80, deadline=None)
@given(
    batch=labelled_batches(grid=False),
    params=st.sampled_from([(2.0, 50.0, 0.5), (1.0, 1.0, 0.0), (2.0, 40.0, 1.0)]),
    epsilon=st.sampled_from([None, 0.0, 0.1]),
    metric=st.sampled_from(["cosine", "dot"]),
)
def test_matches_reference(batch, params, epsilon, metric):
    alpha, beta, base = params
    x, labels, refs, ref_labels, self_ref = batch.tensors()
    loss = quietly(
        multi_similarity_loss,
        x,
        labels,
        refs,
        ref_labels,
        alpha=alpha,
        beta=beta,
        base=base,
        epsilon=epsilon,
        distance=metric,
        self_ref_index=self_ref,
    )
    expected = ref.multi_similarity(
        *batch.reference_args(),
        alpha=alpha,
        beta=beta,
        base=base,
        epsilon=epsilon,
        metric=metric,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_hand_computed():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss = multi_similarity_loss(x, torch.tensor([0, 0, 1]), alpha=1.0, beta=1.0, base=0.0)
    expected = (2 * (np.log1p(np.exp(-1.0)) + np.log(2.0)) + np.log(3.0)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_pair_mining_keeps_only_informative_pairs():
    # Anchor 0: positive at cos 0.9, negatives at cos 0.95 (kept: harder than the positive) and
    # cos 0.0 (dropped: far easier than the positive, beyond epsilon).
    angle = np.arccos([0.9, 0.95, 0.0])
    x = torch.tensor([[1.0, 0.0]] + [[np.cos(a), np.sin(a)] for a in angle], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])
    refs, ref_labels = x[1:], labels[1:]
    _, stats = multi_similarity_loss(
        x[:1], labels[:1], refs, ref_labels, epsilon=0.1, return_stats=True
    )
    assert (stats.num_selected_pairs, stats.num_active_pairs) == (3, 2)


@pytest.mark.parametrize("epsilon", [None, 0.1])
def test_gradcheck(epsilon):
    x, labels = random_batch(3, 3, 4, seed=11)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: multi_similarity_loss(a, labels, beta=5.0, epsilon=epsilon), (x,)
    )


def test_degenerate_and_extreme_inputs_are_finite():
    with pytest.warns(NoPairsWarning):
        loss = multi_similarity_loss(torch.randn(1, 3, requires_grad=True), torch.tensor([0]))
    assert loss.item() == 0.0
    x = torch.randn(6, 5, requires_grad=True)
    for labels in ([0] * 6, list(range(6))):
        loss = multi_similarity_loss(x * 1e4, torch.tensor(labels), beta=1e3)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x, labels = random_batch(4, 4, 8, seed=12, dtype=torch.float32)
    full = multi_similarity_loss(x, labels)
    half_x = x.to(dtype).requires_grad_(True)
    half = multi_similarity_loss(half_x, labels)
    half.backward()
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=5e-2)
    assert torch.isfinite(half_x.grad.float()).all()


def test_rejects_distances_without_a_similarity():
    with pytest.raises(ValueError, match="'cosine', 'dot'"):
        multi_similarity_loss(torch.randn(3, 2), torch.tensor([0, 0, 1]), distance="euclidean")
