"""Brute-force float64 references of the loss family, miners and sampling weights.

Written from the papers' definitions with plain Python loops over every pair, triplet and quadruplet,
independently of tripletkit (no import from it): slow, obvious, and the standard the library is
tested against. Inputs are numpy arrays or nested lists; outputs Python floats / lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _unit(v):
    """v / max(|v|, 1e-12): the zero vector stays zero (tripletkit's documented convention)."""
    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def distance(x: np.ndarray, y: np.ndarray, metric: str) -> float:
    """d(x, y) for one pair of vectors."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if metric == "squared_euclidean":
        return float(np.sum((x - y) ** 2))
    if metric == "euclidean":
        return float(math.sqrt(np.sum((x - y) ** 2)))
    if metric == "cosine":
        return float(1.0 - np.dot(_unit(x), _unit(y)))
    if metric == "dot":
        return float(-np.dot(x, y))
    raise ValueError(metric)


def distances(x, y, metric: str) -> np.ndarray:
    """``(len(x), len(y))`` matrix of :func:`distance`."""
    return np.array([[distance(a, b, metric) for b in y] for a in x], dtype=np.float64).reshape(
        len(x), len(y)
    )


def _refs(x, labels, refs, ref_labels, self_ref):
    """Fill in the defaults: the batch is its own reference set, item i being reference i."""
    if refs is None:
        refs, ref_labels = x, labels
        if self_ref is None:
            self_ref = list(range(len(x)))
    if self_ref is None:
        self_ref = [-1] * len(x)
    return refs, list(ref_labels), list(self_ref)


def positive_pairs(labels, ref_labels, self_ref) -> list[tuple[int, int]]:
    return [
        (a, p)
        for a in range(len(labels))
        for p in range(len(ref_labels))
        if labels[a] == ref_labels[p] and self_ref[a] != p
    ]


def negative_pairs(labels, ref_labels) -> list[tuple[int, int]]:
    return [
        (a, n)
        for a in range(len(labels))
        for n in range(len(ref_labels))
        if labels[a] != ref_labels[n]
    ]


def _mean_over_positive(values: list[float]) -> float:
    active = [v for v in values if v > 0]
    return sum(active) / len(active) if active else 0.0


# ----------------------------------------------------------------------------- contrastive
def contrastive(
    x, labels, refs=None, ref_labels=None, self_ref=None, *, pos_margin, neg_margin, metric, mining
) -> float:
    refs, ref_labels, self_ref = _refs(x, labels, refs, ref_labels, self_ref)
    d = distances(x, refs, metric)
    pos = positive_pairs(labels, ref_labels, self_ref)
    neg = negative_pairs(labels, ref_labels)
    if mining == "hard":
        chosen_pos, chosen_neg = [], []
        for a in range(len(x)):
            mine = [p for (b, p) in pos if b == a]
            if mine:
                chosen_pos.append((a, max(mine, key=lambda p: d[a, p])))
            others = [n for (b, n) in neg if b == a]
            if others:
                chosen_neg.append((a, min(others, key=lambda n: d[a, n])))
        pos, neg = chosen_pos, chosen_neg
    pos_terms = [max(d[a, p] - pos_margin, 0.0) for a, p in pos]
    neg_terms = [max(neg_margin - d[a, n], 0.0) for a, n in neg]
    return _mean_over_positive(pos_terms) + _mean_over_positive(neg_terms)


# ----------------------------------------------------------------------------- quadruplet
def quadruplet(
    x, labels, refs=None, ref_labels=None, self_ref=None, *, margin, margin2, metric, mining
) -> float:
    """Chen et al. 2017 over every (a, p, n) and (a, p, l, k), l an anchor row, k a reference."""
    refs, ref_labels, self_ref = _refs(x, labels, refs, ref_labels, self_ref)
    d = distances(x, refs, metric)
    pos = positive_pairs(labels, ref_labels, self_ref)
    neg = negative_pairs(labels, ref_labels)
    if mining == "all":
        triplet_terms = [d[a, p] + margin - d[a, n] for (a, p) in pos for (b, n) in neg if b == a]
        quad_terms = [
            d[a, p] + margin2 - d[row, col]
            for (a, p) in pos
            for (row, col) in neg
            if labels[row] != labels[a] and ref_labels[col] != labels[a]
        ]
        return _mean_over_positive(triplet_terms) + _mean_over_positive(quad_terms)
    triplet_terms, quad_terms = [], []
    for a in range(len(x)):
        mine = [d[a, p] for (b, p) in pos if b == a]
        if not mine:
            continue
        hardest_pos = max(mine)
        others = [d[a, n] for (b, n) in neg if b == a]
        if others:
            triplet_terms.append(max(hardest_pos - min(others) + margin, 0.0))
        pairs = [
            d[row, col]
            for (row, col) in neg
            if labels[row] != labels[a] and ref_labels[col] != labels[a]
        ]
        if pairs:
            quad_terms.append(max(hardest_pos - min(pairs) + margin2, 0.0))
    mean = lambda v: sum(v) / len(v) if v else 0.0  # noqa: E731
    return mean(triplet_terms) + mean(quad_terms)


# ----------------------------------------------------------------------------- triplet miners
def _closest(row, candidates):
    """The candidate at the smallest distance; ties: the lowest index."""
    return min(candidates, key=lambda j: (row[j], j))


def _farthest(row, candidates):
    """The candidate at the largest distance; ties: the lowest index."""
    return max(candidates, key=lambda j: (row[j], -j))


def mined_triplets(
    x, labels, refs=None, ref_labels=None, self_ref=None, *, mining, margin, metric
) -> list[tuple[int, int, int]]:
    """The triplets each mining mode of the batch triplet loss selects (ties: lowest index)."""
    refs, ref_labels, self_ref = _refs(x, labels, refs, ref_labels, self_ref)
    d = distances(x, refs, metric)
    out = []
    for a in range(len(x)):
        pos = [p for (b, p) in positive_pairs(labels, ref_labels, self_ref) if b == a]
        neg = [n for (b, n) in negative_pairs(labels, ref_labels) if b == a]
        if not pos or not neg:
            continue
        row = d[a]
        if mining == "hard":
            out.append((a, _farthest(row, pos), _closest(row, neg)))
        elif mining == "easy-positive":
            out.append((a, _closest(row, pos), _closest(row, neg)))
        elif mining == "semihard":
            for p in pos:
                beyond = [n for n in neg if row[n] > row[p]]
                out.append((a, p, _closest(row, beyond) if beyond else _farthest(row, neg)))
        else:
            for p in pos:
                for n in neg:
                    dp, dn = d[a, p], d[a, n]
                    if mining == "all":
                        keep = dn < dp + margin
                    elif mining == "semihard-window":
                        keep = dp < dn < dp + margin
                    else:  # hard-window
                        keep = dn <= dp
                    if keep:
                        out.append((a, p, n))
    return out


# ----------------------------------------------------------------------------- proxies
def proxy_nca(x, labels, proxies, *, temperature) -> float:
    """Softmax over -d/τ with d = 2 - 2 cos, the squared euclidean distance of unit vectors."""
    total = 0.0
    for xi, yi in zip(x, labels, strict=True):
        logits = [-(2.0 - 2.0 * float(np.dot(_unit(xi), _unit(p)))) / temperature for p in proxies]
        peak = max(logits)
        log_norm = peak + math.log(sum(math.exp(z - peak) for z in logits))
        total += log_norm - logits[yi]
    return total / len(x)


def _log1p_sum_exp(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    peak = max(0.0, *values)
    return peak + math.log(math.exp(-peak) + sum(math.exp(v - peak) for v in values))


def proxy_anchor(x, labels, proxies, *, margin, alpha) -> float:
    cos = [[float(np.dot(_unit(xi), _unit(p))) for p in proxies] for xi in x]
    pos_terms, neg_terms = [], []
    for c in range(len(proxies)):
        members = [i for i in range(len(x)) if labels[i] == c]
        if members:
            pos_terms.append(_log1p_sum_exp([-alpha * (cos[i][c] - margin) for i in members]))
        others = [i for i in range(len(x)) if labels[i] != c]
        neg_terms.append(_log1p_sum_exp([alpha * (cos[i][c] + margin) for i in others]))
    pos = sum(pos_terms) / len(pos_terms) if pos_terms else 0.0
    return pos + sum(neg_terms) / len(proxies)


# ----------------------------------------------------------------------------- InfoNCE
def info_nce(x, labels, refs=None, ref_labels=None, self_ref=None, *, temperature, metric) -> float:
    refs, ref_labels, self_ref = _refs(x, labels, refs, ref_labels, self_ref)
    d = distances(x, refs, metric)
    losses = []
    for a, p in positive_pairs(labels, ref_labels, self_ref):
        negs = [n for (b, n) in negative_pairs(labels, ref_labels) if b == a]
        if not negs:
            continue
        logits = [-d[a, p] / temperature] + [-d[a, n] / temperature for n in negs]
        peak = max(logits)
        log_norm = peak + math.log(sum(math.exp(z - peak) for z in logits))
        losses.append(log_norm - logits[0])
    return sum(losses) / len(losses) if losses else 0.0


def multiple_negatives_ranking(
    queries,
    positives,
    hard_negatives=None,
    labels=None,
    *,
    temperature,
    metric,
    symmetric,
    margin=0.0,
) -> float:
    candidates = list(positives) + (list(hard_negatives) if hard_negatives is not None else [])
    batch = len(queries)

    def excluded(i, j):
        return labels is not None and j < batch and j != i and labels[j] == labels[i]

    def cross_entropy(rows, columns, exclude):
        total = 0.0
        for i, row in enumerate(rows):
            # The positive (j == i) is margin farther than it is.
            logits = [
                -(distance(row, c, metric) + (margin if j == i else 0.0)) / temperature
                for j, c in enumerate(columns)
                if not exclude(i, j)
            ]
            target = -(distance(row, columns[i], metric) + margin) / temperature
            peak = max(logits)
            total += peak + math.log(sum(math.exp(z - peak) for z in logits)) - target
        return total / len(rows)

    loss = cross_entropy(queries, candidates, excluded)
    if symmetric:
        loss = (loss + cross_entropy(positives, list(queries), excluded)) / 2
    return loss


# ----------------------------------------------------------------------------- multi-similarity
def multi_similarity(
    x,
    labels,
    refs=None,
    ref_labels=None,
    self_ref=None,
    *,
    alpha,
    beta,
    base,
    epsilon,
    metric,
) -> float:
    refs, ref_labels, self_ref = _refs(x, labels, refs, ref_labels, self_ref)
    d = distances(x, refs, metric)
    s = 1.0 - d if metric == "cosine" else -d
    total = 0.0
    for a in range(len(x)):
        pos = [p for (b, p) in positive_pairs(labels, ref_labels, self_ref) if b == a]
        neg = [n for (b, n) in negative_pairs(labels, ref_labels) if b == a]
        if epsilon is not None:
            min_pos = min((s[a, p] for p in pos), default=math.inf)
            max_neg = max((s[a, n] for n in neg), default=-math.inf)
            pos_kept = [p for p in pos if s[a, p] < max_neg + epsilon]
            neg_kept = [n for n in neg if s[a, n] > min_pos - epsilon]
            pos, neg = pos_kept, neg_kept
        total += _log1p_sum_exp([-alpha * (s[a, p] - base) for p in pos]) / alpha
        total += _log1p_sum_exp([beta * (s[a, n] - base) for n in neg]) / beta
    return total / len(x)


# ----------------------------------------------------------------------------- margin / sampling
def margin_loss(d_ap, d_an, betas, *, margin, nu) -> float:
    """Wu et al. 2017 over given triplets: hinge terms over the active count, plus ν·mean β."""
    terms = [max(dp - b + margin, 0.0) for dp, b in zip(d_ap, betas, strict=True)]
    terms += [max(b - dn + margin, 0.0) for dn, b in zip(d_an, betas, strict=True)]
    active = sum(1 for t in terms if t > 0)
    loss = sum(terms) / max(active, 1)
    if nu > 0 and betas:
        loss += nu * sum(betas) / len(betas)
    return loss


def distance_weighted_probabilities(d_row, negative_row, dim, *, cutoff, nonzero_loss_cutoff):
    """p(n | a) ∝ 1 / q(max(d, cutoff)) with q(d) = d^(n-2) (1 - d²/4)^((n-3)/2), over negatives
    with d < nonzero_loss_cutoff; uniform over the negatives if there is none."""
    log_weights = []
    for dn, is_neg in zip(d_row, negative_row, strict=True):
        if is_neg and dn < nonzero_loss_cutoff and dn < 2.0:
            c = max(dn, cutoff)
            log_weights.append(
                (2.0 - dim) * math.log(c) - 0.5 * (dim - 3.0) * math.log(1 - c * c / 4)
            )
        else:
            log_weights.append(None)
    finite = [w for w in log_weights if w is not None]
    peak = max(finite) if finite else 0.0
    weights = [0.0 if w is None else math.exp(w - peak) for w in log_weights]
    if sum(weights) == 0:
        weights = [1.0 if is_neg else 0.0 for is_neg in negative_row]
    total = sum(weights)
    return [w / total if total else 0.0 for w in weights]
