"""The multi-similarity loss as a module."""

from __future__ import annotations

import torch
from torch import nn

from tripletkit.functional.multi_similarity import (
    MULTI_SIMILARITY_DISTANCES,
    multi_similarity_loss,
)
from tripletkit.functional.pair_stats import PairStats
from tripletkit.validation import check_choice, check_nonnegative, check_positive

__all__ = ["MultiSimilarityLoss"]


class MultiSimilarityLoss(nn.Module):
    """Multi-similarity loss (Wang et al. 2019), optionally with its pair mining (see
    :func:`tripletkit.functional.multi_similarity_loss`).

    Input: ``embeddings`` ``(B, D)``, ``labels`` ``(B,)``, optionally references and
    ``self_ref_index``. :attr:`last_stats` holds a
    :class:`~tripletkit.functional.pair_stats.PairStats`.

    Args:
        alpha: scale of the positive term (paper: 2).
        beta: scale of the negative term (paper: 50).
        base: λ, the similarity threshold (paper: 0.5).
        epsilon: ε of the pair mining (paper: 0.1), or None for every pair.
        distance: ``"cosine"`` or ``"dot"``.

    Example:
        >>> import torch
        >>> from tripletkit.losses import MultiSimilarityLoss
        >>> loss_fn = MultiSimilarityLoss(epsilon=0.1)
        >>> embeddings = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
        >>> loss = loss_fn(embeddings, torch.arange(8).repeat_interleave(4))
        >>> loss_fn.last_stats.num_selected_pairs      # 96 positive + 896 negative pairs
        992
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        epsilon: float | None = None,
        distance: str = "cosine",
    ) -> None:
        super().__init__()
        self.alpha = check_positive(alpha, "alpha")
        self.beta = check_positive(beta, "beta")
        self.base = float(base)
        self.epsilon = None if epsilon is None else check_nonnegative(epsilon, "epsilon")
        self.distance = check_choice(distance, MULTI_SIMILARITY_DISTANCES, "distance")
        self.last_stats: PairStats | None = None

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        self_ref_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        loss, self.last_stats = multi_similarity_loss(
            embeddings,
            labels,
            ref_embeddings,
            ref_labels,
            alpha=self.alpha,
            beta=self.beta,
            base=self.base,
            epsilon=self.epsilon,
            distance=self.distance,
            self_ref_index=self_ref_index,
            return_stats=True,
        )
        return loss

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}, "
            f"distance={self.distance!r}"
        )
