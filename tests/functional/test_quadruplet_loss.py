"""Quadruplet loss: exact against brute-force enumeration of every quadruplet."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import reference_losses as ref
from tests.loss_batches import labelled_batches, quietly, random_batch
from tripletkit.errors import NoTripletsWarning
from tripletkit.functional import batch_triplet_loss, quadruplet_loss


@settings(max_examples=80, deadline=None)
@given(
    batch=labelled_batches(max_items=9, max_classes=5),
    mining=st.sampled_from(["all", "hard"]),
    metric=st.sampled_from(["squared_euclidean", "euclidean"]),
    margins=st.sampled_from([(0.0, 0.0), (1.0, 0.5), (2.0, 3.0)]),
)
def test_matches_brute_force_enumeration(batch, mining, metric, margins):
    x, labels, refs, ref_labels, self_ref = batch.tensors()
    margin, margin2 = margins
    loss = quietly(
        quadruplet_loss,
        x,
        labels,
        refs,
        ref_labels,
        margin=margin,
        margin2=margin2,
        mining=mining,
        distance=metric,
        self_ref_index=self_ref,
    )
    expected = ref.quadruplet(
        *batch.reference_args(), margin=margin, margin2=margin2, metric=metric, mining=mining
    )
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(batch=labelled_batches(max_items=9, max_classes=5, grid=False))
def test_matches_brute_force_on_generic_inputs(batch):
    x, labels, refs, ref_labels, self_ref = batch.tensors()
    for mining in ("all", "hard"):
        loss = quietly(
            quadruplet_loss,
            x,
            labels,
            refs,
            ref_labels,
            margin=0.7,
            margin2=0.3,
            mining=mining,
            distance="cosine",
            self_ref_index=self_ref,
        )
        expected = ref.quadruplet(
            *batch.reference_args(), margin=0.7, margin2=0.3, metric="cosine", mining=mining
        )
        assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_triplet_term_equals_the_core_batch_all_loss():
    # Two classes: no quadruplet exists, so the loss is the triplet term alone.
    x, labels = random_batch(2, 6, 4, seed=4)
    ours = quadruplet_loss(x, labels, margin=1.0, margin2=0.5)
    core = batch_triplet_loss(x, labels, margin=1.0, mining="all")
    assert ours.item() == pytest.approx(core.item(), rel=1e-9)


def test_statistics_count_every_tuple():
    x, labels = random_batch(3, 2, 2, seed=5)
    _, stats = quadruplet_loss(x, labels, margin=100.0, margin2=100.0, return_stats=True)
    # 6 positive pairs; each anchor has 4 negatives; the pairs avoiding a class: 2 x 2 x 2 ordered.
    assert stats.num_valid_triplets == 6 * 4
    assert stats.num_valid_quadruplets == 6 * 8
    assert stats.num_selected_quadruplets == stats.num_valid_quadruplets  # huge margin: all active
    assert stats.active_quadruplet_fraction == 1.0


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_gradcheck(mining):
    x, labels = random_batch(3, 3, 3, seed=6)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: quadruplet_loss(a, labels, margin=1.5, margin2=0.8, mining=mining), (x,)
    )
    refs = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    ref_labels = torch.tensor([0, 1, 2, 3, 0, 3])
    assert torch.autograd.gradcheck(
        lambda a, r: quadruplet_loss(
            a, labels, r, ref_labels, margin=1.5, margin2=0.8, mining=mining
        ),
        (x, refs),
    )


@pytest.mark.parametrize("labels", [[0, 0, 0], [0, 1, 2], [0, 0, 1, 1]])
def test_degenerate_batches(labels):
    x = torch.randn(len(labels), 3, requires_grad=True)
    labels = torch.tensor(labels)
    if len(set(labels.tolist())) == 1 or len(set(labels.tolist())) == len(labels):
        with pytest.warns(NoTripletsWarning):
            loss = quadruplet_loss(x, labels)
        assert loss.item() == 0.0
    else:  # two classes: triplets but no quadruplet
        loss, stats = quadruplet_loss(x, labels, return_stats=True)
        assert stats.num_valid_quadruplets == 0
    loss.backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x, labels = random_batch(4, 3, 6, seed=7, dtype=torch.float32)
    full = quadruplet_loss(x, labels, margin=2.0, margin2=1.0)
    half_x = x.to(dtype).requires_grad_(True)
    half = quadruplet_loss(half_x, labels, margin=2.0, margin2=1.0)
    half.backward()
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=3e-2)
    assert torch.isfinite(half_x.grad.float()).all()
