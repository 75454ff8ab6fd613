"""Losses with a hand-written distance gradient: a user distance function takes the autograd path
and must give the same values and gradients as the named metric."""

from __future__ import annotations

import pytest
import torch

from tests.loss_batches import random_batch
from tripletkit.distances import pairwise_distances
from tripletkit.functional import contrastive_loss, info_nce_loss


def _as_function(metric):
    def distance(x, y):
        return pairwise_distances(x, y, metric)

    return distance


@pytest.mark.parametrize(
    ("fn", "kwargs", "metric"),
    [
        (contrastive_loss, {"neg_margin": 2.0}, "euclidean"),
        (contrastive_loss, {"neg_margin": 2.0, "mining": "hard"}, "squared_euclidean"),
        (info_nce_loss, {"temperature": 0.3}, "cosine"),
        (info_nce_loss, {"temperature": 0.3}, "dot"),
    ],
)
def test_user_function_matches_named_metric(fn, kwargs, metric):
    x, labels = random_batch(4, 3, 5, seed=60)
    refs, ref_labels = random_batch(3, 3, 5, seed=61)
    for ref_args in ((), (refs, ref_labels)):
        named_x, user_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        named = fn(named_x, labels, *ref_args, distance=metric, **kwargs)
        user = fn(user_x, labels, *ref_args, distance=_as_function(metric), **kwargs)
        assert user.item() == pytest.approx(named.item(), rel=1e-12)
        named.backward()
        user.backward()
        torch.testing.assert_close(user_x.grad, named_x.grad, rtol=1e-10, atol=1e-12)
