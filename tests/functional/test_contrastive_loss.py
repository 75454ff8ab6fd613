"""Contrastive loss: against the brute-force reference, gradients, degenerate batches, dtypes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import reference_losses as ref
from tests.loss_batches import labelled_batches, quietly, random_batch
from tripletkit.errors import NoPairsWarning
from tripletkit.functional import contrastive_loss


@settings(max_examples=80, deadline=None)
@given(
    batch=labelled_batches(),
    mining=st.sampled_from(["all", "hard"]),
    metric=st.sampled_from(["squared_euclidean", "euclidean"]),
    pos_margin=st.sampled_from([0.0, 0.5, 1.0]),
    neg_margin=st.sampled_from([0.0, 1.0, 2.5]),
)
def test_matches_reference_on_tied_layouts(batch, mining, metric, pos_margin, neg_margin):
    x, labels, refs, ref_labels, self_ref = batch.tensors()
    loss = quietly(
        contrastive_loss,
        x,
        labels,
        refs,
        ref_labels,
        pos_margin=pos_margin,
        neg_margin=neg_margin,
        distance=metric,
        mining=mining,
        self_ref_index=self_ref,
    )
    expected = ref.contrastive(
        *batch.reference_args(),
        pos_margin=pos_margin,
        neg_margin=neg_margin,
        metric=metric,
        mining=mining,
    )
    assert not torch.isnan(loss)
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    batch=labelled_batches(grid=False),
    mining=st.sampled_from(["all", "hard"]),
    metric=st.sampled_from(["cosine", "dot"]),
)
def test_matches_reference_for_similarity_metrics(batch, mining, metric):
    x, labels, refs, ref_labels, self_ref = batch.tensors()
    loss = quietly(
        contrastive_loss,
        x,
        labels,
        refs,
        ref_labels,
        pos_margin=0.1,
        neg_margin=0.7,
        distance=metric,
        mining=mining,
        self_ref_index=self_ref,
    )
    expected = ref.contrastive(
        *batch.reference_args(), pos_margin=0.1, neg_margin=0.7, metric=metric, mining=mining
    )
    assert loss.item() == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_hand_computed_example():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.6], [0.8, 0.0]])
    loss, stats = contrastive_loss(x, torch.tensor([0, 0, 1]), return_stats=True)
    # Positive pairs (0,1), (1,0): 0.6 each. Negative pairs: 1 - 0.8 twice (active), 1 - 1 twice.
    assert loss.item() == pytest.approx(0.6 + 0.2)
    assert (stats.num_positive_pairs, stats.num_negative_pairs) == (2, 4)
    assert (stats.num_selected_pairs, stats.num_active_pairs) == (6, 4)
    assert stats.mean_negative_distance == pytest.approx((0.8 + 1.0) / 2)


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_gradcheck(mining):
    x, labels = random_batch(3, 3, 4, seed=1)
    x.requires_grad_(True)
    refs = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    ref_labels = torch.tensor([0, 1, 2, 0, 1, 2, 3])

    def fn(a, r):
        return contrastive_loss(a, labels, r, ref_labels, neg_margin=3.0, mining=mining)

    assert torch.autograd.gradcheck(fn, (x, refs))
    assert torch.autograd.gradcheck(
        lambda a: contrastive_loss(a, labels, neg_margin=3.0, mining=mining), (x,)
    )


def test_refs_equal_to_batch_give_the_batch_loss():
    x, labels = random_batch(4, 3, 5, seed=2)
    own = contrastive_loss(x, labels, neg_margin=3.0)
    as_refs = contrastive_loss(
        x, labels, x.clone(), labels, neg_margin=3.0, self_ref_index=torch.arange(12)
    )
    assert own.item() == pytest.approx(as_refs.item(), rel=1e-12)


@pytest.mark.parametrize(
    "labels",
    [[0, 0, 0, 0], [0, 1, 2, 3], [5]],
    ids=["one-class", "singletons", "single-item"],
)
def test_degenerate_batches_are_finite(labels):
    x = torch.randn(len(labels), 3, requires_grad=True)
    labels = torch.tensor(labels)
    if len(labels) == 1:
        with pytest.warns(NoPairsWarning):
            loss = contrastive_loss(x, labels)
        assert loss.item() == 0.0
    else:
        loss = contrastive_loss(x, labels, neg_margin=100.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_nothing_to_learn_is_zero_with_zero_gradients():
    # The only reference is the anchor's own copy: no positive pair and no negative pair.
    x = torch.randn(1, 4, requires_grad=True)
    refs = torch.randn(1, 4, requires_grad=True)
    with pytest.warns(NoPairsWarning):
        loss = contrastive_loss(
            x, torch.tensor([0]), refs, torch.tensor([0]), self_ref_index=torch.tensor([0])
        )
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(
        refs.grad, torch.zeros_like(refs)
    )


def test_duplicates_and_zero_distances_have_finite_gradients():
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]], requires_grad=True)
    loss = contrastive_loss(x, torch.tensor([0, 0, 1]), distance="euclidean")
    loss.backward()
    assert loss.item() == pytest.approx(1.0)  # the negatives sit at distance 0 < margin 1
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x, labels = random_batch(4, 4, 8, seed=3, dtype=torch.float32)
    full = contrastive_loss(x, labels, neg_margin=4.0)
    half_x = x.to(dtype).requires_grad_(True)
    half = contrastive_loss(half_x, labels, neg_margin=4.0)
    half.backward()
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)
    assert half_x.grad.dtype == dtype and torch.isfinite(half_x.grad.float()).all()


def test_bad_arguments_raise_clear_errors():
    x, labels = random_batch(2, 2, 3)
    with pytest.raises(ValueError, match="mining"):
        contrastive_loss(x, labels, mining="semihard")
    with pytest.raises(ValueError, match="neg_margin"):
        contrastive_loss(x, labels, neg_margin=-1.0)
    with pytest.raises(ValueError, match="ref_labels"):
        contrastive_loss(x, labels, x)
    assert math.isfinite(float(contrastive_loss(x, labels)))
