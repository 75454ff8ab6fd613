"""InfoNCE and the multiple-negatives ranking loss against float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import reference_losses as ref
from tests.loss_batches import labelled_batches, quietly, random_batch
from tripletkit.errors import NoPairsWarning
from tripletkit.functional import info_nce_loss, multiple_negatives_ranking_loss


@settings(max_examples=80, deadline=None)
@given(
    batch=labelled_batches(grid=False),
    temperature=st.sampled_from([1.0, 0.1, 0.05]),
    metric=st.sampled_from(["cosine", "squared_euclidean", "dot"]),
)
def test_info_nce_matches_reference(batch, temperature, metric):
    x, labels, refs, ref_labels, self_ref = batch.tensors()
    loss = quietly(
        info_nce_loss,
        x,
        labels,
        refs,
        ref_labels,
        temperature=temperature,
        distance=metric,
        self_ref_index=self_ref,
    )
    expected = ref.info_nce(*batch.reference_args(), temperature=temperature, metric=metric)
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    batch=st.integers(1, 6),
    negatives=st.integers(0, 5),
    symmetric=st.booleans(),
    use_labels=st.booleans(),
    margin=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_ranking_loss_matches_reference(data, batch, negatives, symmetric, use_labels, margin):
    element = st.floats(-2.0, 2.0, allow_nan=False, width=32)

    def matrix(rows):
        values = data.draw(st.lists(element, min_size=rows * 3, max_size=rows * 3))
        return np.array(values, dtype=np.float64).reshape(rows, 3)

    queries, positives = matrix(batch), matrix(batch)
    hard = matrix(negatives) if negatives else None
    labels = (
        data.draw(st.lists(st.integers(0, 2), min_size=batch, max_size=batch))
        if use_labels
        else None
    )
    loss, stats = quietly(
        multiple_negatives_ranking_loss,
        torch.tensor(queries),
        torch.tensor(positives),
        None if hard is None else torch.tensor(hard),
        labels=None if labels is None else torch.tensor(labels),
        temperature=0.1,
        symmetric=symmetric,
        margin=margin,
        return_stats=True,
    )
    # The statistics by brute force: each query's own positive against its allowed negatives (the
    # other candidates, less the other pairs with its label), in plain distances (no margin).
    candidates = list(positives) + (list(hard) if hard is not None else [])
    own, negative, misranked = [], [], 0
    for i, query in enumerate(queries):
        d_own = ref.distance(query, positives[i], "cosine")
        d_negatives = [
            ref.distance(query, c, "cosine")
            for j, c in enumerate(candidates)
            if j != i and not (labels is not None and j < batch and labels[j] == labels[i])
        ]
        own.append(d_own)
        negative += d_negatives
        misranked += bool(d_negatives) and min(d_negatives) <= d_own
    if negative:
        assert stats.num_negative_pairs == len(negative)
        assert stats.num_active_pairs == misranked
        assert stats.mean_positive_distance == pytest.approx(np.mean(own), abs=1e-9)
        assert stats.mean_negative_distance == pytest.approx(np.mean(negative), abs=1e-9)
    expected = ref.multiple_negatives_ranking(
        queries,
        positives,
        hard,
        labels,
        temperature=0.1,
        metric="cosine",
        symmetric=symmetric,
        margin=margin,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_info_nce_hand_computed():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss, stats = info_nce_loss(x, torch.tensor([0, 0, 1]), temperature=1.0, return_stats=True)
    assert loss.item() == pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-12)
    assert (stats.num_selected_pairs, stats.num_active_pairs) == (2, 0)


def test_ranking_margin_hand_computed():
    # Two orthogonal pairs at temperature 1: the other positive is 1 farther in cosine, so the
    # loss is softplus(-1) per query; a margin of 0.4 narrows the gap to 0.6: softplus(-0.6).
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss = multiple_negatives_ranking_loss(q, q.clone(), temperature=1.0, margin=0.4)
    assert loss.item() == pytest.approx(np.log1p(np.exp(-0.6)), rel=1e-12)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        multiple_negatives_ranking_loss(q, q, margin=-0.1)


def test_gradchecks():
    x, labels = random_batch(3, 3, 4, seed=8)
    x.requires_grad_(True)
    refs = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    ref_labels = torch.tensor([0, 1, 2, 2, 4])
    assert torch.autograd.gradcheck(
        lambda a, r: info_nce_loss(a, labels, r, ref_labels, temperature=0.5), (x, refs)
    )
    q = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    p = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    n = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: multiple_negatives_ranking_loss(
            a, b, c, labels=torch.tensor([0, 0, 1, 2]), temperature=0.5, symmetric=True
        ),
        (q, p, n),
    )


def test_anchors_without_negatives_do_not_dilute_or_nan():
    # Anchor 2's class has every reference: its pairs are skipped, not averaged in as 0.
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    refs = torch.randn(3, 3, dtype=torch.float64)
    ref_labels = torch.tensor([0, 0, 1])
    loss = info_nce_loss(x, labels, refs, ref_labels, temperature=0.1)
    loss.backward()
    expected = ref.info_nce(
        x.detach().numpy(),
        labels.tolist(),
        refs.numpy(),
        ref_labels.tolist(),
        None,
        temperature=0.1,
        metric="cosine",
    )
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("labels", [[0, 0, 0], [0, 1, 2]])
def test_degenerate_batches_warn_and_are_zero(labels):
    x = torch.randn(len(labels), 3, requires_grad=True)
    with pytest.warns(NoPairsWarning):
        loss = info_nce_loss(x, torch.tensor(labels))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_single_query_without_negatives_warns():
    q = torch.randn(1, 3, requires_grad=True)
    with pytest.warns(NoPairsWarning):
        loss = multiple_negatives_ranking_loss(q, torch.randn(1, 3))
    assert loss.item() == 0.0


def test_extreme_temperature_is_finite():
    x, labels = random_batch(4, 4, 8, seed=9, dtype=torch.float32)
    x.requires_grad_(True)
    loss = info_nce_loss(x * 100, labels, temperature=1e-4)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x, labels = random_batch(4, 4, 8, seed=10, dtype=torch.float32)
    full = info_nce_loss(x, labels, temperature=0.1)
    half_x = x.to(dtype).requires_grad_(True)
    half = info_nce_loss(half_x, labels, temperature=0.1)
    half.backward()
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=3e-2)
    q = x[:8].to(dtype).requires_grad_(True)
    ranking = multiple_negatives_ranking_loss(q, x[8:].to(dtype), temperature=0.1)
    ranking.backward()
    assert ranking.dtype == torch.float32 and q.grad.dtype == dtype


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="positive of query"):
        multiple_negatives_ranking_loss(torch.randn(3, 4), torch.randn(2, 4))
