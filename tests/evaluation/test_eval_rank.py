"""Rank of the one correct item (ties, duplicates) and the metrics over ranks, hand-checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tripletkit.evaluation.text import rank_metrics, rank_of_correct


def test_strictly_higher_only_counts() -> None:
    q = torch.tensor([[1.0, 0.0]])
    # cos to q: 0.6, 1.0, 0.6, 0.8
    corpus = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.6, -0.8], [0.8, 0.6]])
    assert rank_of_correct(q, corpus, [1]).tolist() == [1]
    assert rank_of_correct(q, corpus, [3]).tolist() == [2]
    # Items 0 and 2 tie at 0.6: neither pushes the other down.
    assert rank_of_correct(q, corpus, [0]).tolist() == [3]
    assert rank_of_correct(q, corpus, [2]).tolist() == [3]


def test_rank_does_not_depend_on_corpus_order_or_tile_size() -> None:
    rng = np.random.default_rng(0)
    q = torch.from_numpy(rng.normal(size=(37, 8)).astype(np.float32))
    corpus = torch.from_numpy(rng.normal(size=(101, 8)).astype(np.float32))
    targets = rng.integers(0, 101, size=37)
    ranks = rank_of_correct(q, corpus, targets)
    # Brute force in float64.
    qn = q.double() / q.double().norm(dim=1, keepdim=True)
    cn = corpus.double() / corpus.double().norm(dim=1, keepdim=True)
    sims = (qn @ cn.T).numpy()
    expected = 1 + (sims > sims[np.arange(37), targets][:, None]).sum(axis=1)
    assert ranks.tolist() == expected.tolist()
    permutation = rng.permutation(101)
    inverse = np.argsort(permutation)
    again = rank_of_correct(q, corpus[permutation], inverse[targets], tile_bytes=1000)
    assert again.tolist() == ranks.tolist()


def test_metrics_by_hand() -> None:
    metrics = rank_metrics([1, 3, 10, 11])
    assert metrics["recall_at_1"] == 0.25
    assert metrics["recall_at_10"] == 0.75
    assert metrics["mrr_at_10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 4)


def test_bad_targets() -> None:
    q, corpus = torch.ones(2, 3), torch.ones(4, 3)
    with pytest.raises(ValueError, match="targets"):
        rank_of_correct(q, corpus, [0])
    with pytest.raises(ValueError, match="corpus rows"):
        rank_of_correct(q, corpus, [0, 4])
    with pytest.raises(ValueError, match="ranks"):
        rank_metrics([0, 1])
