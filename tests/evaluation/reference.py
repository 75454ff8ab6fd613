"""Brute-force references for the evaluation metrics: dense float64 distances, Python loops.

Written from the definitions, independently of the chunked, vectorised code under test: the
ranking is Python's ``sorted`` with the key ``(distance, index)``, every metric a loop over ranks.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from tripletkit.distances import pairwise_distances


def dense_distances(queries, references, metric: str) -> np.ndarray:
    q = torch.as_tensor(np.asarray(queries), dtype=torch.float64)
    r = torch.as_tensor(np.asarray(references), dtype=torch.float64)
    return pairwise_distances(q, r, metric).numpy()


def blended_distances(queries, references, parts, owners, metric, weight, offsets=None):
    """Dense float64 brute force: every reference's own distance, lowered by its nearest part."""
    own = dense_distances(queries, references, metric)
    part = dense_distances(queries, parts, metric) if len(owners) else None
    blended = own.copy()
    for row in range(own.shape[1]):
        mine = [i for i, owner in enumerate(owners) if owner == row]
        if mine:
            nearest = part[:, mine].min(axis=1)
            blended[:, row] = own[:, row] - weight * np.maximum(own[:, row] - nearest, 0)
    if offsets is not None:
        blended += np.asarray(offsets, dtype=np.float64)
    return blended


def ranking(distances: np.ndarray, exclude_self: bool = False) -> list[list[int]]:
    """Each row's reference indices by (distance, index); a query's own index removed."""
    out = []
    for i, row in enumerate(distances):
        order = sorted(range(row.size), key=lambda j: (row[j], j))
        if exclude_self:
            order = [j for j in order if j != i]
        out.append(order)
    return out


def retrieval(
    query_labels, ref_labels, ranked: list[list[int]], ks=(1, 2, 4, 8), exclude_self=False
) -> dict[str, list[float | None]]:
    """Per-query metrics (None for queries without a relevant reference)."""
    names = ["precision_at_1", *(f"recall_at_{k}" for k in ks), "r_precision", "map_at_r"]
    names += ["map", "mrr"]
    out: dict[str, list[float | None]] = {name: [] for name in names}
    for q, order in enumerate(ranked):
        rel = [int(ref_labels[j] == query_labels[q]) for j in order]
        r = sum(int(ref_labels[j] == query_labels[q]) for j in range(len(ref_labels)))
        if exclude_self:
            r -= 1
        if r == 0:
            for name in names:
                out[name].append(None)
            continue
        out["precision_at_1"].append(float(rel[0]))
        for k in ks:
            out[f"recall_at_{k}"].append(float(any(rel[:k])))
        out["r_precision"].append(sum(rel[:r]) / r)
        hits, ap_r, ap = 0, 0.0, 0.0
        for i, is_rel in enumerate(rel, start=1):
            if is_rel:
                hits += 1
                ap += hits / i
                if i <= r:
                    ap_r += hits / i
        out["map_at_r"].append(ap_r / r)
        out["map"].append(ap / r)
        out["mrr"].append(1.0 / (rel.index(1) + 1))
    return out


def mean_defined(values) -> float:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined)


def roc_points(scores, same) -> tuple[list[float], list[float], list[float]]:
    """(far, tar, thresholds) with one point per distinct score, accept = score >= t."""
    p = sum(1 for s in same if s)
    n = len(same) - p
    thresholds = [math.inf, *sorted(set(scores), reverse=True)]
    far, tar = [], []
    for t in thresholds:
        tar.append(sum(1 for s, y in zip(scores, same, strict=True) if y and s >= t) / p)
        far.append(sum(1 for s, y in zip(scores, same, strict=True) if not y and s >= t) / n)
    return far, tar, thresholds


def eer(scores, same) -> float:
    far, tar, _ = roc_points(scores, same)
    frr = [1 - t for t in tar]
    for i in range(len(far)):
        if frr[i] - far[i] <= 0:
            if i == 0 or frr[i] == far[i]:
                return far[i]
            g0, g1 = frr[i - 1] - far[i - 1], frr[i] - far[i]
            a = g0 / (g0 - g1)
            return far[i - 1] + a * (far[i] - far[i - 1])
    raise AssertionError("the ROC curve must end with FAR = 1, FRR = 0")


def tar_at_far(scores, same, target: float) -> tuple[float, float]:
    """(TAR, threshold) of the loosest threshold with FAR <= target."""
    far, tar, thresholds = roc_points(scores, same)
    best = max(i for i in range(len(far)) if far[i] <= target)
    return tar[best], thresholds[best]


def lfw(scores, same, fold_of) -> list[float]:
    """Per-fold accuracy with the best midpoint threshold of the other folds (ties: highest)."""
    accuracies = []
    for fold in sorted(set(fold_of)):
        train = [(s, y) for s, y, f in zip(scores, same, fold_of, strict=True) if f != fold]
        test = [(s, y) for s, y, f in zip(scores, same, fold_of, strict=True) if f == fold]
        distinct = sorted({s for s, _ in train}, reverse=True)
        cuts = [math.inf]
        cuts += [(a + b) / 2 for a, b in itertools.pairwise(distinct)]
        cuts += [-math.inf]
        best_cut, best_correct = None, -1
        for cut in cuts:
            correct = sum(1 for s, y in train if (s >= cut) == y)
            if correct > best_correct:
                best_cut, best_correct = cut, correct
        accuracies.append(sum(1 for s, y in test if (s >= best_cut) == y) / len(test))
    return accuracies


def reid(distances, q_ids, q_cams, g_ids, g_cams, ignore_ids=()) -> list[dict | None]:
    """Per query: first-match rank, AP and INP over the gallery without junk items."""
    out = []
    for q, row in enumerate(distances):
        order = sorted(range(row.size), key=lambda j: (row[j], j))
        kept = [
            j
            for j in order
            if not (g_ids[j] == q_ids[q] and g_cams[j] == q_cams[q]) and g_ids[j] not in ignore_ids
        ]
        good = [g_ids[j] == q_ids[q] for j in kept]
        if not any(good):
            out.append(None)
            continue
        ranks = [i for i, g in enumerate(good, start=1) if g]
        ap = sum((n + 1) / r for n, r in enumerate(ranks)) / len(ranks)
        out.append({"first": ranks[0], "ap": ap, "inp": len(ranks) / ranks[-1]})
    return out


def text(rankings: dict, qrels: dict, ks) -> dict[str, dict]:
    out: dict[str, dict] = {f"recall_at_{k}": {} for k in ks}
    out["mrr_at_10"], out["ndcg_at_10"] = {}, {}
    for q, judged in qrels.items():
        relevant = {d: g for d, g in judged.items() if g > 0}
        if not relevant:
            continue
        ranked = rankings[q]
        for k in ks:
            out[f"recall_at_{k}"][q] = sum(1 for d in ranked[:k] if d in relevant) / len(relevant)
        rr = 0.0
        for i, d in enumerate(ranked[:10], start=1):
            if d in relevant:
                rr = 1.0 / i
                break
        out["mrr_at_10"][q] = rr
        dcg = sum(relevant.get(d, 0) / math.log2(i + 1) for i, d in enumerate(ranked[:10], 1))
        ideal = sorted(relevant.values(), reverse=True)[:10]
        idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, 1))
        out["ndcg_at_10"][q] = dcg / idcg
    return out
