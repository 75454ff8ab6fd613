"""The margin loss with distance-weighted sampling (Wu et al. 2017, "Sampling Matters in Deep
Embedding Learning")."""

from __future__ import annotations

import torch

from tripletkit.functional.distance_weighted import sample_distance_weighted
from tripletkit.functional.mined import MinedTriplets
from tripletkit.functional.pair_stats import PairStats, pair_stats
from tripletkit.functional.reference_set import resolve_reference_set, warn_no_pairs
from tripletkit.validation import check_labels, check_nonnegative

__all__ = ["distance_weighted_margin_loss", "margin_pair_loss"]


def margin_pair_loss(
    positive_distances: torch.Tensor,
    negative_distances: torch.Tensor,
    positive_beta: torch.Tensor,
    negative_beta: torch.Tensor,
    *,
    margin: float = 0.2,
) -> tuple[torch.Tensor, int, int]:
    """The margin loss of given pairs, normalised by the number of active terms.

    ``(Σ [d_pos - β + α]+ + Σ [β - d_neg + α]+) / (number of terms > 0)`` (0 when none is).

    Args:
        positive_distances: ``(P,)`` distances of positive pairs; ``positive_beta``: ``(P,)`` or
            scalar, their boundary β.
        negative_distances: ``(N,)``; ``negative_beta``: ``(N,)`` or scalar.
        margin: α >= 0.

    Returns:
        ``(loss, active positive terms, active negative terms)``.

    >>> loss, pos, neg = margin_pair_loss(torch.tensor([1.2]), torch.tensor([0.9]),
    ...                                   torch.tensor(1.2), torch.tensor(1.2))
    >>> round(float(loss), 4), pos, neg  # (0.2 + 0.5) / 2
    (0.35, 1, 1)
    """
    pos_terms = (positive_distances - positive_beta + margin).clamp_min(0)
    neg_terms = (negative_beta - negative_distances + margin).clamp_min(0)
    pos_active = int((pos_terms > 0).sum())
    neg_active = int((neg_terms > 0).sum())
    total = pos_terms.sum() + neg_terms.sum()
    return total / max(pos_active + neg_active, 1), pos_active, neg_active


def distance_weighted_margin_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    beta: float | torch.Tensor = 1.2,
    margin: float = 0.2,
    nu: float = 0.0,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
    self_ref_index: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mined: MinedTriplets | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, PairStats]:
    """Margin loss over distance-weighted triplets.

    For every positive pair (a, p) one negative n is drawn with probability ∝ 1 / q(d(a, n))
    (:mod:`~tripletkit.functional.distance_weighted`), on L2-normalised embeddings with the
    euclidean distance. Each triplet contributes a positive and a negative term around a boundary
    β (per class of the anchor when ``beta`` has one entry per class)::

        L = (Σ_t [d(a,p) - β + α]+ + Σ_t [β - d(a,n) + α]+) / (number of terms > 0)
            + ν · mean_t β_(class of a)

    so that, unlike the triplet loss, positives are pulled inside an absolute radius and negatives
    pushed outside it. ν (default 0) rewards a small β.

    With ``mined`` (from any triplet miner run on this ``embeddings`` tensor), its triplets and
    distances are used as they are instead of sampling.

    A batch without any triplet returns 0.0 connected to the graph (β included) and warns with
    :class:`~tripletkit.errors.NoPairsWarning`.

    Args:
        embeddings: ``(B, D)`` anchors; ``labels``: ``(B,)`` integer labels.
        ref_embeddings, ref_labels: ``(M, D)`` / ``(M,)`` references, or None for the batch.
        beta: β, a float, a scalar tensor, or a ``(C,)`` tensor indexed by the anchors' labels
            (which must then lie in ``[0, C)``); a learnable parameter in the loss module.
        margin: α >= 0.
        nu: ν >= 0, the weight of the β regulariser.
        cutoff, nonzero_loss_cutoff: of the sampling (see
            :func:`~tripletkit.functional.distance_weighted.distance_weighted_probabilities`).
        self_ref_index: ``(B,)`` reference index of each anchor's own copy (-1: none).
        generator: random generator of the sampling.
        mined: triplets from a miner, instead of sampling.
        return_stats: also return :class:`~tripletkit.functional.pair_stats.PairStats` over the
            sampled pairs (a positive and a negative pair per triplet); active: terms > 0.

    Returns:
        The scalar loss (float32 for half-precision inputs), and the statistics if asked.

    Example:
        >>> embeddings = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> loss = distance_weighted_margin_loss(embeddings, labels, beta=1.2,
        ...                                      generator=torch.Generator().manual_seed(0))
        >>> float(loss) > 0
        True
    """
    margin = check_nonnegative(margin, "margin")
    nu = check_nonnegative(nu, "nu")
    if mined is None:
        refs = resolve_reference_set(embeddings, labels, ref_embeddings, ref_labels, self_ref_index)
        mined = sample_distance_weighted(
            refs, cutoff=cutoff, nonzero_loss_cutoff=nonzero_loss_cutoff, generator=generator
        )
        labels = refs.labels
    else:
        mined.check_source(embeddings)
        labels = check_labels(labels, embeddings.shape[0], embeddings.device, "labels")
    if isinstance(beta, torch.Tensor):
        beta = beta if beta.is_floating_point() else beta.float()
    else:  # a number: exact in float64; as a 0-d tensor it does not change the loss's dtype
        beta = torch.tensor(float(beta), dtype=torch.float64, device=embeddings.device)
    if beta.dim() > 1 or (beta.dim() == 1 and beta.shape[0] < 1):
        raise ValueError(
            f"beta has shape {tuple(beta.shape)}; expected a scalar or a (num_classes,) tensor"
        )
    if len(mined) == 0:
        warn_no_pairs("no triplet (a positive pair whose anchor has a negative) in this batch")
        zero = mined.zero_loss() + (beta * 0).sum()
        if return_stats:
            return zero, pair_stats(torch.zeros(()), 0, torch.zeros(()), 0, 0, 0)
        return zero
    anchor_beta = _anchor_beta(beta, labels[mined.anchors])
    d_ap = mined.positive_distances()
    d_an = mined.negative_distances()
    loss, pos_active, neg_active = margin_pair_loss(
        d_ap, d_an, anchor_beta, anchor_beta, margin=margin
    )
    if nu > 0:
        loss = loss + nu * anchor_beta.mean()
    loss = loss.to(torch.promote_types(embeddings.dtype, torch.float32))
    if not return_stats:
        return loss
    with torch.no_grad():
        count = len(mined)
        stats = pair_stats(d_ap.sum(), count, d_an.sum(), count, 2 * count, pos_active + neg_active)
    return loss, stats


def _anchor_beta(beta: torch.Tensor, anchor_labels: torch.Tensor) -> torch.Tensor:
    """β of each triplet: the scalar, or the entry of the anchor's class."""
    if beta.dim() == 0 or beta.shape[0] == 1:
        return beta.reshape(()).expand(anchor_labels.shape[0])
    num_classes = beta.shape[0]
    if int(anchor_labels.min()) < 0 or int(anchor_labels.max()) >= num_classes:
        raise ValueError(
            f"with a per-class beta of {num_classes} entries, labels must lie in "
            f"[0, {num_classes}); got values in [{int(anchor_labels.min())}, "
            f"{int(anchor_labels.max())}]"
        )
    return beta[anchor_labels]
