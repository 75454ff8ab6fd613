"""Clustering quality of embeddings: NMI and AMI of k-means clusters against the class labels.

The embeddings are clustered by k-means (k-means++ seeding, Lloyd iterations, squared euclidean
distances from :mod:`tripletkit.distances`, assigned in chunks so memory stays ``O(N + K D)``) into
as many clusters as there are classes, then compared with the labels:

* NMI = ``I(Y; C) / ((H(Y) + H(C)) / 2)`` (the arithmetic normalisation, scikit-learn's default);
* AMI = ``(I - E[I]) / ((H(Y) + H(C)) / 2 - E[I])``, ``E[I]`` the mutual information expected
  between random clusterings with the same cluster sizes (Vinh, Epps & Bailey, JMLR 2010).

Both are 1 for identical partitions (up to renaming); by convention two single-cluster partitions
score 1. Logarithms are natural; the ratios do not depend on the base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tripletkit.distances import pairwise_distances_unchecked
from tripletkit.evaluation.search import DEFAULT_TILE_BYTES, as_embeddings
from tripletkit.validation import check_labels

__all__ = [
    "KMeansResult",
    "adjusted_mutual_information",
    "evaluate_clustering",
    "kmeans",
    "normalized_mutual_information",
]


@dataclass(frozen=True)
class KMeansResult:
    """A k-means clustering.

    Attributes:
        assignments: ``(N,)`` int64 cluster of each item.
        centroids: ``(K, D)`` float cluster centres.
        inertia: sum of squared euclidean distances of the items to their centres.
        iterations: Lloyd iterations run.
    """

    assignments: torch.Tensor
    centroids: torch.Tensor
    inertia: float
    iterations: int


def _chunk_rows(columns: int, tile_bytes: int) -> int:
    return max(1, tile_bytes // (8 * max(columns, 1)))


def _nearest_centroid(
    x: torch.Tensor, centroids: torch.Tensor, tile_bytes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = _chunk_rows(centroids.shape[0], tile_bytes)
    assignments = torch.empty(x.shape[0], dtype=torch.int64)
    squared = torch.empty(x.shape[0], dtype=x.dtype)
    for start in range(0, x.shape[0], rows):
        block = pairwise_distances_unchecked(
            x[start : start + rows], centroids, "squared_euclidean"
        )
        squared[start : start + rows], assignments[start : start + rows] = block.min(dim=1)
    return assignments, squared


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Arthur & Vassilvitskii's seeding: each new centre drawn with probability ∝ D(x)²."""
    n = x.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=generator))]
    closest = pairwise_distances_unchecked(x, x[chosen[0] : chosen[0] + 1], "squared_euclidean")[
        :, 0
    ].double()
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0:
            # Fewer distinct points than clusters: take any point not chosen yet.
            remaining = torch.ones(n, dtype=torch.bool)
            remaining[chosen] = False
            pick = int(torch.nonzero(remaining)[0])
        else:
            pick = int(torch.multinomial(closest / total, 1, generator=generator))
        chosen.append(pick)
        new = pairwise_distances_unchecked(x, x[pick : pick + 1], "squared_euclidean")[:, 0]
        closest = torch.minimum(closest, new.double())
    return x[chosen].clone()


def kmeans(
    embeddings: Any,
    num_clusters: int,
    *,
    max_iterations: int = 50,
    seed: int = 0,
    tile_bytes: int = DEFAULT_TILE_BYTES,
) -> KMeansResult:
    """Lloyd's k-means with k-means++ seeding, deterministic for a given ``seed``.

    Stops when no assignment changes or after ``max_iterations``. A cluster that empties is
    re-seeded with the item farthest from its centre. Runs on the CPU.

    Args:
        embeddings: ``(N, D)`` float embeddings.
        num_clusters: ``K``, between 1 and ``N``.
        max_iterations: most Lloyd iterations.
        seed: seed of the k-means++ draws.
        tile_bytes: memory for one chunk of item-to-centre distances.

    >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
    >>> kmeans(x, 2).assignments.tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    True
    """
    x = as_embeddings(embeddings, "embeddings")
    n = x.shape[0]
    if not isinstance(num_clusters, (int, np.integer)) or not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be an integer in [1, {n}]; got {num_clusters!r}")
    # On the CPU: the seeded draws use a CPU generator (and stay reproducible across devices).
    x = x.cpu()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        centroids = _kmeans_plus_plus(x, int(num_clusters), generator)
        assignments, squared = _nearest_centroid(x, centroids, tile_bytes)
        iterations = 0
        while iterations < max_iterations:
            iterations += 1
            sums = torch.zeros_like(centroids).index_add_(0, assignments, x)
            counts = torch.bincount(assignments, minlength=centroids.shape[0])
            for empty in torch.nonzero(counts == 0).flatten().tolist():
                farthest = int(torch.argmax(squared))
                sums[empty], counts[empty] = x[farthest], 1
                squared[farthest] = 0
            centroids = sums / counts.unsqueeze(1).to(x.dtype)
            new_assignments, squared = _nearest_centroid(x, centroids, tile_bytes)
            changed = bool((new_assignments != assignments).any())
            assignments = new_assignments
            if not changed:
                break
    return KMeansResult(assignments, centroids, float(squared.double().sum()), iterations)


def _contingency(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    _, label_index = np.unique(labels, return_inverse=True)
    _, cluster_index = np.unique(clusters, return_inverse=True)
    table = np.zeros((label_index.max() + 1, cluster_index.max() + 1), dtype=np.int64)
    np.add.at(table, (label_index, cluster_index), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _mutual_information(table: np.ndarray) -> float:
    n = table.sum()
    rows, cols = np.nonzero(table)
    nij = table[rows, cols].astype(np.float64)
    a = table.sum(axis=1)[rows].astype(np.float64)
    b = table.sum(axis=0)[cols].astype(np.float64)
    return float(max((nij / n * np.log(n * nij / (a * b))).sum(), 0.0))


def _expected_mutual_information(table: np.ndarray, max_terms: int = 4_000_000) -> float:
    """E[I] under the hypergeometric model of random clusterings with these marginals."""
    n = int(table.sum())
    a = table.sum(axis=1).astype(np.int64)
    b = table.sum(axis=0).astype(np.int64)
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    ai = np.repeat(a, b.size)
    bj = np.tile(b, a.size)
    low = np.maximum(1, ai + bj - n)
    high = np.minimum(ai, bj)
    count = np.maximum(high - low + 1, 0)
    total = 0.0
    start = 0
    cumulative = np.cumsum(count)
    while start < ai.size:
        # Pairs [start, stop) whose terms fit in one chunk (at least one pair).
        limit = (cumulative[start - 1] if start else 0) + max_terms
        stop = max(start + 1, int(np.searchsorted(cumulative, limit, side="right")))
        pair = np.repeat(np.arange(start, stop), count[start:stop])
        offsets = np.arange(pair.size) - np.repeat(
            np.cumsum(count[start:stop]) - count[start:stop], count[start:stop]
        )
        nij = low[pair] + offsets
        x, y = ai[pair], bj[pair]
        log_probability = (
            log_factorial[x]
            + log_factorial[y]
            + log_factorial[n - x]
            + log_factorial[n - y]
            - log_factorial[n]
            - log_factorial[nij]
            - log_factorial[x - nij]
            - log_factorial[y - nij]
            - log_factorial[n - x - y + nij]
        )
        mi_term = nij / n * (np.log(n) + np.log(nij) - np.log(x) - np.log(y))
        total += float((mi_term * np.exp(log_probability)).sum())
        start = stop
    return total


def _check_partition(labels: Any, clusters: Any) -> tuple[np.ndarray, np.ndarray]:
    cpu = torch.device("cpu")
    label_array = check_labels(labels, len(labels), cpu, "labels").numpy()
    cluster_array = check_labels(clusters, label_array.size, cpu, "clusters").numpy()
    if label_array.size == 0:
        raise ValueError("labels is empty; clustering scores need at least one item")
    return label_array, cluster_array


def normalized_mutual_information(labels: Any, clusters: Any) -> float:
    """NMI with the arithmetic normalisation (scikit-learn's ``normalized_mutual_info_score``).

    >>> normalized_mutual_information([0, 0, 1, 1], [5, 5, 3, 3])
    1.0
    """
    label_array, cluster_array = _check_partition(labels, clusters)
    table = _contingency(label_array, cluster_array)
    if table.shape[0] == table.shape[1] == 1:
        return 1.0
    mi = _mutual_information(table)
    if mi == 0.0:
        return 0.0
    normaliser = (_entropy(table.sum(axis=1)) + _entropy(table.sum(axis=0))) / 2.0
    return float(mi / normaliser)


def adjusted_mutual_information(labels: Any, clusters: Any) -> float:
    """AMI with the arithmetic normalisation (scikit-learn's ``adjusted_mutual_info_score``).

    >>> adjusted_mutual_information([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    >>> adjusted_mutual_information([2, 1], [1, 0])  # the same partition, MI = its expectation
    1.0
    """
    label_array, cluster_array = _check_partition(labels, clusters)
    table = _contingency(label_array, cluster_array)
    if table.shape[0] == table.shape[1] == 1:
        return 1.0
    mi = _mutual_information(table)
    expected = _expected_mutual_information(table)
    normaliser = (_entropy(table.sum(axis=1)) + _entropy(table.sum(axis=0))) / 2.0
    # Both differences can be 0 (e.g. two items, each in its own class and cluster: the same
    # partition, whose MI equals its expectation). Keeping each at least eps away from 0, with its
    # sign, makes that limit 1.0 (a perfect match) and never divides 0 by 0; the convention of
    # scikit-learn >= 1.9.
    eps = np.finfo(np.float64).eps
    denominator = normaliser - expected
    denominator = min(denominator, -eps) if denominator < 0 else max(denominator, eps)
    numerator = mi - expected
    numerator = min(numerator, -eps) if numerator < 0 else max(numerator, eps)
    return float(numerator / denominator)


def evaluate_clustering(
    embeddings: Any,
    labels: Any,
    *,
    num_clusters: int | None = None,
    seed: int = 0,
    max_iterations: int = 50,
    tile_bytes: int = DEFAULT_TILE_BYTES,
) -> dict[str, float]:
    """NMI and AMI of the k-means clusters of ``embeddings`` against ``labels``.

    Args:
        embeddings: ``(N, D)`` float (L2-normalise them first to cluster by cosine).
        labels: ``(N,)`` int class labels.
        num_clusters: ``K`` (default: the number of distinct labels).
        seed, max_iterations, tile_bytes: see :func:`kmeans`.

    Returns:
        ``{"nmi", "ami", "num_clusters", "kmeans_inertia"}``.

    >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
    >>> evaluate_clustering(x, [0, 0, 1, 1])["nmi"]
    1.0
    """
    x = as_embeddings(embeddings, "embeddings")
    label_array = check_labels(labels, x.shape[0], torch.device("cpu"), "labels").numpy()
    k = int(np.unique(label_array).size) if num_clusters is None else num_clusters
    result = kmeans(x, k, max_iterations=max_iterations, seed=seed, tile_bytes=tile_bytes)
    clusters = result.assignments.numpy()
    return {
        "nmi": normalized_mutual_information(label_array, clusters),
        "ami": adjusted_mutual_information(label_array, clusters),
        "num_clusters": float(k),
        "kmeans_inertia": result.inertia,
    }
