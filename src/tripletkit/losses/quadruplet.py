"""The quadruplet loss as a module."""

from __future__ import annotations

import torch
from torch import nn

from tripletkit.distances import DistanceFn, Metric, resolve_distance
from tripletkit.functional.quadruplet import QUADRUPLET_MINING, QuadrupletStats, quadruplet_loss
from tripletkit.validation import check_choice, check_nonnegative

__all__ = ["QuadrupletLoss"]


class QuadrupletLoss(nn.Module):
    """Quadruplet loss (Chen et al. 2017): the triplet term ``[d(a,p) - d(a,n) + margin]+`` plus
    ``[d(a,p) - d(l,k) + margin2]+`` for negative pairs (l, k) of two classes other than the
    anchor's; exact over all quadruplets without enumerating them, or batch-hard (see
    :func:`tripletkit.functional.quadruplet_loss`).

    Input: ``embeddings`` ``(B, D)``, ``labels`` ``(B,)``, optionally references and
    ``self_ref_index``. :attr:`last_stats` holds a
    :class:`~tripletkit.functional.quadruplet.QuadrupletStats` after each call.

    Args:
        margin: α >= 0 of the triplet term.
        margin2: α₂ >= 0 of the quadruplet term (smaller than ``margin`` in the paper).
        mining: ``"all"`` or ``"hard"``.
        distance: a metric name or a function ``(x, y) -> (N, M)``.

    Example:
        >>> import torch
        >>> from tripletkit.losses import QuadrupletLoss
        >>> loss_fn = QuadrupletLoss(margin=0.2, margin2=0.1, mining="hard")
        >>> embeddings = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
        >>> loss = loss_fn(embeddings, torch.arange(8).repeat_interleave(4))
        >>> loss_fn.last_stats.num_selected_quadruplets
        32
    """

    def __init__(
        self,
        margin: float = 0.2,
        margin2: float = 0.1,
        mining: str = "all",
        distance: Metric | str | DistanceFn = "squared_euclidean",
    ) -> None:
        super().__init__()
        self.margin = check_nonnegative(margin, "margin")
        self.margin2 = check_nonnegative(margin2, "margin2")
        self.mining = check_choice(mining, QUADRUPLET_MINING, "mining")
        resolve_distance(distance)
        self.distance = distance
        self.last_stats: QuadrupletStats | None = None

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        self_ref_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        loss, self.last_stats = quadruplet_loss(
            embeddings,
            labels,
            ref_embeddings,
            ref_labels,
            margin=self.margin,
            margin2=self.margin2,
            mining=self.mining,
            distance=self.distance,
            self_ref_index=self_ref_index,
            return_stats=True,
        )
        return loss

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, margin2={self.margin2}, mining={self.mining!r}, "
            f"distance={resolve_distance(self.distance)[0]!r}"
        )
