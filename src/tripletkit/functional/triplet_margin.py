"""The triplet margin loss on explicit (anchor, positive, negative) triplets."""

from __future__ import annotations

import torch

from tripletkit.distances import Metric, paired_distances
from tripletkit.functional.soft_margin import softplus
from tripletkit.validation import (
    check_choice,
    check_embeddings,
    check_finite_distances,
    check_nonnegative,
)

__all__ = ["triplet_margin_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def triplet_margin_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    margin: float = 0.2,
    distance: Metric | str = "squared_euclidean",
    swap: bool = False,
    soft: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Triplet margin loss of explicit triplets: row ``i`` of each input forms triplet ``i``.

    ``loss_i = [d(a_i, p_i) - d(a_i, n_i) + α]+`` (Schroff et al. 2015, "FaceNet"), or with
    ``soft=True`` the soft margin ``softplus(d(a_i, p_i) - d(a_i, n_i))`` (Hermans et al. 2017),
    computed stably for any magnitude. With ``swap=True`` the negative distance is
    ``min(d(a, n), d(p, n))``, the distance swap of Balntas et al. 2016.

    Args:
        anchor, positive, negative: ``(N, D)`` float embeddings.
        margin: α >= 0 (ignored when ``soft``).
        distance: a metric name from :data:`~tripletkit.distances.METRICS`.
        swap: use the distance swap.
        soft: use the soft margin.
        reduction: ``"mean"`` (over the N triplets), ``"sum"`` or ``"none"`` (``(N,)`` losses).

    Returns:
        The loss (float32 for half-precision inputs).

    Example:
        >>> a = torch.tensor([[0.0, 0.0]]); p = torch.tensor([[0.0, 1.0]])
        >>> n = torch.tensor([[1.0, 1.0]])
        >>> triplet_margin_loss(a, p, n, margin=1.5)
        tensor(0.5000)
    """
    anchor = check_embeddings(anchor, "anchor")
    positive = check_embeddings(positive, "positive")
    negative = check_embeddings(negative, "negative")
    shapes = {tuple(t.shape) for t in (anchor, positive, negative)}
    if len(shapes) != 1:
        raise ValueError(
            "anchor, positive and negative must have the same shape (N, D); got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
        )
    margin = check_nonnegative(margin, "margin")
    check_choice(reduction, _REDUCTIONS, "reduction")
    d_ap = paired_distances(anchor, positive, distance)
    d_an = paired_distances(anchor, negative, distance)
    if swap:
        d_an = torch.minimum(d_an, paired_distances(positive, negative, distance))
    gap = d_ap - d_an
    check_finite_distances(gap.detach())
    losses = softplus(gap) if soft else (gap + margin).clamp_min(0)
    if reduction == "mean":
        return losses.mean() if losses.numel() else losses.sum()
    if reduction == "sum":
        return losses.sum()
    return losses
