"""Re-ranking a first stage's candidates: hand-checked orders and ranks, and ranks against a
brute-force reference that sorts every candidate list in plain Python."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripletkit.evaluation.rerank import rerank_order, reranked_ranks


def test_hand_checked_orders():
    distances = np.array([[0.25, 0.5, 0.75]])  # quarters and eighths: exact in floating point
    scores = np.array([[0.0, 2.0, 1.0]])
    # combined = -d + w s: w = 0.25 → [-0.25, 0, -0.5]; w = 0 → the first stage's order
    assert rerank_order(distances, scores, weight=0.25).tolist() == [[1, 0, 2]]
    assert rerank_order(distances, scores, weight=0).tolist() == [[0, 1, 2]]
    # w = 0.125 → [-0.25, -0.25, -0.625]: a tie, kept in the first stage's order
    assert rerank_order(distances, scores, weight=0.125).tolist() == [[0, 1, 2]]
    assert rerank_order(distances, scores, weight=math.inf).tolist() == [[1, 2, 0]]
    # the scores alone, equal scores ordered by the first stage
    tied = np.array([[1.0, 3.0, 3.0]])
    assert rerank_order(distances, tied, weight=math.inf).tolist() == [[1, 2, 0]]
    assert rerank_order(distances[:, ::-1], tied, weight=math.inf).tolist() == [[2, 1, 0]]


def test_hand_checked_ranks():
    ids = np.array([[7, 3, 5], [2, 9, 4], [1, 0, 6]])
    distances = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.1, 0.1, 0.5]])
    scores = np.array([[0.0, 0.0, 5.0], [3.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    targets = np.array([5, 8, 0])
    first = np.array([3, 12, 1])
    # weight 0.1: query 0 → [-0.1, -0.2, 0.2]: target (5) first; query 1: target 8 is not a
    # candidate, keeps its first rank 12; query 2: a tie with row 1 at -0.1, counted in its favour.
    assert reranked_ranks(ids, distances, scores, targets, first, weight=0.1).tolist() == [1, 12, 1]
    # weight 0 reproduces the first stage's ranks of targets among the candidates
    assert reranked_ranks(ids, distances, scores, targets, first, weight=0).tolist() == [3, 12, 1]
    # a target outside the candidates with a tied first rank inside them goes behind them all
    assert reranked_ranks(ids, distances, scores, targets, [3, 2, 1], weight=0).tolist() == [
        3,
        4,
        1,
    ]


def brute_force_ranks(ids, distances, scores, targets, first, weight):
    ranks = []
    for row in range(len(ids)):
        entries = []
        for column in range(len(ids[row])):
            d, s = float(distances[row][column]), float(scores[row][column])
            key = (s, -d) if math.isinf(weight) else (-d + weight * s, 0.0)
            entries.append((key, int(ids[row][column])))
        target = [key for key, i in entries if i == targets[row]]
        if not target:
            ranks.append(max(int(first[row]), len(entries) + 1))
            continue
        ranks.append(1 + sum(key > target[0] for key, _ in entries))
    return ranks


@settings(max_examples=150, deadline=None)
@given(
    rows=st.integers(1, 6),
    k=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    weight=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, math.inf]),
)
def test_ranks_against_brute_force_with_ties(rows, k, seed, weight):
    rng = np.random.default_rng(seed)
    # quarters: combined values tie exactly and often
    distances = np.sort(rng.integers(0, 4, (rows, k)) / 4, axis=1)
    scores = rng.integers(-2, 3, (rows, k)) / 4
    ids = np.stack([rng.permutation(3 * k)[:k] for _ in range(rows)])
    targets = rng.integers(0, 3 * k, rows)
    first = rng.integers(1, 4 * k, rows)
    got = reranked_ranks(ids, distances, scores, targets, first, weight=weight)
    assert got.tolist() == brute_force_ranks(ids, distances, scores, targets, first, weight)
    # the order puts each found target at a position no better than its rank (ties in its favour)
    order = rerank_order(distances, scores, weight=weight)
    ordered = np.take_along_axis(ids, order, axis=1)
    for row in range(rows):
        position = np.flatnonzero(ordered[row] == targets[row])
        if position.size:
            assert got[row] <= position[0] + 1


def test_bad_input_is_a_clear_error():
    d = np.zeros((2, 3))
    with pytest.raises(ValueError, match="scores has shape"):
        rerank_order(d, np.zeros((2, 2)), weight=1.0)
    with pytest.raises(ValueError, match="NaN"):
        rerank_order(d, np.full((2, 3), np.nan), weight=1.0)
    with pytest.raises(ValueError, match="weight"):
        rerank_order(d, d, weight=-1.0)
    with pytest.raises(ValueError, match="candidate_ids"):
        reranked_ranks(np.zeros((2, 2), int), d, d, [0, 0], [1, 1], weight=1.0)
    with pytest.raises(ValueError, match="first_ranks"):
        reranked_ranks(np.zeros((2, 3), int), d, d, [0, 0], [0, 1], weight=1.0)
    with pytest.raises(ValueError, match="targets"):
        reranked_ranks(np.zeros((2, 3), int), d, d, [0], [1, 1], weight=1.0)
