"""InfoNCE: the softmax cross-entropy of a positive against negatives (Oord et al. 2018; NT-Xent of
SimCLR, Chen et al. 2020), with labels, and its (query, positive[, hard negatives]) form for text
retrieval (the multiple-negatives ranking loss of Henderson et al. 2017 / sentence-transformers).

Logits are ``-d / τ``: with the cosine distance ``1 - cos`` that is ``cos / τ`` up to a constant the
softmax ignores, so the usual "cosine similarity times a scale of 1/τ = 20" is
``distance="cosine", temperature=0.05``. The ``(B, M)`` logit matrix is dense.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tripletkit.distances import DistanceFn, Metric, resolve_distance
from tripletkit.functional.distance_loss import loss_of_distances
from tripletkit.functional.log_sum_exp import log_sum_exp_weights
from tripletkit.functional.pair_stats import PairStats, pair_stats
from tripletkit.functional.reference_set import resolve_reference_set, warn_no_pairs
from tripletkit.functional.soft_margin import softplus
from tripletkit.validation import (
    check_embeddings,
    check_labels,
    check_nonnegative,
    check_positive,
    check_same_dim,
)

__all__ = ["info_nce_loss", "multiple_negatives_ranking_loss"]


def info_nce_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    temperature: float = 0.05,
    distance: Metric | str | DistanceFn = "cosine",
    self_ref_index: torch.Tensor | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, PairStats]:
    """InfoNCE over labelled pairs: each positive pair against its anchor's negatives.

    For every positive pair (a, p) (same label, own copy excluded) with logits ``z = -d / τ``::

        ℓ(a, p) = -log( exp(z_ap) / (exp(z_ap) + Σ_{n: label(n) ≠ label(a)} exp(z_an)) )
                = softplus( logsumexp_n(z_an) - z_ap )

    and the loss is the mean over the positive pairs whose anchor has a negative. Other positives
    of the anchor are not in the denominator (as pytorch-metric-learning's ``NTXentLoss``; SupCon
    would include them). The log-sum-exp over the negatives is computed once per anchor: time and
    memory O(B·M), not O(B·K·M); the gradient with respect to the distances is written in the
    same pass (:mod:`~tripletkit.functional.distance_loss`).

    A batch with no positive pair that has a negative returns 0.0 connected to the graph and warns
    with :class:`~tripletkit.errors.NoPairsWarning`.

    Args:
        embeddings: ``(B, D)`` anchors; ``labels``: ``(B,)`` integer labels.
        ref_embeddings, ref_labels: ``(M, D)`` / ``(M,)`` references, or None for the batch.
        temperature: τ > 0.
        distance: a metric name or a function ``(x, y) -> (N, M)``.
        self_ref_index: ``(B,)`` reference index of each anchor's own copy (-1: none).
        return_stats: also return :class:`~tripletkit.functional.pair_stats.PairStats`;
            selected: the positive pairs used; active: those with a negative at least as close.

    Returns:
        The scalar loss (float32 for half-precision inputs), and the statistics if asked.

    Example:
        >>> embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> loss = info_nce_loss(embeddings, torch.tensor([0, 0, 1]), temperature=1.0)
        >>> round(float(loss), 4)  # softplus(-1) for both pairs (the negative is 1 farther)
        0.3133
    """
    temperature = check_positive(temperature, "temperature")
    refs = resolve_reference_set(embeddings, labels, ref_embeddings, ref_labels, self_ref_index)
    pos_index, pos_valid = refs.positive_slots()
    negative = refs.labels.unsqueeze(1) != refs.ref_labels.unsqueeze(0)
    neg_counts = refs.negative_counts()
    has_negative = neg_counts > 0
    used = pos_valid & has_negative.unsqueeze(1)
    num_used = int(used.sum())
    if num_used == 0:
        warn_no_pairs(
            f"no positive pair with a negative among {refs.num_anchors} anchors and "
            f"{refs.num_refs} references"
        )
        zero = refs.zero_loss()
        if return_stats:
            return zero, pair_stats(torch.zeros(()), 0, torch.zeros(()), 0, 0, 0)
        return zero

    counts: dict[str, Any] = {}

    def compute(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        pos_logits = dist.gather(1, pos_index) * (-1.0 / temperature)
        negatives_lse, weights, closest_negative = log_sum_exp_weights(
            dist * (-1.0 / temperature), negative
        )
        # Rows without a negative are not used; a finite stand-in keeps them NaN-free.
        gap = torch.where(used, negatives_lse.unsqueeze(1) - pos_logits, 0.0)
        value = torch.where(used, softplus(gap), 0.0).sum().double() / num_used
        # d softplus(gap) / d gap = sigmoid(gap): +σ to the anchor's log-sum-exp (spread over its
        # negatives by the softmax weights), -σ to the positive's logit; dz/dd = -1/τ (the scale).
        slope = torch.where(used, torch.sigmoid(gap), 0.0) / num_used
        grad = weights.mul_(slope.sum(dim=1, keepdim=True))
        grad.scatter_add_(1, pos_index, -slope)
        if return_stats:
            pos_d = dist.gather(1, pos_index)
            same_rows, same_cols = refs.same_label_entries(pos_index, pos_valid)
            counts["misranked"] = int((used & (closest_negative.unsqueeze(1) >= pos_logits)).sum())
            counts["pos_distance"] = pos_d[pos_valid].sum()
            counts["neg_distance"] = refs.negative_distance_sum(dist, same_rows, same_cols)
        return value, grad, -1.0 / temperature

    loss = loss_of_distances(refs, distance, compute).to(refs.out_dtype)
    if not return_stats:
        return loss
    stats = pair_stats(
        counts["pos_distance"],
        int(pos_valid.sum()),
        counts["neg_distance"],
        int(neg_counts.sum()),
        num_used,
        counts["misranked"],
    )
    return loss, stats


def multiple_negatives_ranking_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    *,
    labels: torch.Tensor | None = None,
    temperature: float = 0.05,
    distance: Metric | str | DistanceFn = "cosine",
    symmetric: bool = False,
    margin: float = 0.0,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, PairStats]:
    """Multiple-negatives ranking loss: query ``i`` must pick its positive ``i`` among every
    candidate of the batch.

    Input is a batch of (query, positive) pairs, e.g. (question, answer) or (definition, term),
    plus optional hard negatives. The candidates are all B positives and all hard negatives; with
    logits ``z_ij = -d(q_i, c_j) / τ`` the loss is ``mean_i -log softmax_j(z_ij)[i]``: every other
    query's positive is an in-batch negative for free. This is sentence-transformers'
    ``MultipleNegativesRankingLoss`` (scale 20 = ``temperature=0.05`` with cosine).

    ``labels`` (optional) marks pairs that share a target (e.g. the same answer twice in a
    batch): a positive ``j != i`` with ``labels[j] == labels[i]`` is removed from query ``i``'s
    candidates instead of being counted as a negative. ``symmetric=True`` averages with the reverse
    direction (each positive must pick its query among the queries).

    ``margin`` m > 0 is the additive margin of AM-softmax for dual encoders (Yang et al. 2019,
    "Improving Multilingual Sentence Embedding using Bi-directional Dual Encoder with Additive
    Margin Softmax"): each positive's distance counts ``m`` more than it is, ``z_ii = -(d_ii + m) /
    τ``, so a positive must beat every negative by ``m`` before its share of the loss fades, as
    a triplet margin asks (in both directions when symmetric).

    Args:
        queries: ``(B, D)`` float.
        positives: ``(B, D)`` float; row ``i`` is the positive of query ``i``.
        hard_negatives: ``(N, D)`` float or None; negatives of every query (e.g. ``k`` mined per
            query, flattened to ``(B·k, D)``).
        labels: ``(B,)`` integer target identities, or None (all distinct).
        temperature: τ > 0.
        distance: a metric name or a function ``(x, y) -> (N, M)``.
        symmetric: add the positive-to-query direction.
        margin: m ≥ 0 added to each positive's distance in the logits (0: plain MNRL).
        return_stats: also return :class:`~tripletkit.functional.pair_stats.PairStats`;
            selected: the B queries; active: queries whose positive is not strictly ranked first.

    Returns:
        The scalar loss (float32 for half-precision inputs), and the statistics if asked.

    Example:
        >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> loss = multiple_negatives_ranking_loss(q, q.clone(), temperature=1.0)
        >>> round(float(loss), 4)  # softplus(-1): the other positive is 1 farther in cosine
        0.3133
    """
    temperature = check_positive(temperature, "temperature")
    margin = check_nonnegative(margin, "margin")
    queries = check_embeddings(queries, "queries")
    positives = check_embeddings(positives, "positives")
    if positives.shape != queries.shape:
        raise ValueError(
            f"positives has shape {tuple(positives.shape)} but queries has "
            f"{tuple(queries.shape)}; row i of positives is the positive of query i"
        )
    check_same_dim(queries, positives, "queries", "positives")
    candidates = positives
    if hard_negatives is not None:
        hard_negatives = check_embeddings(hard_negatives, "hard_negatives")
        check_same_dim(queries, hard_negatives, "queries", "hard_negatives")
        candidates = torch.cat([positives, hard_negatives.to(positives.dtype)])
    batch = queries.shape[0]
    device = queries.device
    # Only the in-batch block can hold excluded candidates (other pairs sharing the label).
    excluded: torch.Tensor | None = None
    num_excluded = 0
    if labels is not None:
        labels = check_labels(labels, batch, device, "labels")
        same = labels.unsqueeze(1) == labels.unsqueeze(0)
        excluded = same & ~torch.eye(batch, dtype=torch.bool, device=device)
        num_excluded = int(excluded.sum())
    num_negative = batch * candidates.shape[0] - batch - num_excluded
    out_dtype = torch.promote_types(queries.dtype, torch.float32)
    if num_negative == 0:
        warn_no_pairs(f"no negative candidate for any of the {batch} queries")
        zero = ((queries * 0).sum() + (candidates * 0).sum()).to(out_dtype)
        if return_stats:
            return zero, pair_stats(torch.zeros(()), 0, torch.zeros(()), 0, 0, 0)
        return zero

    metric_fn = resolve_distance(distance)[1]
    dist = metric_fn(queries, candidates)
    # In place on the fresh logits (the scaling's backward does not need its output): no
    # further (B, B + N) copies for the exclusions or the margin.
    logits = dist * (-1.0 / temperature)
    if excluded is not None:
        logits[:, :batch].masked_fill_(excluded, float("-inf"))
    if margin:
        logits.diagonal().sub_(margin / temperature)  # the positives: j == i
    targets = torch.arange(batch, device=device)
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        reverse = logits[:, :batch].T
        loss = (loss + F.cross_entropy(reverse, targets)) / 2
    loss = loss.to(out_dtype)
    if not return_stats:
        return loss
    with torch.no_grad():
        own = dist.diagonal()
        others = dist.clone()
        others.diagonal().fill_(float("inf"))
        negative_sum = dist.sum(dtype=torch.float64) - own.sum(dtype=torch.float64)
        if excluded is not None:
            others[:, :batch].masked_fill_(excluded, float("inf"))
            negative_sum -= dist[:, :batch][excluded].sum(dtype=torch.float64)
        misranked = int((others.amin(dim=1) <= own).sum())
        stats = pair_stats(own.sum(), batch, negative_sum, num_negative, batch, misranked)
    return loss, stats
