"""The contrastive (pair) loss as a module."""

from __future__ import annotations

import torch
from torch import nn

from tripletkit.distances import DistanceFn, Metric, resolve_distance
from tripletkit.functional.contrastive import CONTRASTIVE_MINING, contrastive_loss
from tripletkit.functional.mined import MinedPairs
from tripletkit.functional.pair_stats import PairStats
from tripletkit.validation import check_choice, check_nonnegative

__all__ = ["ContrastiveLoss"]


class ContrastiveLoss(nn.Module):
    """Contrastive loss: positive pairs cost ``[d - pos_margin]+``, negative pairs
    ``[neg_margin - d]+``; mean over the active positive pairs plus mean over the active negative
    pairs (see :func:`tripletkit.functional.contrastive_loss`).

    Input: ``embeddings`` ``(B, D)``, ``labels`` ``(B,)``; optionally references ``(M, D)`` /
    ``(M,)`` (a cross-batch memory, other processes' batches) and ``self_ref_index``; or
    ``mined=`` pairs from :func:`tripletkit.mining.mine_pairs` on the same embeddings (their
    distances are reused). :attr:`last_stats` holds a
    :class:`~tripletkit.functional.pair_stats.PairStats` after each call.

    Args:
        pos_margin: distance under which a positive pair costs nothing (>= 0).
        neg_margin: distance beyond which a negative pair costs nothing (>= 0); 1.0 suits
            L2-normalised embeddings with the euclidean distance.
        distance: a metric name or a function ``(x, y) -> (N, M)``.
        mining: ``"all"`` pairs, or ``"hard"``: each anchor's farthest positive and closest
            negative only.

    Example:
        >>> import torch
        >>> from tripletkit.losses import ContrastiveLoss
        >>> loss_fn = ContrastiveLoss(neg_margin=1.0, mining="hard")
        >>> embeddings = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
        >>> loss = loss_fn(embeddings, torch.arange(8).repeat_interleave(4))
        >>> loss_fn.last_stats.num_positive_pairs
        96
    """

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: Metric | str | DistanceFn = "euclidean",
        mining: str = "all",
    ) -> None:
        super().__init__()
        self.pos_margin = check_nonnegative(pos_margin, "pos_margin")
        self.neg_margin = check_nonnegative(neg_margin, "neg_margin")
        resolve_distance(distance)
        self.distance = distance
        self.mining = check_choice(mining, CONTRASTIVE_MINING, "mining")
        self.last_stats: PairStats | None = None

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        self_ref_index: torch.Tensor | None = None,
        *,
        mined: MinedPairs | None = None,
    ) -> torch.Tensor:
        loss, self.last_stats = contrastive_loss(
            embeddings,
            labels,
            ref_embeddings,
            ref_labels,
            pos_margin=self.pos_margin,
            neg_margin=self.neg_margin,
            distance=self.distance,
            mining=self.mining,
            self_ref_index=self_ref_index,
            mined=mined,
            return_stats=True,
        )
        return loss

    def extra_repr(self) -> str:
        return (
            f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, "
            f"distance={resolve_distance(self.distance)[0]!r}, mining={self.mining!r}"
        )
