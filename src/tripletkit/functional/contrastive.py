"""The contrastive (pair) loss: pull positive pairs within a margin, push negative pairs beyond one."""

from __future__ import annotations

from typing import Any

import torch

from tripletkit.distances import DistanceFn, Metric
from tripletkit.functional.distance_loss import loss_of_distances
from tripletkit.functional.mined import MinedPairs
from tripletkit.functional.pair_stats import PairStats, pair_stats
from tripletkit.functional.reference_set import resolve_reference_set, warn_no_pairs
from tripletkit.validation import check_choice, check_nonnegative

__all__ = ["CONTRASTIVE_MINING", "contrastive_loss", "contrastive_pair_loss"]

#: ``"all"``: every pair; ``"hard"``: per anchor, its farthest positive and closest negative.
CONTRASTIVE_MINING: tuple[str, ...] = ("all", "hard")


def _mean_over_active(losses: torch.Tensor) -> tuple[torch.Tensor, int]:
    active = int((losses > 0).sum())
    return losses.sum() / max(active, 1), active


def contrastive_pair_loss(
    positive_distances: torch.Tensor,
    negative_distances: torch.Tensor,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
) -> tuple[torch.Tensor, int, int]:
    """The contrastive loss of given pair distances.

    ``mean_active [d_pos - m_pos]+ + mean_active [m_neg - d_neg]+``, where each mean is over the
    pairs of its kind whose term is > 0 (0 when none is).

    Args:
        positive_distances: ``(P,)`` distances of positive pairs.
        negative_distances: ``(N,)`` distances of negative pairs.
        pos_margin: m_pos, the distance below which a positive pair costs nothing.
        neg_margin: m_neg, the distance beyond which a negative pair costs nothing.

    Returns:
        ``(loss, active positive pairs, active negative pairs)``.

    >>> loss, pos, neg = contrastive_pair_loss(torch.tensor([0.5, 0.0]), torch.tensor([0.8, 2.0]))
    >>> round(float(loss), 4), pos, neg
    (0.7, 1, 1)
    """
    pos_terms = (positive_distances - pos_margin).clamp_min(0)
    neg_terms = (neg_margin - negative_distances).clamp_min(0)
    pos_loss, pos_active = _mean_over_active(pos_terms)
    neg_loss, neg_active = _mean_over_active(neg_terms)
    return pos_loss + neg_loss, pos_active, neg_active


def contrastive_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    distance: Metric | str | DistanceFn = "euclidean",
    mining: str = "all",
    self_ref_index: torch.Tensor | None = None,
    mined: MinedPairs | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, PairStats]:
    """Contrastive loss over the pairs of a batch (Hadsell, Chopra & LeCun 2006).

    Every anchor-reference pair with the same label (a positive pair; an anchor's own copy
    excluded) costs ``[d - m_pos]+``, every pair with different labels ``[m_neg - d]+``. The loss is
    the mean over the *active* positive pairs (term > 0) plus the mean over the active negative
    pairs, as pytorch-metric-learning's ``ContrastiveLoss``: averaging each kind separately keeps
    the many easy negatives from drowning the positives.

    ``mining="hard"`` keeps, per anchor, only its farthest positive and its closest negative (the
    batch-hard selection of the triplet loss, applied to pairs; ties pick the lowest reference
    index). With ``mined`` (from :func:`tripletkit.mining.mine_pairs`), the miner's pairs and
    distances are used as they are, and ``mining``/``distance`` are not consulted.

    Memory: the ``(B, M)`` distance matrix, its gradient (written in the forward pass, see
    :mod:`~tripletkit.functional.distance_loss`) and boolean masks of that size.

    A batch with neither a positive nor a negative pair returns 0.0 connected to the graph and warns
    with :class:`~tripletkit.errors.NoPairsWarning`.

    Args:
        embeddings: ``(B, D)`` float anchors.
        labels: ``(B,)`` integer labels.
        ref_embeddings: ``(M, D)`` references (a memory, other processes' batches), or None for
            the batch itself.
        ref_labels: ``(M,)`` labels of the references.
        pos_margin: m_pos >= 0.
        neg_margin: m_neg >= 0; for L2-normalised embeddings and the euclidean distance (range
            [0, 2]) 1.0 is a common choice (the default of pytorch-metric-learning).
        distance: a metric name or a function ``(x, y) -> (N, M)``.
        mining: ``"all"`` or ``"hard"`` (see above).
        self_ref_index: ``(B,)`` reference index of each anchor's own copy (-1: none).
        mined: pairs from a miner run on this very ``embeddings`` tensor.
        return_stats: also return :class:`~tripletkit.functional.pair_stats.PairStats` (active:
            term > 0; with ``mined``, counts and means are over the mined pairs).

    Returns:
        The scalar loss (float32 for half-precision inputs), and the statistics if asked.

    Example:
        >>> embeddings = torch.tensor([[0.0, 0.0], [0.0, 0.6], [0.8, 0.0]])
        >>> labels = torch.tensor([0, 0, 1])
        >>> contrastive_loss(embeddings, labels)  # positives: 0.6 (twice); negatives: 1 - 0.8, 1 - 1
        tensor(0.8000)
    """
    pos_margin = check_nonnegative(pos_margin, "pos_margin")
    neg_margin = check_nonnegative(neg_margin, "neg_margin")
    if mined is not None:
        return _mined_contrastive(mined, embeddings, pos_margin, neg_margin, return_stats)
    check_choice(mining, CONTRASTIVE_MINING, "mining")
    refs = resolve_reference_set(embeddings, labels, ref_embeddings, ref_labels, self_ref_index)
    pos_index, pos_valid = refs.positive_slots()
    num_positive = int(pos_valid.sum())
    neg_counts = refs.negative_counts()
    num_negative = int(neg_counts.sum())
    if num_positive == 0 and num_negative == 0:
        warn_no_pairs(
            f"no positive or negative pair among {refs.num_anchors} anchors and "
            f"{refs.num_refs} references"
        )
        zero = refs.zero_loss()
        if return_stats:
            return zero, pair_stats(torch.zeros(()), 0, torch.zeros(()), 0, 0, 0)
        return zero

    same_rows, same_cols = refs.same_label_entries(pos_index, pos_valid)
    negative = None
    if mining == "hard":
        negative = refs.labels.unsqueeze(1) != refs.ref_labels.unsqueeze(0)
    counts: dict[str, Any] = {}

    def compute(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        pos_d = dist.gather(1, pos_index)
        if mining == "all":
            pos_active = pos_valid & (pos_d > pos_margin)
            num_pos = int(pos_active.sum())
            pos_sum = torch.where(pos_active, pos_d - pos_margin, 0.0).sum()
            # [m - d]+ over every entry, minus the same-label entries (a small gather): no
            # negative mask, and the buffer becomes the gradient (the negatives' indicator).
            grad = (neg_margin - dist).clamp_min_(0)
            same_hinge = grad[same_rows, same_cols]
            neg_sum = grad.sum() - same_hinge.sum()
            num_neg = int(torch.count_nonzero(grad)) - int(torch.count_nonzero(same_hinge))
            grad.gt_(0)
            grad[same_rows, same_cols] = 0.0
            # d/dd = pos_active / num_pos - neg_active / num_neg = scale * grad:
            scale = -1.0 / max(num_neg, 1)
            pos_weight = pos_active.to(dist.dtype) * (max(num_neg, 1) / -max(num_pos, 1))
            grad.scatter_add_(1, pos_index, pos_weight)
            counts["selected"] = num_positive + num_negative
        else:
            rows = torch.arange(dist.shape[0], device=dist.device)
            hardest_pos, slot = pos_d.masked_fill(~pos_valid, float("-inf")).max(dim=1)
            hardest_neg, neg_arg = dist.masked_fill(~negative, float("inf")).min(dim=1)
            pos_active = pos_valid.any(dim=1) & (hardest_pos > pos_margin)
            neg_active = (neg_counts > 0) & (hardest_neg < neg_margin)
            num_pos, num_neg = int(pos_active.sum()), int(neg_active.sum())
            pos_sum = (hardest_pos[pos_active] - pos_margin).sum()
            neg_sum = (neg_margin - hardest_neg[neg_active]).sum()
            counts["selected"] = int(pos_valid.any(dim=1).sum()) + int((neg_counts > 0).sum())
            grad, scale = torch.zeros_like(dist), 1.0
            grad.index_put_(
                (rows, pos_index[rows, slot]),
                pos_active.to(dist.dtype) / max(num_pos, 1),
                accumulate=True,
            )
            grad.index_put_(
                (rows, neg_arg), neg_active.to(dist.dtype) / -max(num_neg, 1), accumulate=True
            )
        counts["active"] = num_pos + num_neg
        if return_stats:
            counts["pos_distance"] = pos_d[pos_valid].sum()
            counts["neg_distance"] = refs.negative_distance_sum(dist, same_rows, same_cols)
        value = pos_sum.double() / max(num_pos, 1) + neg_sum.double() / max(num_neg, 1)
        return value, grad, scale

    loss = loss_of_distances(refs, distance, compute).to(refs.out_dtype)
    if not return_stats:
        return loss
    stats = pair_stats(
        counts["pos_distance"],
        num_positive,
        counts["neg_distance"],
        num_negative,
        counts["selected"],
        counts["active"],
    )
    return loss, stats


def _mined_contrastive(
    mined: MinedPairs,
    embeddings: torch.Tensor,
    pos_margin: float,
    neg_margin: float,
    return_stats: bool,
):
    mined.check_source(embeddings)
    positive_distances = mined.positive_distances()
    negative_distances = mined.negative_distances()
    selected = positive_distances.numel() + negative_distances.numel()
    if selected == 0:
        warn_no_pairs(f"the mining result ({mined.mining!r}) holds no pair")
        zero = mined.zero_loss()
        if return_stats:
            return zero, pair_stats(torch.zeros(()), 0, torch.zeros(()), 0, 0, 0)
        return zero
    loss, pos_active, neg_active = contrastive_pair_loss(
        positive_distances, negative_distances, pos_margin=pos_margin, neg_margin=neg_margin
    )
    loss = loss.to(torch.promote_types(embeddings.dtype, torch.float32))
    if not return_stats:
        return loss
    with torch.no_grad():
        stats = pair_stats(
            positive_distances.sum(),
            positive_distances.numel(),
            negative_distances.sum(),
            negative_distances.numel(),
            selected,
            pos_active + neg_active,
        )
    return loss, stats
