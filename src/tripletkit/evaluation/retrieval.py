"""Retrieval metrics of labelled embeddings: precision@1, Recall@K, R-precision, MAP@R, mAP, MRR.

Each query is ranked against a reference set (or against the other queries when there is none) by
the exact, memory-bounded search of :mod:`tripletkit.evaluation.search`; a reference is *relevant*
to a query when it has the query's label. With ``R`` the number of relevant references of a query
and ``rel(i)`` whether the reference at rank ``i`` (1-based) is relevant:

==================  ==========================================================================
``precision_at_1``  ``rel(1)`` (equals Recall@1)
``recall_at_k``     ``1`` if some ``rel(i)`` with ``i <= K``: the hit rate that metric-learning
                    papers call Recall@K (CUB-200, SOP), *not* the IR recall of
                    :mod:`tripletkit.evaluation.text`
``r_precision``     ``(1/R) Σ_{i<=R} rel(i)``
``map_at_r``        ``(1/R) Σ_{i<=R} rel(i) · P(i)``, ``P(i) = (1/i) Σ_{j<=i} rel(j)``
                    (Musgrave, Belongie & Lim, "A Metric Learning Reality Check", ECCV 2020)
``map``             ``(1/R) Σ_i rel(i) · P(i)`` over the whole ranking (``full_ranking=True``)
``mrr``             ``1 / (rank of the first relevant reference)`` (``full_ranking=True``)
==================  ==========================================================================

Queries without any relevant reference are left out of every average (as pytorch-metric-learning
does) and counted in ``queries_without_relevant``. Ties between equal distances rank the reference
with the lower index first (see :mod:`tripletkit.evaluation.search`). The default metrics match
pytorch-metric-learning's ``AccuracyCalculator(k="max_bin_count")`` on the same embeddings and
L2 distances: ``precision_at_1``, ``r_precision`` and ``mean_average_precision_at_r``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tripletkit.distances import Metric
from tripletkit.evaluation.search import (
    DEFAULT_TILE_BYTES,
    as_embeddings,
    iter_knn,
    iter_rankings,
)
from tripletkit.pairs import LabelGroups
from tripletkit.validation import check_choice, check_labels, check_same_dim

__all__ = [
    "DEFAULT_RECALL_KS",
    "RetrievalEvaluation",
    "evaluate_retrieval",
    "per_class_means",
    "ranked_relevance_metrics",
    "retrieval_metrics",
]

#: The Recall@K cut-offs reported when none are given (those of the CUB-200 / Cars-196 papers).
DEFAULT_RECALL_KS: tuple[int, ...] = (1, 2, 4, 8)

AVERAGES = ("query", "class")


@dataclass(frozen=True)
class RetrievalEvaluation:
    """Everything a retrieval evaluation measured.

    Attributes:
        metrics: flat ``{name: value}``: ``precision_at_1``, ``r_precision``, ``map_at_r``,
            ``recall_at_<K>`` for each K, with ``full_ranking`` also ``map`` and ``mrr``; and the
            counts ``num_queries``, ``queries_without_relevant``.
        per_query: ``{metric: (N,) float64 array}`` with NaN for queries left out.
        per_class: ``{metric: {label: mean over that label's evaluated queries}}``.
        recall_ks: the K of ``recall_at_<K>``.
        average: ``"query"`` (mean over queries) or ``"class"`` (mean of the per-class means).
    """

    metrics: dict[str, float]
    per_query: dict[str, np.ndarray] = field(repr=False)
    per_class: dict[str, dict[int, float]] = field(repr=False)
    recall_ks: tuple[int, ...] = DEFAULT_RECALL_KS
    average: str = "query"


def _check_recall_ks(k: int | Iterable[int] | None) -> tuple[int, ...]:
    if k is None:
        return DEFAULT_RECALL_KS
    values = [k] if isinstance(k, (int, np.integer)) else list(k)
    if not values or any(
        not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1 for v in values
    ):
        raise ValueError(f"k must be an integer >= 1 or a list of them (Recall@K); got {k!r}")
    return tuple(sorted({int(v) for v in values}))


def ranked_relevance_metrics(
    relevant: np.ndarray,
    num_relevant: np.ndarray,
    recall_ks: Iterable[int] = DEFAULT_RECALL_KS,
    *,
    whole_ranking: bool = False,
) -> dict[str, np.ndarray]:
    """Per-query metrics from the relevance of each query's ranked references.

    Args:
        relevant: ``(B, K)`` bool, ``relevant[q, i]``: the reference at rank ``i + 1`` of query
            ``q`` is relevant. ``K`` must be at least ``max(num_relevant)`` for ``r_precision``
            and ``map_at_r`` to be exact.
        num_relevant: ``(B,)`` int, ``R`` of each query (all ``>= 1``).
        recall_ks: cut-offs of ``recall_at_<K>`` (a K beyond the row counts the whole row).
        whole_ranking: ``relevant`` holds every reference: also compute ``map`` and ``mrr``.

    Returns:
        ``{metric: (B,) float64}`` (see the module docstring for the formulas).

    >>> rel = np.array([[False, True, True, False]])
    >>> m = ranked_relevance_metrics(rel, np.array([2]), (1, 2), whole_ranking=True)
    >>> {name: round(float(v[0]), 4) for name, v in m.items()}
    {'precision_at_1': 0.0, 'recall_at_1': 0.0, 'recall_at_2': 1.0, 'r_precision': 0.5, 'map_at_r': 0.25, 'map': 0.5833, 'mrr': 0.5}
    """
    num_relevant = np.asarray(num_relevant, dtype=np.float64)
    width = relevant.shape[1]
    rank = np.arange(1, width + 1, dtype=np.float64)
    out: dict[str, np.ndarray] = {"precision_at_1": relevant[:, 0].astype(np.float64)}
    for k in recall_ks:
        out[f"recall_at_{k}"] = relevant[:, :k].any(axis=1).astype(np.float64)
    within_r = rank[None, :] <= num_relevant[:, None]
    hits_within_r = relevant & within_r
    out["r_precision"] = hits_within_r.sum(axis=1) / num_relevant
    precision_at_rank = np.cumsum(relevant, axis=1) / rank
    out["map_at_r"] = np.where(hits_within_r, precision_at_rank, 0.0).sum(axis=1) / num_relevant
    if whole_ranking:
        out["map"] = np.where(relevant, precision_at_rank, 0.0).sum(axis=1) / num_relevant
        out["mrr"] = 1.0 / (np.argmax(relevant, axis=1) + 1.0)
    return out


def per_class_means(values: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """``{label: mean of values}`` over the non-NaN values of each label, sorted by label.

    >>> per_class_means(np.array([1.0, 0.0, np.nan, 0.5]), np.array([3, 3, 7, 7]))
    {3: 0.5, 7: 0.5}
    """
    keep = ~np.isnan(values)
    classes, inverse = np.unique(labels[keep], return_inverse=True)
    sums = np.bincount(inverse, weights=values[keep], minlength=classes.size)
    counts = np.bincount(inverse, minlength=classes.size)
    return {int(c): float(s / n) for c, s, n in zip(classes, sums, counts, strict=True)}


def evaluate_retrieval(
    embeddings: Any,
    labels: Any,
    ref_embeddings: Any = None,
    ref_labels: Any = None,
    *,
    k: int | Iterable[int] | None = None,
    distance: Metric | str = "cosine",
    full_ranking: bool = False,
    average: str = "query",
    tile_bytes: int = DEFAULT_TILE_BYTES,
) -> RetrievalEvaluation:
    """Retrieval metrics of labelled queries against labelled references, in bounded memory.

    Args:
        embeddings: ``(N, D)`` float query embeddings (tensor or numpy array).
        labels: ``(N,)`` int query labels.
        ref_embeddings: ``(M, D)`` float reference embeddings; ``None`` searches every query
            against the other queries (the query itself is never a result).
        ref_labels: ``(M,)`` int reference labels (required with ``ref_embeddings``).
        k: Recall@K cut-off(s); ``None`` means :data:`DEFAULT_RECALL_KS`.
        distance: one of ``tripletkit.distances.METRICS``; ``"cosine"`` suits L2-normalised
            embeddings.
        full_ranking: also compute ``map`` and ``mrr`` over the whole ranking, which sorts all
            ``M`` references per query (``O(N M log M)``); otherwise only the
            ``max(R, K)`` nearest are searched.
        average: ``"query"``: means over queries; ``"class"``: mean of the per-class means.
        tile_bytes: memory for one tile of the search.

    Returns:
        A :class:`RetrievalEvaluation`.

    >>> x = torch.tensor([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.2]])
    >>> result = evaluate_retrieval(x, [0, 0, 1, 1], k=1)
    >>> result.metrics["precision_at_1"], result.metrics["map_at_r"]
    (1.0, 1.0)
    """
    check_choice(average, AVERAGES, "average")
    recall_ks = _check_recall_ks(k)
    queries = as_embeddings(embeddings, "embeddings")
    query_labels = check_labels(labels, queries.shape[0], torch.device("cpu"), "labels")
    same = ref_embeddings is None
    if same:
        if ref_labels is not None:
            raise ValueError("ref_labels was given without ref_embeddings; pass both or neither")
        references, reference_labels = queries, query_labels
        self_index: torch.Tensor | None = torch.arange(queries.shape[0])
    else:
        if ref_labels is None:
            raise ValueError("ref_embeddings was given without ref_labels; pass both")
        references = as_embeddings(ref_embeddings, "ref_embeddings")
        check_same_dim(queries, references, "embeddings", "ref_embeddings")
        reference_labels = check_labels(
            ref_labels, references.shape[0], torch.device("cpu"), "ref_labels"
        )
        self_index = None
    num_relevant = LabelGroups(reference_labels).positive_counts(query_labels, self_index).numpy()
    evaluated = num_relevant > 0
    if not bool(evaluated.any()):
        raise ValueError(
            "no query has a relevant reference (a reference with its label"
            + (", other than itself" if same else "")
            + "); retrieval metrics are undefined"
        )
    query_labels_np = query_labels.numpy()
    reference_labels_np = reference_labels.numpy()
    num_queries = queries.shape[0]
    names = ["precision_at_1", *(f"recall_at_{k}" for k in recall_ks), "r_precision", "map_at_r"]
    if full_ranking:
        names += ["map", "mrr"]
    per_query = {name: np.full(num_queries, np.nan) for name in names}

    def record(start: int, stop: int, ranked: np.ndarray, whole: bool) -> None:
        rows = np.flatnonzero(evaluated[start:stop])
        if rows.size == 0:
            return
        relevant = reference_labels_np[ranked[rows]] == query_labels_np[start + rows, None]
        values = ranked_relevance_metrics(
            relevant, num_relevant[start + rows], recall_ks, whole_ranking=whole
        )
        for name, value in values.items():
            per_query[name][start + rows] = value

    if full_ranking:
        for start, stop, order in iter_rankings(
            queries, None if same else references, distance=distance, tile_bytes=tile_bytes
        ):
            record(start, stop, order, True)
    else:
        available = references.shape[0] - int(same)
        depth = min(available, max(int(num_relevant.max()), max(recall_ks)))
        for start, stop, _, indices in iter_knn(
            queries,
            None if same else references,
            depth,
            distance=distance,
            tile_bytes=tile_bytes,
        ):
            record(start, stop, indices, False)

    per_class = {
        name: per_class_means(values, query_labels_np) for name, values in per_query.items()
    }
    metrics: dict[str, float] = {}
    for name in names:
        if average == "query":
            metrics[name] = float(np.nanmean(per_query[name]))
        else:
            metrics[name] = float(np.mean(list(per_class[name].values())))
    metrics["num_queries"] = float(num_queries)
    metrics["queries_without_relevant"] = float(num_queries - int(evaluated.sum()))
    return RetrievalEvaluation(metrics, per_query, per_class, recall_ks, average)


def retrieval_metrics(
    embeddings: Any,
    labels: Any,
    ref_embeddings: Any = None,
    ref_labels: Any = None,
    k: int | Iterable[int] | None = None,
    *,
    distance: Metric | str = "cosine",
    full_ranking: bool = False,
    average: str = "query",
    tile_bytes: int = DEFAULT_TILE_BYTES,
) -> dict[str, Any]:
    """Retrieval metrics as a dict: the entry point (see :func:`evaluate_retrieval` for arguments).

    Returns:
        ``{"precision_at_1", "r_precision", "map_at_r": float, "recall_at_k": {K: float}}``, with
        ``full_ranking`` also ``"map"`` and ``"mrr"``, and the counts ``"num_queries"`` and
        ``"queries_without_relevant"`` (queries left out of the averages: no relevant reference).

    >>> x = torch.tensor([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.2]])
    >>> retrieval_metrics(x, [0, 0, 1, 1], k=[1, 2])["recall_at_k"]
    {1: 1.0, 2: 1.0}
    """
    result = evaluate_retrieval(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        k=k,
        distance=distance,
        full_ranking=full_ranking,
        average=average,
        tile_bytes=tile_bytes,
    )
    flat = dict(result.metrics)
    out: dict[str, Any] = {
        name: flat.pop(name) for name in ("precision_at_1", "r_precision", "map_at_r")
    }
    out["recall_at_k"] = {k: flat.pop(f"recall_at_{k}") for k in result.recall_ks}
    out.update(flat)
    return out
