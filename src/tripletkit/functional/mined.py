"""What a miner returns: index triplets or pairs together with the distances they were mined from.

A miner (:mod:`tripletkit.mining`) computes the anchor-reference distance matrix once, picks
indices from it, and returns a :class:`MinedTriplets` or :class:`MinedPairs`. A loss that takes the
result (``mined=...`` of the pair losses, :func:`mined_triplet_loss`) reads the picked distances
from that matrix instead of computing it again, and back-propagates through the picked pairs only:
the backward pass costs O(picked pairs · D), as in the core's selection modes.

People who bring their own loss use the indices (``as_tuple()``) or the graph-connected distances
(``positive_distances()``, ``negative_distances()``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from tripletkit.distances import pairwise_distances_vjp
from tripletkit.errors import NoTripletsWarning
from tripletkit.functional.soft_margin import softplus
from tripletkit.functional.triplet_stats import TripletStats
from tripletkit.validation import check_nonnegative

__all__ = ["MinedPairs", "MinedTriplets", "gathered_distances", "mined_triplet_loss"]


class _GatheredDistances(torch.autograd.Function):
    """Entries ``(rows[t], cols[t])`` of a distance matrix already computed, with a sparse backward."""

    @staticmethod
    def forward(ctx: Any, x, y, rows, cols, values, metric):
        ctx.save_for_backward(x, y, rows, cols)
        ctx.metric = metric
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor):
        x, y, rows, cols = ctx.saved_tensors
        if rows.numel() == 0:
            return torch.zeros_like(x), torch.zeros_like(y), None, None, None, None
        indices = torch.stack([rows, cols])
        grad = torch.sparse_coo_tensor(
            indices, grad_values, (x.shape[0], y.shape[0]), check_invariants=False
        )
        grad_x, grad_y = pairwise_distances_vjp(x, y, grad, ctx.metric)
        return grad_x, grad_y, None, None, None, None


def gathered_distances(
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    distances: torch.Tensor,
    metric: str | None,
) -> torch.Tensor:
    """``distances[rows, cols]``, differentiable with respect to ``x`` and ``y`` at O(T · D) cost.

    Args:
        x: ``(B, D)`` and ``y``: ``(M, D)``, the inputs ``distances`` was computed from.
        rows, cols: ``(T,)`` int64 indices into ``x`` and ``y``.
        distances: ``(B, M)`` the matrix, detached for a named ``metric`` (the gradient is
            computed by :func:`~tripletkit.distances.pairwise_distances_vjp` on the picked pairs),
            or graph-connected when ``metric`` is None (a user distance function: autograd).
        metric: the metric name, or None.

    Returns:
        ``(T,)`` distances.

    >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]], requires_grad=True)
    >>> from tripletkit.distances import pairwise_distances
    >>> d = pairwise_distances(x.detach(), metric="euclidean")
    >>> picked = gathered_distances(x, x, torch.tensor([0]), torch.tensor([1]), d, "euclidean")
    >>> picked.sum().backward(); x.grad
    tensor([[-0.6000, -0.8000],
            [ 0.6000,  0.8000]])
    """
    if metric is None:
        return distances[rows, cols]
    values = distances.detach()[rows, cols]
    return _GatheredDistances.apply(x, y, rows, cols, values, metric)


@dataclass(frozen=True, eq=False)
class _Mined:
    """Fields shared by mined triplets and pairs.

    Attributes:
        distances: ``(B, M)`` anchor-reference distances the indices were picked from (detached for
            a named metric, graph-connected for a user distance function).
        metric: the metric name, or None for a user distance function.
        embeddings: ``(B, D)`` the tensor the distances were computed from (the anchors, after any
            normalisation the miner applies), graph-connected.
        ref_embeddings: ``(M, D)`` likewise for the references (``embeddings`` itself when the
            anchors were their own references).
        source: the ``embeddings`` tensor the miner was given; losses check they get the same one.
        mining: the mode that picked the indices.
    """

    distances: torch.Tensor
    metric: str | None
    embeddings: torch.Tensor
    ref_embeddings: torch.Tensor
    source: torch.Tensor
    mining: str

    def _gather(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return gathered_distances(
            self.embeddings, self.ref_embeddings, rows, cols, self.distances, self.metric
        )

    def check_source(self, embeddings: torch.Tensor) -> None:
        """Raise ``ValueError`` unless the result was mined from this very ``embeddings`` tensor."""
        if embeddings is not self.source:
            raise ValueError(
                "this mining result was computed from another embeddings tensor; mine the batch "
                "you pass to the loss (the loss reuses the miner's distances)"
            )

    def zero_loss(self) -> torch.Tensor:
        """0.0 connected to the graph of the inputs (zero gradients)."""
        dtype = torch.promote_types(self.source.dtype, torch.float32)
        zero = (self.embeddings * 0).sum().to(dtype)
        if self.ref_embeddings is not self.embeddings:
            zero = zero + (self.ref_embeddings * 0).sum().to(dtype)
        return zero


@dataclass(frozen=True, eq=False)
class MinedTriplets(_Mined):
    """Index triplets ``(anchors[t], positives[t], negatives[t])`` and the distances behind them.

    Attributes:
        anchors: ``(T,)`` int64 anchor rows.
        positives: ``(T,)`` int64 reference rows with the anchor's label.
        negatives: ``(T,)`` int64 reference rows with another label.
        margin: the margin the mining used (NaN for modes without one).
        num_valid_triplets: every valid triplet of the batch (the labels allow), for statistics.
        (and the fields of the base: ``distances``, ``metric``, ``embeddings``, ...)
    """

    anchors: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor
    margin: float
    num_valid_triplets: int

    def __len__(self) -> int:
        return int(self.anchors.shape[0])

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(anchors, positives, negatives)``."""
        return self.anchors, self.positives, self.negatives

    def positive_distances(self) -> torch.Tensor:
        """``(T,)`` d(anchor, positive), graph-connected."""
        return self._gather(self.anchors, self.positives)

    def negative_distances(self) -> torch.Tensor:
        """``(T,)`` d(anchor, negative), graph-connected."""
        return self._gather(self.anchors, self.negatives)


@dataclass(frozen=True, eq=False)
class MinedPairs(_Mined):
    """Positive pairs ``(positive_anchors[i], positives[i])`` and negative pairs
    ``(negative_anchors[j], negatives[j])``, with the distances behind them.

    Attributes:
        positive_anchors, positives: ``(P,)`` int64 anchor rows and reference rows (same label).
        negative_anchors, negatives: ``(N,)`` int64 anchor rows and reference rows (other label).
    """

    positive_anchors: torch.Tensor
    positives: torch.Tensor
    negative_anchors: torch.Tensor
    negatives: torch.Tensor

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(positive_anchors, positives, negative_anchors, negatives)``."""
        return self.positive_anchors, self.positives, self.negative_anchors, self.negatives

    def positive_distances(self) -> torch.Tensor:
        """``(P,)`` distances of the positive pairs, graph-connected."""
        return self._gather(self.positive_anchors, self.positives)

    def negative_distances(self) -> torch.Tensor:
        """``(N,)`` distances of the negative pairs, graph-connected."""
        return self._gather(self.negative_anchors, self.negatives)


def mined_triplet_loss(
    mined: MinedTriplets,
    *,
    margin: float = 0.2,
    soft: bool = False,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TripletStats]:
    """Triplet loss over the triplets a miner returned: ``mean_t [d(a,p) - d(a,n) + α]+``.

    With ``soft=True`` each triplet costs ``softplus(d(a,p) - d(a,n))`` instead. The distances come
    from the miner's matrix (never recomputed) and the gradient flows through the picked pairs
    only. With the margin the miner used, the result equals
    :func:`~tripletkit.functional.batch_triplet_loss` in that mining mode: every mode's mean is
    over what it selects, which is what the miner returns.

    An empty result returns 0.0 (graph-connected) and warns with
    :class:`~tripletkit.errors.NoTripletsWarning`.

    Args:
        mined: from :func:`tripletkit.mining.mine_triplets` (or another triplet miner).
        margin: α >= 0 (ignored when ``soft``).
        soft: the soft margin.
        return_stats: also return :class:`~tripletkit.functional.triplet_stats.TripletStats`
            (distances averaged over the mined triplets).

    Example:
        >>> from tripletkit.mining import mine_triplets
        >>> embeddings = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.1]])
        >>> mined = mine_triplets(embeddings, torch.tensor([0, 0, 1, 1]), mining="hard",
        ...                       margin=1.0)
        >>> mined.as_tuple()
        (tensor([0, 1, 2, 3]), tensor([1, 0, 3, 2]), tensor([2, 3, 0, 0]))
        >>> round(float(mined_triplet_loss(mined, margin=1.0)), 4)
        0.3
    """
    margin = check_nonnegative(margin, "margin")
    if len(mined) == 0:
        warnings.warn(
            f"the mining result ({mined.mining!r}) holds no triplet; the loss is 0",
            NoTripletsWarning,
            stacklevel=2,
        )
        zero = mined.zero_loss()
        if return_stats:
            nan = float("nan")
            return zero, TripletStats(mined.num_valid_triplets, 0, 0, 0.0, nan, nan, nan, nan)
        return zero
    d_ap = mined.positive_distances()
    d_an = mined.negative_distances()
    gap = d_ap - d_an
    losses = softplus(gap) if soft else (gap + margin).clamp_min(0)
    loss = losses.mean()
    if not return_stats:
        return loss
    with torch.no_grad():
        selected = len(mined)
        active = int((losses > 0).sum())
        stats = TripletStats(
            num_valid_triplets=mined.num_valid_triplets,
            num_selected=selected,
            num_active=active,
            active_triplet_fraction=active / selected,
            mean_positive_distance=float(d_ap.mean()),
            mean_negative_distance=float(d_an.mean()),
            hardest_positive_distance=float(d_ap.max()),
            hardest_negative_distance=float(d_an.min()),
        )
    return loss, stats
