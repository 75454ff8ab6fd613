"""Re-ranking a first stage's top candidates with a second score (e.g. a cross-encoder's).

A first-stage search (:func:`~tripletkit.evaluation.search.knn`) returns each query's ``K``
nearest candidates and their distances; a re-ranker scores those ``K`` pairs again
(:meth:`tripletkit.models.cross_encoder.CrossEncoder.score`, larger is better). The candidates
are then ordered by::

    combined = -first_distance + weight * score

so ``weight = 0`` keeps the first stage's order and ``weight = math.inf`` orders by the second
score alone (ties broken by the first stage). Everything outside the ``K`` candidates stays behind
them, in the first stage's order.

Example:
    >>> import numpy as np
    >>> distances = np.array([[0.10, 0.12, 0.30]])   # the first stage's top 3, ascending
    >>> scores = np.array([[0.0, 2.0, 1.0]])          # a re-ranker's scores of the same pairs
    >>> rerank_order(distances, scores, weight=0.1).tolist()
    [[1, 0, 2]]
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["rerank_order", "reranked_ranks"]


def _as_matrix(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be a 2-D numeric array (queries x candidates)")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return array


def _keys(first_distances: Any, scores: Any, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(primary, secondary) keys, larger is better, compared lexicographically."""
    distances = _as_matrix(first_distances, "first_distances")
    second = _as_matrix(scores, "scores")
    if second.shape != distances.shape:
        raise ValueError(
            f"scores has shape {second.shape}; expected {distances.shape}, one per candidate"
        )
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not weight >= 0:
        raise ValueError(
            f"weight must be a number >= 0 (math.inf: the scores alone); got {weight!r}"
        )
    if math.isinf(weight):
        return second, -distances
    return -distances + float(weight) * second, np.zeros_like(distances)


def rerank_order(first_distances: Any, scores: Any, *, weight: float) -> np.ndarray:
    """``(N, K)`` int64: each row's candidate positions in re-ranked order.

    Args:
        first_distances: ``(N, K)`` the first stage's distances of each query's candidates
            (smaller is closer; e.g. ``knn(...).distances``, offsets included).
        scores: ``(N, K)`` the second score of the same pairs (larger is better).
        weight: ``>= 0``, the weight of ``scores`` against the first stage (``math.inf``: the
            scores alone, ties broken by the first stage).

    Equal combined values keep the first stage's order. Apply it to the candidates' ids with
    ``np.take_along_axis(ids, order, axis=1)``.
    """
    primary, secondary = _keys(first_distances, scores, weight)
    position = np.broadcast_to(np.arange(primary.shape[1]), primary.shape)
    return np.lexsort((position, -secondary, -primary), axis=-1).astype(np.int64)


def reranked_ranks(
    candidate_ids: Any,
    first_distances: Any,
    scores: Any,
    targets: Any,
    first_ranks: Any,
    *,
    weight: float,
) -> np.ndarray:
    """The rank of each query's correct item after re-ranking its candidates.

    Args:
        candidate_ids: ``(N, K)`` int, the corpus rows of each query's candidates (distinct
            within a row), e.g. ``knn(...).indices``.
        first_distances, scores, weight: as :func:`rerank_order`.
        targets: ``(N,)`` int, each query's correct corpus row.
        first_ranks: ``(N,)`` int, the correct item's rank in the first stage (e.g. from
            :func:`~tripletkit.evaluation.text.rank_of_correct` with the same offsets).

    Returns:
        ``(N,)`` int64: for a query whose correct item is among its candidates, ``1 +`` the
        number of candidates that re-rank strictly ahead of it (ties count in its favour, as
        ``rank_of_correct``); otherwise ``max(first_rank, K + 1)``, behind every candidate. So
        ``weight=0`` reproduces ``first_ranks``, except for a correct item that ties with the
        ``K``-th candidate and was left out of the candidates: it ranks ``K + 1`` here.
    """
    primary, secondary = _keys(first_distances, scores, weight)
    ids = np.asarray(candidate_ids)
    if ids.shape != primary.shape or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"candidate_ids must be integer corpus rows of shape {primary.shape}; got "
            f"{ids.shape} {ids.dtype}"
        )
    targets = np.asarray(targets)
    first = np.asarray(first_ranks)
    count = primary.shape[0]
    for name, values in (("targets", targets), ("first_ranks", first)):
        if values.shape != (count,) or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must be {count} integers, one per query")
    if (first < 1).any():
        raise ValueError("first_ranks must be >= 1")
    hit = ids == targets[:, None]
    found = hit.any(axis=1)
    column = hit.argmax(axis=1)
    rows = np.arange(count)
    target_primary = primary[rows, column][:, None]
    target_secondary = secondary[rows, column][:, None]
    ahead = (primary > target_primary) | (
        (primary == target_primary) & (secondary > target_secondary)
    )
    return np.where(found, ahead.sum(axis=1) + 1, np.maximum(first, primary.shape[1] + 1)).astype(
        np.int64
    )
