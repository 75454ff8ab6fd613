"""The distance-weighted margin loss as a module, with a learnable boundary β."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tripletkit.functional.margin import distance_weighted_margin_loss
from tripletkit.functional.mined import MinedTriplets
from tripletkit.functional.pair_stats import PairStats
from tripletkit.validation import check_nonnegative, check_positive

__all__ = ["DistanceWeightedMarginLoss"]


class DistanceWeightedMarginLoss(nn.Module):
    """Margin loss with distance-weighted negative sampling (Wu et al. 2017, "Sampling Matters").

    Positives are pulled within ``β - margin`` and negatives pushed beyond ``β + margin`` of the
    anchor, on L2-normalised embeddings with the euclidean distance; one negative per positive pair
    is drawn with probability ∝ 1 / q(d), the inverse of the density of distances on the sphere
    (see :func:`tripletkit.functional.distance_weighted_margin_loss`).

    β is a parameter (one, or one per class with ``num_classes``) learned with the network when
    ``learn_beta``. The authors train it with its own, larger learning rate: :meth:`param_groups`
    returns it at ``base_lr * beta_lr_multiplier`` for the optimiser.

    Input: ``embeddings`` ``(B, D)``, ``labels`` ``(B,)`` (class indices in ``[0, num_classes)``
    with a per-class β), optionally references and ``self_ref_index``; or ``mined=`` triplets from
    a miner run on the same embeddings. Set :attr:`generator` for reproducible sampling.
    :attr:`last_stats` holds a :class:`~tripletkit.functional.pair_stats.PairStats`.

    Args:
        margin: α >= 0 (paper: 0.2).
        beta: initial β (paper: 1.2).
        learn_beta: train β.
        num_classes: one β per class when given.
        nu: ν >= 0, weight of the β regulariser (paper: 0).
        cutoff: distances are clamped below at this value for the sampling weights (paper: 0.5).
        nonzero_loss_cutoff: negatives this far are not drawn (paper: 1.4).
        beta_lr_multiplier: β's learning rate relative to the model's (see :meth:`param_groups`).

    Example:
        >>> import torch
        >>> from tripletkit.losses import DistanceWeightedMarginLoss
        >>> loss_fn = DistanceWeightedMarginLoss(margin=0.2, beta=1.2)
        >>> loss_fn.generator = torch.Generator().manual_seed(0)
        >>> embeddings = torch.randn(32, 16, requires_grad=True)
        >>> loss = loss_fn(embeddings, torch.arange(8).repeat_interleave(4))
        >>> loss.backward(); loss_fn.beta.grad is not None
        True
    """

    def __init__(
        self,
        margin: float = 0.2,
        beta: float = 1.2,
        learn_beta: bool = True,
        num_classes: int | None = None,
        nu: float = 0.0,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        beta_lr_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        self.margin = check_nonnegative(margin, "margin")
        self.nu = check_nonnegative(nu, "nu")
        self.cutoff = check_nonnegative(cutoff, "cutoff")
        self.nonzero_loss_cutoff = check_nonnegative(nonzero_loss_cutoff, "nonzero_loss_cutoff")
        self.beta_lr_multiplier = check_positive(beta_lr_multiplier, "beta_lr_multiplier")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer or None; got {num_classes!r}")
        size = 1 if num_classes is None else num_classes
        initial = torch.full((size,), float(beta))
        self.beta = nn.Parameter(initial, requires_grad=bool(learn_beta))
        self.generator: torch.Generator | None = None
        self.last_stats: PairStats | None = None

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the loss: β at ``base_lr * beta_lr_multiplier`` (none
        when β is fixed).

        >>> DistanceWeightedMarginLoss(beta_lr_multiplier=10).param_groups(1e-3)[0]["lr"]
        0.01
        """
        base_lr = check_nonnegative(base_lr, "base_lr")
        if not self.beta.requires_grad:
            return []
        return [{"params": [self.beta], "lr": base_lr * self.beta_lr_multiplier}]

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        self_ref_index: torch.Tensor | None = None,
        *,
        mined: MinedTriplets | None = None,
    ) -> torch.Tensor:
        loss, self.last_stats = distance_weighted_margin_loss(
            embeddings,
            labels,
            ref_embeddings,
            ref_labels,
            beta=self.beta,
            margin=self.margin,
            nu=self.nu,
            cutoff=self.cutoff,
            nonzero_loss_cutoff=self.nonzero_loss_cutoff,
            self_ref_index=self_ref_index,
            generator=self.generator,
            mined=mined,
            return_stats=True,
        )
        return loss

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, beta_shape={tuple(self.beta.shape)}, nu={self.nu}, "
            f"cutoff={self.cutoff}, nonzero_loss_cutoff={self.nonzero_loss_cutoff}"
        )
