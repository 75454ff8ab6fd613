"""InfoNCE and the multiple-negatives ranking loss as modules."""

from __future__ import annotations

import torch
from torch import nn

from tripletkit.distances import DistanceFn, Metric, resolve_distance
from tripletkit.functional.info_nce import info_nce_loss, multiple_negatives_ranking_loss
from tripletkit.functional.pair_stats import PairStats
from tripletkit.validation import check_nonnegative, check_positive

__all__ = ["InfoNCELoss", "MultipleNegativesRankingLoss"]


class InfoNCELoss(nn.Module):
    """InfoNCE / NT-Xent over labelled batches: every positive pair against its anchor's negatives,
    ``softplus(logsumexp_n(-d_an / τ) + d_ap / τ)``, mean over positive pairs (see
    :func:`tripletkit.functional.info_nce_loss`).

    Input: ``embeddings`` ``(B, D)``, ``labels`` ``(B,)``, optionally references (a memory bank,
    as in MoCo-style training) and ``self_ref_index``. :attr:`last_stats` holds a
    :class:`~tripletkit.functional.pair_stats.PairStats`.

    Args:
        temperature: τ > 0 (0.05 with cosine is a similarity scale of 20).
        distance: a metric name or a function ``(x, y) -> (N, M)``; logits are ``-d / τ``.

    Example:
        >>> import torch
        >>> from tripletkit.losses import InfoNCELoss
        >>> loss_fn = InfoNCELoss(temperature=0.1)
        >>> views = torch.randn(16, 8)                   # two views of 8 items
        >>> loss = loss_fn(views, torch.arange(8).repeat(2))
        >>> loss_fn.last_stats.num_selected_pairs
        16
    """

    def __init__(
        self, temperature: float = 0.05, distance: Metric | str | DistanceFn = "cosine"
    ) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        resolve_distance(distance)
        self.distance = distance
        self.last_stats: PairStats | None = None

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        self_ref_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        loss, self.last_stats = info_nce_loss(
            embeddings,
            labels,
            ref_embeddings,
            ref_labels,
            temperature=self.temperature,
            distance=self.distance,
            self_ref_index=self_ref_index,
            return_stats=True,
        )
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, distance={resolve_distance(self.distance)[0]!r}"


class MultipleNegativesRankingLoss(nn.Module):
    """Multiple-negatives ranking loss for (query, positive[, hard negatives]) batches: query ``i``
    must rank positive ``i`` first among all positives and hard negatives of the batch (see
    :func:`tripletkit.functional.multiple_negatives_ranking_loss`).

    Input: ``queries`` ``(B, D)``, ``positives`` ``(B, D)``, optional ``hard_negatives``
    ``(N, D)`` (negatives of every query) and ``labels`` ``(B,)`` (pairs with equal labels are not
    each other's negatives). This is the usual loss for text retrieval with in-batch negatives
    (sentence-transformers' ``MultipleNegativesRankingLoss``).

    Args:
        temperature: τ > 0; 0.05 with cosine equals sentence-transformers' scale of 20.
        distance: a metric name or a function ``(x, y) -> (N, M)``.
        symmetric: also rank the queries for each positive, and average.
        margin: additive margin m ≥ 0 on each positive's distance (AM-softmax; 0: plain MNRL).

    Example:
        >>> import torch
        >>> from tripletkit.losses import MultipleNegativesRankingLoss
        >>> loss_fn = MultipleNegativesRankingLoss()
        >>> queries, answers, wrong = torch.randn(3, 4, 8).unbind(0)
        >>> loss = loss_fn(queries, answers, hard_negatives=wrong)
        >>> loss_fn.last_stats.num_negative_pairs     # 3 in-batch + 4 hard per query
        28
    """

    def __init__(
        self,
        temperature: float = 0.05,
        distance: Metric | str | DistanceFn = "cosine",
        symmetric: bool = False,
        margin: float = 0.0,
    ) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        resolve_distance(distance)
        self.distance = distance
        self.symmetric = bool(symmetric)
        self.margin = check_nonnegative(margin, "margin")
        self.last_stats: PairStats | None = None

    def forward(
        self,
        queries: torch.Tensor,
        positives: torch.Tensor,
        hard_negatives: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        loss, self.last_stats = multiple_negatives_ranking_loss(
            queries,
            positives,
            hard_negatives,
            labels=labels,
            temperature=self.temperature,
            distance=self.distance,
            symmetric=self.symmetric,
            margin=self.margin,
            return_stats=True,
        )
        return loss

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, distance={resolve_distance(self.distance)[0]!r}, "
            f"symmetric={self.symmetric}, margin={self.margin}"
        )
