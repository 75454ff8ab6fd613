"""The multi-similarity loss (Wang et al. 2019, "Multi-Similarity Loss with General Pair Weighting
for Deep Metric Learning"), a strong modern baseline for pair-based metric learning."""

from __future__ import annotations

from typing import Any

import torch

from tripletkit.functional.distance_loss import loss_of_distances
from tripletkit.functional.log_sum_exp import log_sum_exp_weights
from tripletkit.functional.pair_stats import PairStats, pair_stats
from tripletkit.functional.reference_set import resolve_reference_set, warn_no_pairs
from tripletkit.validation import check_choice, check_nonnegative, check_positive

__all__ = ["MULTI_SIMILARITY_DISTANCES", "multi_similarity_loss"]

#: The loss is defined on similarities: ``1 - d`` for cosine (cosine similarity), ``-d`` for dot.
MULTI_SIMILARITY_DISTANCES: tuple[str, ...] = ("cosine", "dot")


def multi_similarity_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    epsilon: float | None = None,
    distance: str = "cosine",
    self_ref_index: torch.Tensor | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, PairStats]:
    """Multi-similarity loss over the pairs of a batch.

    With ``S`` the similarity of anchor i and reference k, λ the base, P_i / N_i the positives /
    negatives of anchor i::

        L = 1/B Σ_i [ 1/α log(1 + Σ_{k ∈ P_i} exp(-α (S_ik - λ)))
                    + 1/β log(1 + Σ_{k ∈ N_i} exp( β (S_ik - λ))) ]

    Each pair is weighted by how it compares to the base and to the other pairs of its anchor
    (self-similarity and relative similarity), which is what makes the loss strong.

    ``epsilon`` turns on the paper's pair mining: a negative is kept only if
    ``S_in > min_{p ∈ P_i} S_ip - ε`` (harder than the anchor's hardest positive, up to ε), a
    positive only if ``S_ip < max_{n ∈ N_i} S_in + ε``; an anchor without positives keeps no
    negative and vice versa. Without it every pair is used (pytorch-metric-learning's
    ``MultiSimilarityLoss`` without a miner).

    Memory: the dense ``(B, M)`` distance matrix and its gradient, written in the forward pass
    (:mod:`~tripletkit.functional.distance_loss`).

    A batch with no positive and no negative pair returns 0.0 connected to the graph and warns with
    :class:`~tripletkit.errors.NoPairsWarning`.

    Args:
        embeddings: ``(B, D)`` anchors; ``labels``: ``(B,)`` integer labels.
        ref_embeddings, ref_labels: ``(M, D)`` / ``(M,)`` references, or None for the batch.
        alpha: α > 0, the scale of the positive term (paper: 2).
        beta: β > 0, the scale of the negative term (paper: 50).
        base: λ, the similarity margin (paper: 0.5 for cosine; 1 in some code bases).
        epsilon: ε >= 0 of the pair mining, or None for no mining (paper: 0.1).
        distance: ``"cosine"`` or ``"dot"`` (the similarity is ``1 - d`` or ``-d``).
        self_ref_index: ``(B,)`` reference index of each anchor's own copy (-1: none).
        return_stats: also return :class:`~tripletkit.functional.pair_stats.PairStats`;
            selected: every valid pair; active: the pairs the mining kept (all without ε).

    Returns:
        The scalar loss (float32 for half-precision inputs), and the statistics if asked.

    Example:
        >>> embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> loss = multi_similarity_loss(embeddings, torch.tensor([0, 0, 1]), alpha=1.0, beta=1.0,
        ...                              base=0.0)
        >>> round(float(loss), 4)  # anchors 0, 1: log(1 + e^-1) + log 2; anchor 2: log 3
        1.0371
    """
    alpha = check_positive(alpha, "alpha")
    beta = check_positive(beta, "beta")
    base = float(base)
    if epsilon is not None:
        epsilon = check_nonnegative(epsilon, "epsilon")
    check_choice(distance, MULTI_SIMILARITY_DISTANCES, "distance")
    refs = resolve_reference_set(embeddings, labels, ref_embeddings, ref_labels, self_ref_index)
    pos_index, pos_valid = refs.positive_slots()
    negative = refs.labels.unsqueeze(1) != refs.ref_labels.unsqueeze(0)
    num_positive = int(pos_valid.sum())
    num_negative = int(refs.negative_counts().sum())
    if num_positive == 0 and num_negative == 0:
        warn_no_pairs(
            f"no positive or negative pair among {refs.num_anchors} anchors and "
            f"{refs.num_refs} references"
        )
        zero = refs.zero_loss()
        if return_stats:
            return zero, pair_stats(torch.zeros(()), 0, torch.zeros(()), 0, 0, 0)
        return zero

    # With S = 1 - d (cosine) or -d (dot), every similarity condition is one on distances:
    # S - λ = offset - d, and ε-mining compares distances directly.
    offset = (1.0 if distance == "cosine" else 0.0) - base
    num_anchors = refs.num_anchors
    counts: dict[str, Any] = {}

    def compute(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        pos_d = dist.gather(1, pos_index)
        keep_positive, keep_negative = pos_valid, negative
        if epsilon is not None:
            farthest_positive = pos_d.masked_fill(~pos_valid, float("-inf")).amax(dim=1)
            closest_negative = dist.masked_fill(~negative, float("inf")).amin(dim=1)
            keep_positive = pos_valid & (pos_d > closest_negative.unsqueeze(1) - epsilon)
            keep_negative = negative & (dist < farthest_positive.unsqueeze(1) + epsilon)
        # Positive term: (1/α) log(1 + Σ exp(-α (S - λ))) = (1/α) log(1 + Σ exp(α (d - offset))).
        pos_lse, pos_weights, _ = log_sum_exp_weights(
            (pos_d - offset) * alpha, keep_positive, add_one=True
        )
        # Negative term: (1/β) log(1 + Σ exp(β (offset - d))); the constant folds into the shift.
        neg_lse, neg_weights, _ = log_sum_exp_weights(
            dist * -beta, keep_negative, add_one=True, offset=beta * offset
        )
        value = (pos_lse.double() / alpha + neg_lse.double() / beta).mean()
        # d/dd of the mean: +w/B on positives, -w/B on negatives (the softmax weights).
        grad = neg_weights
        grad.scatter_add_(1, pos_index, -pos_weights)
        if return_stats:
            same_rows, same_cols = refs.same_label_entries(pos_index, pos_valid)
            counts["kept"] = int(keep_positive.sum()) + int(keep_negative.sum())
            counts["pos_distance"] = pos_d[pos_valid].sum()
            counts["neg_distance"] = refs.negative_distance_sum(dist, same_rows, same_cols)
        return value, grad, -1.0 / num_anchors

    loss = loss_of_distances(refs, distance, compute).to(refs.out_dtype)
    if not return_stats:
        return loss
    stats = pair_stats(
        counts["pos_distance"],
        num_positive,
        counts["neg_distance"],
        num_negative,
        num_positive + num_negative,
        counts["kept"],
    )
    return loss, stats
