"""Person re-identification metrics: CMC, mAP and mINP with the Market-1501 gallery rule.

Each query (an identity seen by one camera) ranks the whole gallery. Following the Market-1501
protocol (Zheng et al., ICCV 2015), gallery items of the query's identity *taken by the query's
camera* are ignored: they are removed from the ranking, neither right nor wrong. Items whose
identity is in ``ignore_ids`` (Market-1501's "junk" images have identity -1) are removed too. The
remaining items of the query's identity are its *matches*. Queries without any match are left out
(and counted in ``queries_without_match``).

With the ranks counted over the remaining gallery (1-based), for a query with ``G`` matches:

* CMC rank-r: 1 if the first match is at rank ``<= r``; the curve is its mean over queries;
* AP: ``(1/G) Σ_matches (matches up to it) / (its rank)``; mAP is the mean over queries;
* INP (Ye et al., "Deep Learning for Person Re-identification: A Survey", TPAMI 2021):
  ``G / (rank of the last match)``; mINP is the mean over queries.

Ties between equal distances rank the gallery item with the lower index first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tripletkit.distances import Metric
from tripletkit.evaluation.search import DEFAULT_TILE_BYTES, as_embeddings, iter_rankings
from tripletkit.validation import check_labels, check_same_dim

__all__ = ["DEFAULT_CMC_RANKS", "ReidEvaluation", "evaluate_reid", "reid_ranking_metrics"]

#: The CMC ranks reported when none are given.
DEFAULT_CMC_RANKS: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class ReidEvaluation:
    """Everything a re-identification evaluation measured.

    Attributes:
        metrics: flat ``{name: value}``: ``cmc_rank_<r>`` for each rank, ``map``, ``minp``,
            ``num_queries``, ``queries_without_match``.
        cmc: ``(max_rank,)`` the CMC curve, ``cmc[r - 1]`` = rank-r accuracy.
        per_query: ``{"ap", "inp", "first_match_rank": (Q,) float64}``, NaN for queries left out.
    """

    metrics: dict[str, float]
    cmc: np.ndarray = field(repr=False)
    per_query: dict[str, np.ndarray] = field(repr=False)


def reid_ranking_metrics(good: np.ndarray, junk: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query AP, INP and first-match rank from flags along each query's ranked gallery.

    Args:
        good: ``(B, M)`` bool: the item at each ranked position is a match.
        junk: ``(B, M)`` bool: the item is ignored (removed from the ranking).

    Returns:
        ``{"ap", "inp", "first_match_rank": (B,) float64}`` (rows without a match give NaN).

    >>> good = np.array([[False, True, False, True]])
    >>> junk = np.array([[True, False, False, False]])
    >>> {k: v.tolist() for k, v in reid_ranking_metrics(good, junk).items()}
    {'ap': [0.8333333333333333], 'inp': [0.6666666666666666], 'first_match_rank': [1.0]}
    """
    good = good & ~junk
    rank = np.cumsum(~junk, axis=1, dtype=np.float64)
    matches_so_far = np.cumsum(good, axis=1, dtype=np.float64)
    num_good = matches_so_far[:, -1] if good.shape[1] else np.zeros(good.shape[0])
    has_match = num_good > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(good, matches_so_far / rank, 0.0).sum(axis=1) / num_good
        first = np.argmax(good, axis=1)
        last = good.shape[1] - 1 - np.argmax(good[:, ::-1], axis=1)
        rows = np.arange(good.shape[0])
        first_rank = rank[rows, first]
        inp = num_good / rank[rows, last]
    nan = np.full(good.shape[0], np.nan)
    return {
        "ap": np.where(has_match, ap, nan),
        "inp": np.where(has_match, inp, nan),
        "first_match_rank": np.where(has_match, first_rank, nan),
    }


def evaluate_reid(
    query_embeddings: Any,
    query_ids: Any,
    query_cameras: Any,
    gallery_embeddings: Any,
    gallery_ids: Any,
    gallery_cameras: Any,
    *,
    distance: Metric | str = "cosine",
    ranks: Iterable[int] = DEFAULT_CMC_RANKS,
    max_rank: int = 50,
    ignore_ids: Iterable[int] = (),
    tile_bytes: int = DEFAULT_TILE_BYTES,
) -> ReidEvaluation:
    """CMC rank-r, mAP and mINP of a query/gallery split (the Market-1501 protocol).

    Args:
        query_embeddings: ``(Q, D)`` float; query_ids, query_cameras: ``(Q,)`` int.
        gallery_embeddings: ``(G, D)`` float; gallery_ids, gallery_cameras: ``(G,)`` int.
        distance: one of ``tripletkit.distances.METRICS``.
        ranks: the CMC ranks of ``cmc_rank_<r>``.
        max_rank: length of the returned CMC curve.
        ignore_ids: gallery identities removed from every ranking (Market-1501: ``(-1,)``).
        tile_bytes: memory for one block of full rankings.

    Returns:
        A :class:`ReidEvaluation`.

    >>> q = torch.tensor([[1.0, 0.0]]); g = torch.tensor([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0]])
    >>> r = evaluate_reid(q, [7], [0], g, [7, 7, 3], [0, 1, 1])
    >>> r.metrics["cmc_rank_1"], r.metrics["map"]
    (1.0, 1.0)
    """
    cpu = torch.device("cpu")
    queries = as_embeddings(query_embeddings, "query_embeddings")
    gallery = as_embeddings(gallery_embeddings, "gallery_embeddings")
    check_same_dim(queries, gallery, "query_embeddings", "gallery_embeddings")
    q_ids = check_labels(query_ids, queries.shape[0], cpu, "query_ids").numpy()
    q_cams = check_labels(query_cameras, queries.shape[0], cpu, "query_cameras").numpy()
    g_ids = check_labels(gallery_ids, gallery.shape[0], cpu, "gallery_ids").numpy()
    g_cams = check_labels(gallery_cameras, gallery.shape[0], cpu, "gallery_cameras").numpy()
    rank_list = sorted({int(r) for r in ranks})
    if not rank_list or rank_list[0] < 1 or int(max_rank) < 1:
        raise ValueError(f"ranks and max_rank must be integers >= 1; got {ranks!r}, {max_rank!r}")
    ignored_gallery = np.isin(g_ids, np.asarray(list(ignore_ids), dtype=np.int64))
    per_query = {
        name: np.full(queries.shape[0], np.nan) for name in ("ap", "inp", "first_match_rank")
    }
    for start, stop, order in iter_rankings(
        queries, gallery, distance=distance, tile_bytes=tile_bytes
    ):
        ranked_ids = g_ids[order]
        same_id = ranked_ids == q_ids[start:stop, None]
        junk = (same_id & (g_cams[order] == q_cams[start:stop, None])) | ignored_gallery[order]
        values = reid_ranking_metrics(same_id, junk)
        for name, value in values.items():
            per_query[name][start:stop] = value
    evaluated = ~np.isnan(per_query["ap"])
    if not evaluated.any():
        raise ValueError(
            "no query has a match in the gallery (its identity seen by another camera); "
            "re-identification metrics are undefined"
        )
    first_rank = per_query["first_match_rank"][evaluated]
    curve_length = max(int(max_rank), rank_list[-1])
    cmc = (first_rank[:, None] <= np.arange(1, curve_length + 1)[None, :]).mean(axis=0)
    metrics = {f"cmc_rank_{r}": float(cmc[r - 1]) for r in rank_list}
    metrics["map"] = float(per_query["ap"][evaluated].mean())
    metrics["minp"] = float(per_query["inp"][evaluated].mean())
    metrics["num_queries"] = float(queries.shape[0])
    metrics["queries_without_match"] = float((~evaluated).sum())
    return ReidEvaluation(metrics, cmc[: int(max_rank)], per_query)
