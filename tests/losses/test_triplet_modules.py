"""The loss modules: defaults, statistics and equality with the functional forms."""

from __future__ import annotations

import pytest
import torch

from tripletkit.functional import batch_triplet_loss, triplet_margin_loss
from tripletkit.losses import BatchTripletLoss, TripletMarginLoss


def test_batch_module_equals_function_and_exposes_stats():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(32, 8, generator=generator), dim=1)
    labels = torch.arange(8).repeat_interleave(4)
    module = BatchTripletLoss(margin=0.3, mining="semihard", distance="cosine")
    loss = module(embeddings, labels)
    expected, stats = batch_triplet_loss(
        embeddings, labels, margin=0.3, mining="semihard", distance="cosine", return_stats=True
    )
    torch.testing.assert_close(loss, expected)
    assert module.last_stats == stats
    assert stats.num_valid_triplets == 32 * 3 * 28
    assert stats.num_selected == 32 * 3
    assert 0.0 <= stats.active_triplet_fraction <= 1.0
    assert "mining='semihard'" in repr(module)


def test_triplet_module_equals_function():
    a, p, n = torch.randn(3, 10, 4).unbind(0)
    module = TripletMarginLoss(margin=0.1, distance="euclidean", swap=True)
    torch.testing.assert_close(
        module(a, p, n), triplet_margin_loss(a, p, n, margin=0.1, distance="euclidean", swap=True)
    )


def test_modules_validate_their_parameters():
    with pytest.raises(ValueError, match="unknown mining 'semi-hard'"):
        BatchTripletLoss(mining="semi-hard")
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        BatchTripletLoss(margin=-1)
    with pytest.raises(ValueError, match="unknown distance"):
        TripletMarginLoss(distance="manhattan")


def test_batch_module_trains_a_separable_problem():
    """A linear embedding of two well-separated Gaussian classes learns to separate them."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=generator) * 3
    labels = torch.arange(4).repeat_interleave(16)
    inputs = centers[labels] + torch.randn(64, 16, generator=generator)
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 8)
    loss_fn = BatchTripletLoss(margin=0.2, mining="hard")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        embeddings = torch.nn.functional.normalize(model(inputs), dim=1)
        loss = loss_fn(embeddings, labels)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.25 * first
    # The margin holds per anchor (batch-hard triplets satisfied), not between global extremes.
    assert loss_fn.last_stats.num_active <= 0.1 * loss_fn.last_stats.num_selected
