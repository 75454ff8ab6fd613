"""Miners: the same triplets as the core's mining modes, distances reused by the losses."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests import reference_losses as ref
from tests.loss_batches import labelled_batches, quietly, random_batch

from tripletkit.distances import pairwise_distances
from tripletkit.errors import NoTripletsWarning
from tripletkit.functional import (
    MINING_MODES,
    batch_triplet_loss,
    contrastive_loss,
    mined_triplet_loss,
)
from tripletkit.functional.mined import gathered_distances
from tripletkit.mining import (
    DistanceWeightedMiner,
    PairMiner,
    TripletMiner,
    mine_distance_weighted,
    mine_pairs,
    mine_triplets,
)


@settings(max_examples=80, deadline=None)
@given(
    batch=labelled_batches(max_items=9),
    mining=st.sampled_from(MINING_MODES),
    margin=st.sampled_from([0.0, 1.0, 2.5]),
    metric=st.sampled_from(["squared_euclidean", "euclidean"]),
    backend=st.sampled_from(["numba", "torch"]),
)
def test_triplets_match_brute_force_selection(batch, mining, margin, metric, backend):
    x, labels, refs, ref_labels, self_ref = batch.tensors()
    mined = mine_triplets(
        x,
        labels,
        refs,
        ref_labels,
        mining=mining,
        margin=margin,
        distance=metric,
        self_ref_index=self_ref,
        backend=backend,
    )
    expected = ref.mined_triplets(
        *batch.reference_args(), mining=mining, margin=margin, metric=metric
    )
    got = list(zip(*(t.tolist() for t in mined.as_tuple()), strict=True))
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("mining", MINING_MODES)
@pytest.mark.parametrize("metric", ["squared_euclidean", "euclidean", "cosine"])
def test_loss_of_mined_triplets_equals_the_batch_loss(mining, metric):
    x, labels = random_batch(5, 4, 6, seed=20)
    refs = torch.randn(15, 6, dtype=torch.float64, requires_grad=True)
    ref_labels = torch.randint(0, 6, (15,), generator=torch.Generator().manual_seed(3))
    for ref_args in ((None, None), (refs, ref_labels)):
        x_batch = x.clone().requires_grad_(True)
        x_mined = x.clone().requires_grad_(True)
        expected = batch_triplet_loss(
            x_batch, labels, *ref_args, margin=0.3, mining=mining, distance=metric
        )
        mined = mine_triplets(
            x_mined, labels, *ref_args, mining=mining, margin=0.3, distance=metric
        )
        loss = mined_triplet_loss(mined, margin=0.3)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-9)
        expected.backward()
        loss.backward()
        torch.testing.assert_close(x_mined.grad, x_batch.grad, rtol=1e-9, atol=1e-12)


def test_mined_distances_are_read_not_recomputed():
    x, labels = random_batch(3, 3, 4, seed=21)
    mined = mine_triplets(x, labels, mining="hard")
    poisoned = torch.full_like(mined.distances, 7.0)
    object.__setattr__(mined, "distances", poisoned)
    assert torch.equal(mined.positive_distances(), torch.full((9,), 7.0, dtype=torch.float64))


def test_gathered_distances_gradcheck():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0, 0, 2, 4, 4, 1])
    cols = torch.tensor([1, 1, 3, 0, 2, 1])  # a repeated pair as well
    for metric in ("squared_euclidean", "euclidean", "cosine", "dot"):

        def fn(a, b, metric=metric):
            d = pairwise_distances(a.detach(), b.detach(), metric)
            return gathered_distances(a, b, rows, cols, d, metric)

        assert torch.autograd.gradcheck(fn, (x, y))


def test_user_distance_function_flows_through_autograd():
    def manhattan(a, b):
        return (a.unsqueeze(1) - b.unsqueeze(0)).abs().sum(-1)

    x, labels = random_batch(3, 3, 4, seed=22)
    x_batch = x.clone().requires_grad_(True)
    x_mined = x.clone().requires_grad_(True)
    expected = batch_triplet_loss(x_batch, labels, mining="hard", distance=manhattan)
    mined = mine_triplets(x_mined, labels, mining="hard", distance=manhattan)
    loss = mined_triplet_loss(mined)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    expected.backward()
    loss.backward()
    torch.testing.assert_close(x_mined.grad, x_batch.grad)


@settings(max_examples=60, deadline=None)
@given(batch=labelled_batches(max_items=9), mining=st.sampled_from(["all", "hard"]))
def test_pairs_match_brute_force(batch, mining):
    x, labels, refs, ref_labels, self_ref = batch.tensors()
    mined = mine_pairs(x, labels, refs, ref_labels, mining=mining, self_ref_index=self_ref)
    ref_x, ref_y, own = (
        (batch.x, batch.labels, list(range(len(batch.labels))))
        if batch.refs is None
        else (batch.refs, batch.ref_labels, batch.self_ref)
    )
    positives = ref.positive_pairs(batch.labels, ref_y, own)
    negatives = ref.negative_pairs(batch.labels, ref_y)
    if mining == "hard":
        d = ref.distances(batch.x, ref_x, "euclidean")
        rows = sorted({a for a, _ in positives})
        positives = [
            (a, max((p for b, p in positives if b == a), key=lambda p: (d[a, p], -p))) for a in rows
        ]
        rows = sorted({a for a, _ in negatives})
        negatives = [
            (a, min((n for b, n in negatives if b == a), key=lambda n: (d[a, n], n))) for a in rows
        ]
    a1, p, a2, n = (t.tolist() for t in mined.as_tuple())
    assert list(zip(a1, p, strict=True)) == positives
    assert list(zip(a2, n, strict=True)) == negatives


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_contrastive_on_mined_pairs_equals_batch_contrastive(mining):
    x, labels = random_batch(4, 3, 5, seed=23)
    x_batch = x.clone().requires_grad_(True)
    x_mined = x.clone().requires_grad_(True)
    expected = contrastive_loss(x_batch, labels, neg_margin=2.5, mining=mining)
    mined = mine_pairs(x_mined, labels, mining=mining)
    loss = contrastive_loss(x_mined, labels, neg_margin=2.5, mined=mined)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    expected.backward()
    loss.backward()
    torch.testing.assert_close(x_mined.grad, x_batch.grad)


def test_distance_weighted_miner_is_reproducible_and_valid():
    x, labels = random_batch(4, 4, 8, seed=24)
    first = mine_distance_weighted(x, labels, generator=torch.Generator().manual_seed(3))
    again = DistanceWeightedMiner(generator=torch.Generator().manual_seed(3))(x, labels)
    assert all(torch.equal(a, b) for a, b in zip(first.as_tuple(), again.as_tuple(), strict=True))
    assert len(first) == 16 * 3  # one negative per positive pair
    assert bool((labels[first.anchors] != labels[first.negatives]).all())
    assert first.metric == "euclidean"


def test_empty_mining_result_warns_and_is_zero():
    x = torch.randn(3, 2, requires_grad=True)
    mined = mine_triplets(x, torch.tensor([0, 1, 2]), mining="all")
    assert len(mined) == 0
    with pytest.warns(NoTripletsWarning):
        loss = mined_triplet_loss(mined)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_miner_objects_and_errors():
    x, labels = random_batch(2, 2, 3)
    assert len(TripletMiner(mining="hard")(x, labels)) == 4
    assert len(PairMiner(mining="all")(x, labels).positives) == 4
    with pytest.raises(ValueError, match="unknown mining"):
        mine_triplets(x, labels, mining="distance-weighted")
    with pytest.raises(ValueError, match="unknown mining"):
        mine_pairs(x, labels, mining="semihard")
    mined = mine_pairs(x, labels)
    with pytest.raises(ValueError, match="another embeddings tensor"):
        quietly(contrastive_loss, x.clone(), labels, mined=mined)
