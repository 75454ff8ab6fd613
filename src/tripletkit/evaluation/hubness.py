"""Hubness reduction: a per-reference offset that stops a few references from being everyone's
nearest neighbour.

In high-dimensional embedding spaces some references are *hubs*: close to a large share of all
queries, they fill the top of many rankings they do not belong in (Radovanović et al., JMLR 2010).
Cross-domain similarity local scaling (CSLS; Conneau et al., "Word translation without parallel
data", ICLR 2018) corrects for it by measuring how crowded each reference's neighbourhood is among
a *query bank*, a sample of queries like the ones that will be asked (e.g. the training queries,
as querybank normalisation does; Bogolin et al., CVPR 2022), and pushing crowded references back.

With ``d`` a distance of ``tripletkit.distances`` and ``N_k(c)`` the ``k`` bank queries nearest to
reference ``c``, the corrected distance is::

    d'(q, c) = d(q, c) + offset(c),   offset(c) = -1/2 · mean_{b ∈ N_k(c)} d(b, c)

For the cosine distance ``1 - cos`` this ranks exactly as CSLS's ``2 cos(q, c) - r(c)`` with
``r(c)`` the mean cosine similarity of ``c`` to its ``k`` nearest bank queries (the query-side term
of CSLS is the same for every reference of one query, so it never changes a ranking). A hub, close
to many bank queries, has a small mean distance and so the least negative offset: it moves back
relative to references that sit alone.

How much hubness there is to correct: :func:`k_occurrence_skewness`, the skewness of how often each
reference appears among the queries' ``k`` nearest (Radovanović et al.): near 0 when references
are found about equally often, large and positive when a few hubs are found by many queries.

The offsets are computed once per reference set (one exact k-NN search of the references against
the bank, :func:`tripletkit.evaluation.search.knn`) and added wherever references are ranked:
``knn`` / ``iter_knn`` (``reference_offsets``), ``rank_of_correct`` (``corpus_offsets``) and
``evaluate_text_retrieval`` (``document_offsets``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tripletkit.distances import METRICS, Metric
from tripletkit.evaluation.search import DEFAULT_TILE_BYTES, as_embeddings, knn
from tripletkit.validation import check_choice, check_same_dim

__all__ = ["hubness_offsets", "k_occurrence_skewness"]


def _checked_inputs(
    references: Any, others: Any, others_name: str, k: Any, distance: str
) -> tuple[torch.Tensor, torch.Tensor]:
    check_choice(distance, METRICS, "distance")
    references = as_embeddings(references, "references")
    others = as_embeddings(others, others_name)
    check_same_dim(references, others, "references", others_name)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    return references, others


def hubness_offsets(
    references: Any,
    query_bank: Any,
    k: int = 10,
    *,
    distance: Metric | str = "cosine",
    tile_bytes: int = DEFAULT_TILE_BYTES,
) -> torch.Tensor:
    """CSLS offsets of each reference: ``-1/2 ·`` its mean distance to its ``k`` nearest bank
    queries (see the module docstring). Add them to the distances of any query to the references.

    Args:
        references: ``(C, D)`` float, the embeddings to be ranked (a corpus, a gallery).
        query_bank: ``(B, D)`` float, queries like the ones to be asked (e.g. training queries);
            never the evaluation queries themselves.
        k: bank queries per reference, ``1 <= k <= B``; CSLS uses 10.
        distance: one of ``tripletkit.distances.METRICS``, the one the ranking uses.
        tile_bytes: memory for one tile of the search.

    Returns:
        ``(C,)`` offsets in the dtype of the search's distances (float32, or float64 for float64
        embeddings); all ``<= 0`` for the non-negative distances.

    >>> import torch
    >>> bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> corpus = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> # [1, 0] has bank queries at 0 and 0.141 (mean 0.071); [0, 1] at 0 and 1.273 (mean 0.636)
    >>> [round(v, 4) for v in hubness_offsets(corpus, bank, k=2, distance="euclidean").tolist()]
    [-0.0354, -0.3182]
    """
    references, query_bank = _checked_inputs(references, query_bank, "query_bank", k, distance)
    if k > query_bank.shape[0]:
        raise ValueError(
            f"k={k} but the query bank holds {query_bank.shape[0]} queries; pass k <= "
            f"{query_bank.shape[0]} or a larger bank"
        )
    nearest = knn(references, query_bank, int(k), distance=distance, tile_bytes=tile_bytes)
    return -0.5 * nearest.distances.mean(dim=1)


def k_occurrence_skewness(
    references: Any,
    queries: Any,
    k: int = 10,
    *,
    distance: Metric | str = "cosine",
    tile_bytes: int = DEFAULT_TILE_BYTES,
) -> float:
    """Skewness of the k-occurrence ``N_k(c)``: how many of ``queries`` have reference ``c`` among
    their ``k`` nearest. ``E[(N_k - μ)^3] / σ^3`` over the references (population moments); 0 when
    every reference is found equally often (then there is no spread: 0 is returned).

    Args:
        references: ``(C, D)`` float; queries: ``(Q, D)`` float (e.g. a query bank).
        k: neighbours per query, ``1 <= k <= C``.
        distance: one of ``tripletkit.distances.METRICS``.
        tile_bytes: memory for one tile of the search.

    >>> import torch
    >>> references = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    >>> queries = torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.9, 0.0], [0.1, 1.0]])
    >>> round(k_occurrence_skewness(references, queries, k=1), 4)  # N_1 = [3, 1, 0, 0]
    0.8165
    """
    references, queries = _checked_inputs(references, queries, "queries", k, distance)
    nearest = knn(queries, references, int(k), distance=distance, tile_bytes=tile_bytes)
    counts = np.bincount(nearest.indices.numpy().ravel(), minlength=references.shape[0])
    deviations = counts.astype(np.float64) - counts.mean()
    spread = float(np.sqrt(np.mean(deviations**2)))
    if spread == 0.0:
        return 0.0
    return float(np.mean(deviations**3) / spread**3)
