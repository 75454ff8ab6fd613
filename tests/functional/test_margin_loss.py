"""Distance-weighted sampling and the margin loss (Wu et al. 2017)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import reference_losses as ref
from tests.loss_batches import labelled_batches, quietly, random_batch
from tripletkit.errors import NoPairsWarning
from tripletkit.functional import distance_weighted_margin_loss
from tripletkit.functional.distance_weighted import (
    distance_weighted_probabilities,
    distance_weighted_triplets,
)
from tripletkit.mining import mine_triplets
from tripletkit.pairs import PositiveTable, positive_table


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    dim=st.integers(2, 130),
    cutoff=st.sampled_from([0.0, 0.5]),
    nonzero_loss_cutoff=st.sampled_from([1.4, 2.0]),
)
def test_probabilities_match_reference(data, dim, cutoff, nonzero_loss_cutoff):
    m = data.draw(st.integers(1, 8))
    d_row = data.draw(st.lists(st.floats(0.0, 2.0), min_size=m, max_size=m))
    negative_row = data.draw(st.lists(st.booleans(), min_size=m, max_size=m))
    if cutoff == 0.0:  # the reference would take log(0): keep distances off 0
        d_row = [max(d, 1e-3) for d in d_row]
    probabilities = distance_weighted_probabilities(
        torch.tensor([d_row], dtype=torch.float64),
        torch.tensor([negative_row]),
        dim,
        cutoff=cutoff,
        nonzero_loss_cutoff=nonzero_loss_cutoff,
    )[0]
    expected = ref.distance_weighted_probabilities(
        d_row, negative_row, dim, cutoff=cutoff, nonzero_loss_cutoff=nonzero_loss_cutoff
    )
    assert probabilities.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_draws_follow_the_probabilities():
    d = torch.tensor([[0.0, 0.3, 0.7, 1.0, 1.3, 1.6]], dtype=torch.float64)
    labels = torch.tensor([0])
    ref_labels = torch.tensor([0, 1, 2, 3, 4, 5])
    draws = 20000
    table = PositiveTable(torch.zeros(1, draws, dtype=torch.int64), torch.tensor([draws]))
    _, _, negatives = distance_weighted_triplets(
        d, labels, ref_labels, table, 16, generator=torch.Generator().manual_seed(0)
    )
    frequencies = np.bincount(negatives.numpy(), minlength=6) / draws
    expected = ref.distance_weighted_probabilities(
        d[0].tolist(),
        [False, True, True, True, True, True],
        16,
        cutoff=0.5,
        nonzero_loss_cutoff=1.4,
    )
    assert frequencies[0] == 0 and frequencies[5] == 0  # the positive; beyond the cutoff
    for observed, p in zip(frequencies, expected, strict=True):
        assert abs(observed - p) <= 5 * math.sqrt(p * (1 - p) / draws) + 1e-12


@settings(max_examples=40, deadline=None)
@given(batch=labelled_batches(grid=False, min_dim=2))
def test_sampled_triplets_are_valid_and_cover_every_positive_pair(batch):
    x, labels, refs, ref_labels, self_ref = batch.tensors()
    ref_x = x if refs is None else refs
    ref_y = labels if refs is None else ref_labels
    own = torch.arange(len(labels)) if refs is None else self_ref
    d = torch.cdist(
        torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(ref_x, dim=1)
    )
    table = positive_table(labels, ref_y, own)
    anchors, positives, negatives = distance_weighted_triplets(
        d, labels, ref_y, table, x.shape[1], generator=torch.Generator().manual_seed(1)
    )
    assert bool((labels[anchors] == ref_y[positives]).all())
    assert bool((labels[anchors] != ref_y[negatives]).all())
    assert bool((positives != own[anchors]).all())
    has_negative = (labels.unsqueeze(1) != ref_y.unsqueeze(0)).any(dim=1)
    expected_pairs = sorted(
        (a, int(p))
        for a in range(len(labels))
        if has_negative[a]
        for p in table.index[a, : table.count[a]]
    )
    assert sorted(zip(anchors.tolist(), positives.tolist(), strict=True)) == expected_pairs


@settings(max_examples=40, deadline=None)
@given(
    batch=labelled_batches(grid=False, refs=False),
    margin=st.sampled_from([0.0, 0.2]),
    nu=st.sampled_from([0.0, 0.5]),
    per_class=st.booleans(),
)
def test_loss_on_mined_triplets_matches_reference(batch, margin, nu, per_class):
    x, labels, _, _, _ = batch.tensors()
    mined = mine_triplets(x, labels, mining="all", margin=10.0, distance="euclidean")
    beta = torch.linspace(0.8, 1.4, 4, dtype=torch.float64) if per_class else 1.2
    loss = quietly(
        distance_weighted_margin_loss, x, labels, beta=beta, margin=margin, nu=nu, mined=mined
    )
    d = mined.distances.numpy()  # the loss is defined on the miner's distances, as they are
    a, p, n = (t.tolist() for t in mined.as_tuple())
    betas = [float(beta[labels[i]]) if per_class else 1.2 for i in a]
    expected = ref.margin_loss(
        [d[i, j] for i, j in zip(a, p, strict=True)],
        [d[i, j] for i, j in zip(a, n, strict=True)],
        betas,
        margin=margin,
        nu=nu,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_gradcheck_embeddings_and_beta():
    x, labels = random_batch(3, 3, 4, seed=13)
    x.requires_grad_(True)
    beta = torch.tensor([0.9, 1.1, 1.3], dtype=torch.float64, requires_grad=True)

    def fn(a, b):
        generator = torch.Generator().manual_seed(5)  # the same triplets at every evaluation
        return distance_weighted_margin_loss(a, labels, beta=b, nu=0.1, generator=generator)

    assert torch.autograd.gradcheck(fn, (x, beta))


def test_no_triplet_warns_and_keeps_beta_in_the_graph():
    beta = torch.tensor(1.2, requires_grad=True)
    x = torch.randn(3, 4, requires_grad=True)
    with pytest.warns(NoPairsWarning):
        loss = distance_weighted_margin_loss(x, torch.tensor([0, 1, 2]), beta=beta)
    loss.backward()
    assert loss.item() == 0.0 and beta.grad is not None and float(beta.grad) == 0.0


def test_far_negatives_fall_back_to_uniform_and_duplicates_are_finite():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    loss = distance_weighted_margin_loss(
        x, torch.tensor([0, 0, 1, 1]), generator=torch.Generator().manual_seed(0)
    )
    loss.backward()
    # Positives at distance 0 (inside β - α), negatives at 2 (beyond β + α): nothing active.
    assert loss.item() == 0.0
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x, labels = random_batch(4, 4, 8, seed=14, dtype=torch.float32)
    half_x = x.to(dtype).requires_grad_(True)
    loss = distance_weighted_margin_loss(half_x, labels, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert half_x.grad.dtype == dtype and torch.isfinite(half_x.grad.float()).all()


def test_bad_arguments():
    x, labels = random_batch(2, 2, 3)
    with pytest.raises(ValueError, match="nonzero_loss_cutoff"):
        distance_weighted_margin_loss(x, labels, cutoff=1.5, nonzero_loss_cutoff=1.4)
    with pytest.raises(ValueError, match="per-class beta"):
        distance_weighted_margin_loss(x, labels + 5, beta=torch.ones(3))
    other = mine_triplets(x.clone(), labels, mining="hard")
    with pytest.raises(ValueError, match="another embeddings tensor"):
        distance_weighted_margin_loss(x, labels, mined=other)
