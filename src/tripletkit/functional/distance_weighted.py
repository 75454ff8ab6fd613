"""Distance-weighted negative sampling (Wu et al. 2017, "Sampling Matters in Deep Embedding Learning").

On the unit sphere in n dimensions, the distance d between two random points has density
``q(d) ∝ d^(n-2) (1 - d²/4)^((n-3)/2)``: almost every pair sits near d = √2. Sampling negatives
uniformly therefore yields almost only uninformative ones, and always taking the hardest yields
noisy gradients. Wu et al. sample each negative with probability proportional to ``1 / q(d)``, so
that the sampled distances spread over the whole range, with two guards:

* distances are clamped below at ``cutoff`` (0.5) before weighting, so that near-duplicates do not
  dominate;
* negatives at ``d >= nonzero_loss_cutoff`` (1.4) get weight 0: the margin loss is 0 there anyway.

When none of an anchor's negatives has a positive weight, one is drawn uniformly among its
negatives (as the authors' code does), so every anchor with a positive and a negative is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tripletkit.distances import pairwise_distances_unchecked
from tripletkit.functional.mined import MinedTriplets
from tripletkit.functional.reference_set import ReferenceSet
from tripletkit.pairs import PositiveTable
from tripletkit.validation import check_nonnegative

__all__ = [
    "distance_weighted_probabilities",
    "distance_weighted_triplets",
    "sample_distance_weighted",
]


def distance_weighted_probabilities(
    distances: torch.Tensor,
    negative: torch.Tensor,
    dim: int,
    *,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
) -> torch.Tensor:
    """Per anchor, the probability of drawing each reference as its negative.

    ``p(n | a) ∝ 1 / q(max(d_an, cutoff))`` over the negatives with ``d_an < nonzero_loss_cutoff``,
    computed in log space (``q`` spans hundreds of orders of magnitude at n = 128); a row with no
    such negative is uniform over its negatives; a row with no negative is all 0.

    Args:
        distances: ``(B, M)`` euclidean distances between L2-normalised embeddings.
        negative: ``(B, M)`` boolean negative-pair mask.
        dim: the embedding dimension n.
        cutoff: lower clamp of the distances, >= 0.
        nonzero_loss_cutoff: distances at or beyond it are never drawn (while another negative
            can be); must exceed ``cutoff``.

    Returns:
        ``(B, M)`` probabilities (float64 for float64 distances, else float32), each row summing
        to 1 (or 0 without negatives).

    >>> d = torch.tensor([[0.0, 0.6, 1.0, 1.5]])
    >>> p = distance_weighted_probabilities(d, torch.tensor([[False, True, True, True]]), dim=8)
    >>> [round(v, 4) for v in p[0].tolist()]
    [0.0, 0.9297, 0.0703, 0.0]
    """
    cutoff = check_nonnegative(cutoff, "cutoff")
    nonzero_loss_cutoff = check_nonnegative(nonzero_loss_cutoff, "nonzero_loss_cutoff")
    if not nonzero_loss_cutoff > cutoff:
        raise ValueError(
            f"nonzero_loss_cutoff ({nonzero_loss_cutoff}) must be larger than cutoff ({cutoff})"
        )
    if dim < 2:
        raise ValueError(
            f"distance-weighted sampling needs embeddings of dimension >= 2; got {dim}"
        )
    d = distances.detach()
    if d.dtype not in (torch.float32, torch.float64):
        d = d.float()
    eligible = negative & (d < min(nonzero_loss_cutoff, 2.0))
    # log(1/q) in place on one buffer (plus one for the second factor); ineligible entries are
    # evaluated at a harmless point and masked. Log space keeps float32 exact enough: at n = 128
    # the log weights span about ±100, the probabilities hundreds of orders of magnitude.
    log_weight = torch.where(eligible, d.clamp_min(max(cutoff, 1e-6)), 1.0)
    second = torch.square(log_weight).mul_(-0.25).log1p_().mul_(-0.5 * (dim - 3.0))
    log_weight.log_().mul_(2.0 - dim).add_(second)
    del second
    log_weight.masked_fill_(~eligible, float("-inf"))
    peak = log_weight.amax(dim=1, keepdim=True)
    has_eligible = torch.isfinite(peak)
    weight = log_weight.sub_(torch.where(has_eligible, peak, 0.0)).exp_()
    fallback = ~has_eligible.squeeze(1)
    if bool(fallback.any()):  # uniform over the row's negatives
        weight[fallback] = negative[fallback].to(weight.dtype)
    total = weight.sum(dim=1, keepdim=True)
    return weight.div_(torch.where(total > 0, total, torch.ones_like(total)))


def distance_weighted_triplets(
    distances: torch.Tensor,
    labels: torch.Tensor,
    ref_labels: torch.Tensor,
    table: PositiveTable,
    dim: int,
    *,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One distance-weighted negative for every positive pair: ``(anchors, positives, negatives)``.

    Draws are independent (with replacement) from :func:`distance_weighted_probabilities`.

    Args:
        distances: ``(B, M)`` euclidean distances between L2-normalised embeddings.
        labels: ``(B,)`` int64; ``ref_labels``: ``(M,)`` int64.
        table: the anchors' :class:`~tripletkit.pairs.PositiveTable` (own copies excluded).
        dim: the embedding dimension.
        cutoff, nonzero_loss_cutoff: see :func:`distance_weighted_probabilities`.
        generator: the random generator of the draws (for reproducible runs).

    Returns:
        Three ``(T,)`` int64 tensors, one triplet per positive pair of an anchor that has a
        negative, sorted by anchor then positive.

    >>> from tripletkit.pairs import positive_table
    >>> d = torch.tensor([[0.0, 0.3, 0.8], [0.3, 0.0, 1.0], [0.8, 1.0, 0.0]])
    >>> labels = torch.tensor([0, 0, 1])
    >>> table = positive_table(labels, labels, torch.arange(3))
    >>> distance_weighted_triplets(d, labels, labels, table, dim=4)
    (tensor([0, 1]), tensor([1, 0]), tensor([2, 2]))
    """
    negative = labels.unsqueeze(1) != ref_labels.unsqueeze(0)
    empty = torch.empty(0, dtype=torch.int64, device=distances.device)
    has_negative = negative.any(dim=1)
    anchors = torch.nonzero((table.count > 0) & has_negative).flatten()
    if anchors.numel() == 0:
        return empty, empty, empty
    probabilities = distance_weighted_probabilities(
        distances, negative, dim, cutoff=cutoff, nonzero_loss_cutoff=nonzero_loss_cutoff
    )
    if anchors.shape[0] != probabilities.shape[0]:
        probabilities = probabilities[anchors]
    counts = table.count[anchors]
    draws = torch.multinomial(
        probabilities, int(counts.max()), replacement=True, generator=generator
    )
    used = torch.arange(draws.shape[1], device=draws.device).unsqueeze(0) < counts.unsqueeze(1)
    rows = anchors.unsqueeze(1).expand_as(draws)
    positives = table.index[anchors][:, : draws.shape[1]]
    return rows[used], positives[used], draws[used]


def _unit(x: torch.Tensor) -> torch.Tensor:
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return F.normalize(x, dim=1)


def sample_distance_weighted(
    refs: ReferenceSet,
    *,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
    generator: torch.Generator | None = None,
) -> MinedTriplets:
    """Distance-weighted triplets of checked inputs, as a :class:`MinedTriplets`.

    The embeddings are L2-normalised (graph-connected) and compared with the euclidean distance;
    the result carries the normalised tensors and their detached distance matrix.
    (:func:`tripletkit.mining.mine_distance_weighted` is the public entry point.)
    """
    unit = _unit(refs.embeddings)
    ref_unit = _unit(refs.ref_embeddings) if refs.refs_given else unit
    with torch.no_grad():
        dist = pairwise_distances_unchecked(
            unit, ref_unit if refs.refs_given else None, "euclidean"
        )
    table = refs.groups().positives(refs.labels, refs.self_ref_index)
    anchors, positives, negatives = distance_weighted_triplets(
        dist,
        refs.labels,
        refs.ref_labels,
        table,
        refs.embeddings.shape[1],
        cutoff=cutoff,
        nonzero_loss_cutoff=nonzero_loss_cutoff,
        generator=generator,
    )
    groups = refs.groups()
    num_positive = groups.positive_counts(refs.labels, refs.self_ref_index)
    return MinedTriplets(
        distances=dist,
        metric="euclidean",
        embeddings=unit,
        ref_embeddings=ref_unit,
        source=refs.embeddings,
        mining="distance-weighted",
        anchors=anchors,
        positives=positives,
        negatives=negatives,
        margin=float("nan"),
        num_valid_triplets=int((num_positive * groups.negative_counts(refs.labels)).sum()),
    )
