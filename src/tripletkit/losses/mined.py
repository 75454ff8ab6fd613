"""The triplet loss over a miner's triplets, as a module."""

from __future__ import annotations

import torch
from torch import nn

from tripletkit.functional.mined import MinedTriplets, mined_triplet_loss
from tripletkit.functional.triplet_stats import TripletStats
from tripletkit.validation import check_nonnegative

__all__ = ["MinedTripletLoss"]


class MinedTripletLoss(nn.Module):
    """Triplet loss ``mean [d(a,p) - d(a,n) + margin]+`` over the triplets a miner returned,
    reading their distances from the miner's matrix (never computed twice) and back-propagating
    through the picked pairs only (see :func:`tripletkit.functional.mined_triplet_loss`).

    Use it to combine a tripletkit miner (or a cross-batch or cross-process reference set mined
    with one) with the triplet loss; :class:`~tripletkit.losses.BatchTripletLoss` does both steps
    in one call and is the faster choice when you do not need the indices.

    Args:
        margin: α >= 0; use the miner's margin to get exactly the batch loss of that mode.
        soft: the soft margin ``softplus(d_ap - d_an)``.

    Example:
        >>> import torch
        >>> from tripletkit.losses import MinedTripletLoss
        >>> from tripletkit.mining import TripletMiner
        >>> miner, loss_fn = TripletMiner(mining="semihard", margin=0.2), MinedTripletLoss(0.2)
        >>> embeddings = torch.randn(16, 8, requires_grad=True)
        >>> loss = loss_fn(miner(embeddings, torch.arange(4).repeat_interleave(4)))
        >>> loss_fn.last_stats.num_selected    # one negative per positive pair
        48
    """

    def __init__(self, margin: float = 0.2, soft: bool = False) -> None:
        super().__init__()
        self.margin = check_nonnegative(margin, "margin")
        self.soft = bool(soft)
        self.last_stats: TripletStats | None = None

    def forward(self, mined: MinedTriplets) -> torch.Tensor:
        loss, self.last_stats = mined_triplet_loss(
            mined, margin=self.margin, soft=self.soft, return_stats=True
        )
        return loss

    def extra_repr(self) -> str:
        return f"margin={self.margin}, soft={self.soft}"
