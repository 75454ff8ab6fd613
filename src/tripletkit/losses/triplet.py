"""Triplet losses as modules: explicit triplets, and triplets mined online from a batch."""

from __future__ import annotations

import torch
from torch import nn

from tripletkit.distances import DistanceFn, Metric, resolve_distance
from tripletkit.functional.batch_triplet import BACKENDS, batch_triplet_loss
from tripletkit.functional.mining_modes import MINING_MODES
from tripletkit.functional.triplet_margin import triplet_margin_loss
from tripletkit.functional.triplet_stats import TripletStats
from tripletkit.validation import check_choice, check_nonnegative

__all__ = ["BatchTripletLoss", "TripletMarginLoss"]


class TripletMarginLoss(nn.Module):
    """Triplet margin loss on explicit ``(anchor, positive, negative)`` triplets.

    ``mean_i [d(a_i, p_i) - d(a_i, n_i) + margin]+`` (Schroff et al. 2015, "FaceNet"); with
    ``soft=True`` the soft margin ``softplus(d_ap - d_an)`` (Hermans et al. 2017); with
    ``swap=True`` the negative distance is ``min(d(a, n), d(p, n))`` (Balntas et al. 2016).

    Input: three ``(N, D)`` float tensors, row ``i`` of each forming triplet ``i``. Use this when
    your data already comes as triplets (e.g. query / relevant chunk / mined hard negative);
    use :class:`BatchTripletLoss` to mine triplets from labelled batches.

    Args:
        margin: α >= 0. On L2-normalised embeddings squared euclidean distances lie in [0, 4], so
            0.2 is a moderate margin; for ``cosine`` (in [0, 2]) use about half of it.
        distance: ``"squared_euclidean"``, ``"euclidean"``, ``"cosine"`` or ``"dot"``.
        swap: use the distance swap.
        soft: use the soft margin (``margin`` is then unused).

    Example:
        >>> import torch
        >>> from tripletkit.losses import TripletMarginLoss
        >>> loss_fn = TripletMarginLoss(margin=0.2)
        >>> a, p, n = torch.randn(3, 8, 16).unbind(0)
        >>> loss = loss_fn(a, p, n)
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        margin: float = 0.2,
        distance: Metric | str = "squared_euclidean",
        swap: bool = False,
        soft: bool = False,
    ) -> None:
        super().__init__()
        self.margin = check_nonnegative(margin, "margin")
        self.distance = resolve_distance(distance)[0]
        self.swap = bool(swap)
        self.soft = bool(soft)

    def forward(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        return triplet_margin_loss(
            anchor,
            positive,
            negative,
            margin=self.margin,
            distance=self.distance,
            swap=self.swap,
            soft=self.soft,
        )

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, distance={self.distance!r}, swap={self.swap}, soft={self.soft}"
        )


class BatchTripletLoss(nn.Module):
    """Triplet loss with exact online mining over a labelled batch (or a reference set).

    Every anchor in ``embeddings`` is mined against ``ref_embeddings`` (the batch itself when
    None); see :func:`tripletkit.functional.batch_triplet_loss` for the exact definition of each
    mining mode. No triplet is materialised: memory is O(B · M), or O(chunk_size · M) with
    ``chunk_size``, and time is close to that of the distance matrix alone.

    =====================  ======================================================================
    ``mining``             selects
    =====================  ======================================================================
    ``"all"``              every valid triplet with a positive loss (batch-all)
    ``"hard"``             each anchor's farthest positive and closest negative (Hermans 2017)
    ``"semihard"``         per positive pair, the closest negative beyond it (FaceNet, TF Addons)
    ``"semihard-window"``  triplets with d_ap < d_an < d_ap + margin
    ``"hard-window"``      triplets with d_an <= d_ap
    ``"easy-positive"``    each anchor's closest positive and closest negative (Xuan 2020)
    =====================  ======================================================================

    After each call, :attr:`last_stats` holds a
    :class:`~tripletkit.functional.triplet_stats.TripletStats` (valid, selected and active
    triplets, mean and hardest distances), computed from the same distances as the loss.

    Input: ``embeddings`` ``(B, D)`` float, ``labels`` ``(B,)`` int; optionally
    ``ref_embeddings`` ``(M, D)`` and ``ref_labels`` ``(M,)`` (a cross-batch memory, or the
    gathered batches of other processes).

    Args:
        margin: α >= 0 (see :class:`TripletMarginLoss` for the scale per distance).
        mining: one of the modes above.
        distance: a metric name or a function ``(x, y) -> (N, M)`` of distances.
        soft: use the soft margin ``softplus(d_ap - d_an)``.
        chunk_size: anchors per chunk (a memory budget); None: automatic.
        backend: ``"auto"``, ``"numba"`` or ``"torch"``.

    Example:
        >>> import torch
        >>> from tripletkit.losses import BatchTripletLoss
        >>> loss_fn = BatchTripletLoss(margin=0.2, mining="semihard")
        >>> embeddings = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
        >>> labels = torch.arange(8).repeat_interleave(4)   # P=8 classes x K=4 items
        >>> loss = loss_fn(embeddings, labels)
        >>> loss_fn.last_stats.num_valid_triplets
        2688
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "all",
        distance: Metric | str | DistanceFn = "squared_euclidean",
        soft: bool = False,
        chunk_size: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.margin = check_nonnegative(margin, "margin")
        self.mining = check_choice(mining, MINING_MODES, "mining")
        resolve_distance(distance)
        self.distance = distance
        self.soft = bool(soft)
        self.chunk_size = chunk_size
        self.backend = check_choice(backend, BACKENDS, "backend")
        self.last_stats: TripletStats | None = None

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        self_ref_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        loss, stats = batch_triplet_loss(
            embeddings,
            labels,
            ref_embeddings,
            ref_labels,
            margin=self.margin,
            mining=self.mining,
            distance=self.distance,
            soft=self.soft,
            self_ref_index=self_ref_index,
            chunk_size=self.chunk_size,
            backend=self.backend,
            return_stats=True,
        )
        self.last_stats = stats
        return loss

    def extra_repr(self) -> str:
        distance = (
            self.distance if isinstance(self.distance, str) else resolve_distance(self.distance)[0]
        )
        return (
            f"margin={self.margin}, mining={self.mining!r}, distance={distance!r}, soft={self.soft}"
        )
