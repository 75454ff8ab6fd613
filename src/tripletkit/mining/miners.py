"""Miners: index triplets or pairs for people who bring their own loss.

Each miner computes the anchor-reference distance matrix once and returns a
:class:`~tripletkit.functional.mined.MinedTriplets` or
:class:`~tripletkit.functional.mined.MinedPairs` that carries the indices *and* that matrix. A
tripletkit loss given the result (``mined=...``, or
:func:`~tripletkit.functional.mined_triplet_loss`) reads the distances from it instead of computing
them again, and back-propagates through the picked pairs only.

"hard" means the same thing everywhere in tripletkit: per anchor, its farthest positive and its
closest negative (batch-hard). The modes of :func:`mine_triplets` are exactly those of
:func:`~tripletkit.functional.batch_triplet_loss`, and selected by the same kernels: the loss of the
mined triplets equals the batch loss in that mode.

==================================  ==========================================================
function                            returns
==================================  ==========================================================
:func:`mine_triplets`               the triplets a mining mode selects (``all``, ``hard``,
                                    ``semihard``, ``semihard-window``, ``hard-window``,
                                    ``easy-positive``)
:func:`mine_distance_weighted`      one distance-weighted negative per positive pair (Wu 2017)
:func:`mine_pairs`                  every pair (``all``) or each anchor's hardest pairs (``hard``)
==================================  ==========================================================
"""

from __future__ import annotations

import torch

from tripletkit.distances import DistanceFn, Metric
from tripletkit.functional.distance_weighted import sample_distance_weighted
from tripletkit.functional.mined import MinedPairs, MinedTriplets
from tripletkit.functional.mining_modes import MINING_MODES
from tripletkit.functional.reference_set import ReferenceSet, resolve_reference_set
from tripletkit.functional.triplet_mining import triplet_indices
from tripletkit.validation import check_choice, check_nonnegative

__all__ = [
    "PAIR_MINING",
    "TRIPLET_MINING",
    "DistanceWeightedMiner",
    "PairMiner",
    "TripletMiner",
    "mine_distance_weighted",
    "mine_pairs",
    "mine_triplets",
]

TRIPLET_MINING: tuple[str, ...] = MINING_MODES
PAIR_MINING: tuple[str, ...] = ("all", "hard")


def _distances(refs: ReferenceSet, distance) -> tuple[torch.Tensor, str | None]:
    """The matrix to mine from: detached for a named metric (the losses back-propagate through the
    picked pairs by hand), graph-connected for a user function (autograd)."""
    if callable(distance):
        return refs.distances(distance)
    with torch.no_grad():
        return refs.distances(distance)


def _num_valid_triplets(refs: ReferenceSet) -> int:
    groups = refs.groups()
    positives = groups.positive_counts(refs.labels, refs.self_ref_index)
    return int((positives * groups.negative_counts(refs.labels)).sum())


def mine_triplets(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    mining: str = "semihard",
    margin: float = 0.2,
    distance: Metric | str | DistanceFn = "squared_euclidean",
    self_ref_index: torch.Tensor | None = None,
    backend: str = "auto",
) -> MinedTriplets:
    """The triplets one of the batch triplet loss's mining modes selects.

    See :data:`~tripletkit.functional.mining_modes.MINING_MODES`: ``all`` returns every valid
    triplet with ``d(a,p) - d(a,n) + margin > 0``; ``hard`` each anchor's farthest positive and
    closest negative; ``semihard`` one negative per positive pair (FaceNet); the windows every
    triplet in the window; ``easy-positive`` each anchor's closest positive and negative. Ties pick
    the lowest reference index, as the loss does.

    Args:
        embeddings: ``(B, D)`` anchors; ``labels``: ``(B,)``.
        ref_embeddings, ref_labels: ``(M, D)`` and ``(M,)`` references, or None for the batch.
        mining: the mode.
        margin: α >= 0.
        distance: a metric name or a function ``(x, y) -> (N, M)``.
        self_ref_index: ``(B,)`` reference index of each anchor's own copy (-1: none).
        backend: kernels of the selection modes: ``"auto"``, ``"numba"`` or ``"torch"``.

    Returns:
        :class:`~tripletkit.functional.mined.MinedTriplets`.

    Example:
        >>> embeddings = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.1]])
        >>> mined = mine_triplets(embeddings, torch.tensor([0, 0, 1, 1]), mining="all",
        ...                       margin=0.5)
        >>> mined.as_tuple()  # triplets with d(a, p) - d(a, n) + 0.5 > 0 (squared euclidean)
        (tensor([0, 0]), tensor([1, 1]), tensor([2, 3]))
    """
    check_choice(mining, TRIPLET_MINING, "mining")
    margin = check_nonnegative(margin, "margin")
    refs = resolve_reference_set(embeddings, labels, ref_embeddings, ref_labels, self_ref_index)
    dist, metric = _distances(refs, distance)
    table = refs.groups().positives(refs.labels, refs.self_ref_index)
    anchors, positives, negatives = triplet_indices(
        dist.detach(),
        refs.labels,
        refs.ref_labels,
        table,
        mining=mining,
        margin=margin,
        backend=backend,
    )
    return MinedTriplets(
        distances=dist,
        metric=metric,
        embeddings=refs.embeddings,
        ref_embeddings=refs.ref_embeddings,
        source=embeddings,
        mining=mining,
        anchors=anchors,
        positives=positives,
        negatives=negatives,
        margin=margin,
        num_valid_triplets=_num_valid_triplets(refs),
    )


def mine_distance_weighted(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
    self_ref_index: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> MinedTriplets:
    """Distance-weighted sampling (Wu et al. 2017): one negative per positive pair.

    The embeddings are L2-normalised first (the sampling distribution is derived for the unit
    sphere) and compared with the euclidean distance; the result's ``embeddings`` are the
    normalised tensors (graph-connected to yours). See
    :mod:`~tripletkit.functional.distance_weighted` for the weights.

    Args:
        embeddings: ``(B, D)`` anchors; ``labels``: ``(B,)``.
        ref_embeddings, ref_labels: references, or None for the batch.
        cutoff: distances are clamped below at this value before weighting.
        nonzero_loss_cutoff: negatives this far or farther are not drawn.
        self_ref_index: ``(B,)`` reference index of each anchor's own copy (-1: none).
        generator: random generator of the draws.

    Returns:
        :class:`~tripletkit.functional.mined.MinedTriplets` (``metric="euclidean"``).

    Example:
        >>> embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> mined = mine_distance_weighted(embeddings, torch.tensor([0, 0, 1, 1]))
        >>> mined.anchors, mined.positives
        (tensor([0, 1, 2, 3]), tensor([1, 0, 3, 2]))
    """
    refs = resolve_reference_set(embeddings, labels, ref_embeddings, ref_labels, self_ref_index)
    return sample_distance_weighted(
        refs, cutoff=cutoff, nonzero_loss_cutoff=nonzero_loss_cutoff, generator=generator
    )


def mine_pairs(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    mining: str = "all",
    distance: Metric | str | DistanceFn = "euclidean",
    self_ref_index: torch.Tensor | None = None,
) -> MinedPairs:
    """Positive and negative pairs: all of them, or each anchor's hardest of each kind.

    ``"all"``: every positive pair (own copies excluded) and every negative pair, in row-major
    order. ``"hard"``: per anchor with a positive, its farthest positive; per anchor with a
    negative, its closest negative (ties: lowest reference index).

    Args:
        embeddings: ``(B, D)`` anchors; ``labels``: ``(B,)``.
        ref_embeddings, ref_labels: references, or None for the batch.
        mining: ``"all"`` or ``"hard"``.
        distance: a metric name or a function ``(x, y) -> (N, M)``.
        self_ref_index: ``(B,)`` reference index of each anchor's own copy (-1: none).

    Returns:
        :class:`~tripletkit.functional.mined.MinedPairs`.

    Example:
        >>> embeddings = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [3.0, 0.0]])
        >>> mined = mine_pairs(embeddings, torch.tensor([0, 0, 1, 1]), mining="hard")
        >>> mined.as_tuple()
        (tensor([0, 1, 2, 3]), tensor([1, 0, 3, 2]), tensor([0, 1, 2, 3]), tensor([2, 2, 0, 0]))
    """
    check_choice(mining, PAIR_MINING, "mining")
    refs = resolve_reference_set(embeddings, labels, ref_embeddings, ref_labels, self_ref_index)
    dist, metric = _distances(refs, distance)
    positive, negative = refs.masks()
    if mining == "all":
        pos_rows, pos_cols = positive.nonzero(as_tuple=True)
        neg_rows, neg_cols = negative.nonzero(as_tuple=True)
    else:
        work = dist.detach()
        pos_rows = torch.nonzero(positive.any(dim=1)).flatten()
        pos_cols = work.masked_fill(~positive, float("-inf"))[pos_rows].argmax(dim=1)
        neg_rows = torch.nonzero(negative.any(dim=1)).flatten()
        neg_cols = work.masked_fill(~negative, float("inf"))[neg_rows].argmin(dim=1)
    return MinedPairs(
        distances=dist,
        metric=metric,
        embeddings=refs.embeddings,
        ref_embeddings=refs.ref_embeddings,
        source=embeddings,
        mining=mining,
        positive_anchors=pos_rows,
        positives=pos_cols,
        negative_anchors=neg_rows,
        negatives=neg_cols,
    )


class TripletMiner:
    """:func:`mine_triplets` with its settings fixed, for configs and trainers.

    >>> miner = TripletMiner(mining="hard", margin=0.2)
    >>> mined = miner(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    >>> len(mined)
    8
    """

    def __init__(
        self,
        mining: str = "semihard",
        margin: float = 0.2,
        distance: Metric | str | DistanceFn = "squared_euclidean",
        backend: str = "auto",
    ) -> None:
        self.mining = check_choice(mining, TRIPLET_MINING, "mining")
        self.margin = check_nonnegative(margin, "margin")
        self.distance = distance
        self.backend = backend

    def __call__(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        self_ref_index: torch.Tensor | None = None,
    ) -> MinedTriplets:
        return mine_triplets(
            embeddings,
            labels,
            ref_embeddings,
            ref_labels,
            mining=self.mining,
            margin=self.margin,
            distance=self.distance,
            self_ref_index=self_ref_index,
            backend=self.backend,
        )

    def __repr__(self) -> str:
        return f"TripletMiner(mining={self.mining!r}, margin={self.margin})"


class PairMiner:
    """:func:`mine_pairs` with its settings fixed.

    >>> PairMiner(mining="hard")
    PairMiner(mining='hard')
    """

    def __init__(
        self, mining: str = "all", distance: Metric | str | DistanceFn = "euclidean"
    ) -> None:
        self.mining = check_choice(mining, PAIR_MINING, "mining")
        self.distance = distance

    def __call__(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        self_ref_index: torch.Tensor | None = None,
    ) -> MinedPairs:
        return mine_pairs(
            embeddings,
            labels,
            ref_embeddings,
            ref_labels,
            mining=self.mining,
            distance=self.distance,
            self_ref_index=self_ref_index,
        )

    def __repr__(self) -> str:
        return f"PairMiner(mining={self.mining!r})"


class DistanceWeightedMiner:
    """:func:`mine_distance_weighted` with its settings fixed.

    >>> DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
    DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
    """

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        generator: torch.Generator | None = None,
    ) -> None:
        self.cutoff = check_nonnegative(cutoff, "cutoff")
        self.nonzero_loss_cutoff = check_nonnegative(nonzero_loss_cutoff, "nonzero_loss_cutoff")
        self.generator = generator

    def __call__(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        self_ref_index: torch.Tensor | None = None,
    ) -> MinedTriplets:
        return mine_distance_weighted(
            embeddings,
            labels,
            ref_embeddings,
            ref_labels,
            cutoff=self.cutoff,
            nonzero_loss_cutoff=self.nonzero_loss_cutoff,
            self_ref_index=self_ref_index,
            generator=self.generator,
        )

    def __repr__(self) -> str:
        return (
            f"DistanceWeightedMiner(cutoff={self.cutoff}, "
            f"nonzero_loss_cutoff={self.nonzero_loss_cutoff})"
        )
