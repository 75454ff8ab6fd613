"""The quadruplet loss (Chen et al. 2017, "Beyond triplet loss: a deep quadruplet network for person
re-identification"), exactly, in O(B·M) memory.

A quadruplet is an anchor-positive pair (a, p) and a negative pair (l, k): two items of different
classes, neither of the anchor's class. On top of the triplet term, the loss asks the anchor-positive
distance to stay below the distance of *any* such negative pair, by a second (smaller) margin:

    L = mean [d(a,p) - d(a,n) + α]+  +  mean [d(a,p) - d(l,k) + α₂]+

which also shrinks the intra-class spread relative to inter-class distances measured away from the
anchor. The negative pairs (l, k) are the entries of the anchor-reference distance matrix: l an
anchor row, k a reference (with the batch as its own references, every ordered pair of the batch).

**All quadruplets without enumerating them.** With ``t = d(a,p) + α₂``, the quadruplet sum is
``Σ_(a,p) Σ_(l,k) [t - d(l,k)]+`` over the negative pairs whose two classes both differ from the
anchor's class c. That set is every negative pair, minus those with ``class(l) = c``, minus those
with ``class(k) = c`` (disjoint, since l and k differ in class). Each of the three sums is
``count · t - (sum of the distances below t)`` within a group, read from prefix sums of the
negative-pair distances sorted by (group, distance): O(B·M log(B·M)) time and O(B·M) memory, where
enumerating quadruplets takes O(B²·M²). The triplet term is the same computation grouped by anchor.
Prefix sums are in float64, so the differences are exact to rounding of the inputs.

**Batch-hard** (``mining="hard"``): per anchor, its farthest positive, its closest negative, and
the closest negative pair of two classes other than its own. The closest pair avoiding class c is
the globally closest negative pair unless that pair involves c; so three masked minima over the
matrix answer every class.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from tripletkit.distances import DistanceFn, Metric
from tripletkit.errors import NoTripletsWarning
from tripletkit.functional.reference_set import resolve_reference_set
from tripletkit.validation import check_choice, check_nonnegative

__all__ = ["QUADRUPLET_MINING", "QuadrupletStats", "quadruplet_loss"]

#: ``"all"``: every triplet and quadruplet with a positive loss; ``"hard"``: batch-hard.
QUADRUPLET_MINING: tuple[str, ...] = ("all", "hard")


@dataclass(frozen=True)
class QuadrupletStats:
    """What one call of the quadruplet loss saw.

    Attributes:
        num_valid_triplets: every (a, p, n) the labels allow.
        num_selected_triplets: triplets the triplet term used (``all``: those with a loss > 0,
            as the batch triplet loss; ``hard``: anchors with a positive and a negative).
        num_active_triplets: of those, with a loss > 0.
        active_triplet_fraction: ``num_active_triplets / num_selected_triplets`` (0 if none).
        num_valid_quadruplets: every (a, p, l, k) the labels allow.
        num_selected_quadruplets: quadruplets the second term used (as for triplets).
        num_active_quadruplets: of those, with a loss > 0.
        active_quadruplet_fraction: ``num_active_quadruplets / num_selected_quadruplets``.
    """

    num_valid_triplets: int
    num_selected_triplets: int
    num_active_triplets: int
    active_triplet_fraction: float
    num_valid_quadruplets: int
    num_selected_quadruplets: int
    num_active_quadruplets: int
    active_quadruplet_fraction: float

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain dict (for loggers)."""
        return asdict(self)


def _grouped_hinge_sum(
    thresholds: torch.Tensor,
    threshold_group: torch.Tensor,
    values: torch.Tensor,
    value_group: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Σ_i Σ_{j: group_j = group_i, v_j < t_i} (t_i - v_j)`` (differentiable, float64), and per
    threshold the number of such j.

    Values are ranked once among themselves (``v < t`` iff rank(v) < rank(t), ranks counting the
    values strictly below), so that a single int64 key ``group · (N + 1) + rank`` sorts them by
    group and then distance, and ``searchsorted`` finds every threshold's count within its group.
    """
    num_values = values.shape[0]
    if num_values == 0 or thresholds.shape[0] == 0:
        zero = thresholds.sum() * 0 + values.sum() * 0
        return zero, torch.zeros(thresholds.shape, dtype=torch.int64, device=thresholds.device)
    by_value = torch.sort(values.detach()).values
    value_rank = torch.searchsorted(by_value, values.detach(), right=False)
    threshold_rank = torch.searchsorted(by_value, thresholds.detach(), right=False)
    span = num_values + 1
    keys, order = torch.sort(value_group * span + value_rank)
    prefix = F.pad(torch.cumsum(values[order], 0), (1, 0))
    start = torch.searchsorted(keys, threshold_group * span)
    stop = torch.searchsorted(keys, threshold_group * span + threshold_rank)
    count = stop - start
    total = (count.to(thresholds.dtype) * thresholds).sum() - (prefix[stop] - prefix[start]).sum()
    return total, count


def _empty_stats(valid_triplets: int, valid_quadruplets: int) -> QuadrupletStats:
    return QuadrupletStats(valid_triplets, 0, 0, 0.0, valid_quadruplets, 0, 0, 0.0)


def quadruplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    margin: float = 0.2,
    margin2: float = 0.1,
    mining: str = "all",
    distance: Metric | str | DistanceFn = "squared_euclidean",
    self_ref_index: torch.Tensor | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, QuadrupletStats]:
    """Quadruplet loss: the triplet term plus ``[d(a,p) - d(l,k) + α₂]+`` over negative pairs (l, k)
    of two classes other than the anchor's (see the module docstring).

    * ``mining="all"``: each term is the mean over its tuples with a loss > 0 (as batch-all
      triplet loss); the triplet term equals
      :func:`~tripletkit.functional.batch_triplet_loss` with ``mining="all"``.
    * ``mining="hard"``: per anchor, its farthest positive against its closest negative, and
      against the closest negative pair avoiding its class; each term is the mean over the anchors
      that have what it needs. Ties pick the first entry in row-major order.

    Chen et al. use a second margin smaller than the first (the anchor-positive distance need only
    be below *other* classes' negative pairs by less than it is below its own negatives).

    Memory: O(B·M) (a few arrays over the negative pairs for ``all``); time O(B·M log(B·M)).

    A batch with no valid triplet and no valid quadruplet returns 0.0 connected to the graph and
    warns with :class:`~tripletkit.errors.NoTripletsWarning`.

    Args:
        embeddings: ``(B, D)`` anchors; ``labels``: ``(B,)`` integer labels.
        ref_embeddings, ref_labels: ``(M, D)`` / ``(M,)`` references, or None for the batch.
        margin: α >= 0 of the triplet term.
        margin2: α₂ >= 0 of the quadruplet term.
        mining: ``"all"`` or ``"hard"``.
        distance: a metric name or a function ``(x, y) -> (N, M)``.
        self_ref_index: ``(B,)`` reference index of each anchor's own copy (-1: none).
        return_stats: also return :class:`QuadrupletStats`.

    Returns:
        The scalar loss (float32 for half-precision inputs), and the statistics if asked.

    Example:
        >>> embeddings = torch.tensor([[0.0], [2.0], [2.5], [3.0], [5.0]])
        >>> labels = torch.tensor([0, 0, 1, 1, 2])
        >>> loss, stats = quadruplet_loss(embeddings, labels, mining="hard", margin=1.0,
        ...                               margin2=0.5, distance="euclidean", return_stats=True)
        >>> round(float(loss), 4), stats.num_selected_quadruplets
        (1.375, 4)
    """
    margin = check_nonnegative(margin, "margin")
    margin2 = check_nonnegative(margin2, "margin2")
    check_choice(mining, QUADRUPLET_MINING, "mining")
    refs = resolve_reference_set(embeddings, labels, ref_embeddings, ref_labels, self_ref_index)
    pos_index, pos_valid = refs.positive_slots()
    pos_count = pos_valid.sum(dim=1)
    negative = refs.labels.unsqueeze(1) != refs.ref_labels.unsqueeze(0)
    neg_per_anchor = negative.sum(dim=1)
    valid_triplets = int((pos_count * neg_per_anchor).sum())

    classes, inverse = torch.unique(torch.cat([refs.labels, refs.ref_labels]), return_inverse=True)
    anchor_class, ref_class = inverse[: refs.num_anchors], inverse[refs.num_anchors :]
    num_classes = classes.shape[0]
    # Negative pairs with a row (resp. column) of each class; a quadruplet's pair avoids both.
    neg_by_row_class = torch.zeros(num_classes, dtype=torch.int64, device=negative.device)
    neg_by_row_class.index_add_(0, anchor_class, neg_per_anchor)
    neg_by_col_class = torch.zeros_like(neg_by_row_class)
    neg_by_col_class.index_add_(0, ref_class, negative.sum(dim=0))
    allowed_pairs = int(neg_per_anchor.sum()) - neg_by_row_class - neg_by_col_class
    valid_quadruplets = int((pos_count * allowed_pairs[anchor_class]).sum())

    if valid_triplets == 0 and valid_quadruplets == 0:
        warnings.warn(
            f"no valid triplet or quadruplet among {refs.num_anchors} anchors and "
            f"{refs.num_refs} references (each needs a positive pair, and a negative or a "
            "negative pair of two other classes); the loss is 0",
            NoTripletsWarning,
            stacklevel=2,
        )
        zero = refs.zero_loss()
        return (zero, _empty_stats(0, 0)) if return_stats else zero

    dist, _ = refs.distances(distance)
    pos_d = dist.gather(1, pos_index)
    if mining == "all":
        loss, stats = _all_quadruplets(
            dist, negative, pos_d, pos_valid, anchor_class, ref_class, margin, margin2
        )
    else:
        loss, stats = _hard_quadruplets(
            dist, negative, pos_d, pos_valid, anchor_class, ref_class, margin, margin2
        )
    loss = loss.to(refs.out_dtype)
    if not return_stats:
        return loss
    return loss, QuadrupletStats(
        valid_triplets,
        stats[0],
        stats[1],
        stats[1] / stats[0] if stats[0] else 0.0,
        valid_quadruplets,
        stats[2],
        stats[3],
        stats[3] / stats[2] if stats[2] else 0.0,
    )


def _all_quadruplets(dist, negative, pos_d, pos_valid, anchor_class, ref_class, margin, margin2):
    pos_rows = torch.nonzero(pos_valid, as_tuple=True)[0]
    ap = pos_d[pos_valid].to(torch.float64)
    neg_rows, neg_cols = torch.nonzero(negative, as_tuple=True)
    an = dist[negative].to(torch.float64)

    triplet_sum, triplet_count = _grouped_hinge_sum(ap + margin, pos_rows, an, neg_rows)
    num_triplets = int(triplet_count.sum())

    thresholds = ap + margin2
    cls = anchor_class[pos_rows]
    everywhere, count_all = _grouped_hinge_sum(
        thresholds, torch.zeros_like(cls), an, torch.zeros_like(neg_rows)
    )
    row_of_class, count_row = _grouped_hinge_sum(thresholds, cls, an, anchor_class[neg_rows])
    col_of_class, count_col = _grouped_hinge_sum(thresholds, cls, an, ref_class[neg_cols])
    quadruplet_sum = everywhere - row_of_class - col_of_class
    num_quadruplets = int((count_all - count_row - count_col).sum())

    loss = triplet_sum / max(num_triplets, 1) + quadruplet_sum / max(num_quadruplets, 1)
    return loss, (num_triplets, num_triplets, num_quadruplets, num_quadruplets)


def _closest_pair_avoiding(dist, negative, anchor_class, ref_class, avoided):
    """Flat index of the closest negative pair with no member of class ``avoided`` (-1: none)."""
    allowed = negative
    if avoided is not None:
        allowed = negative & (anchor_class != avoided).unsqueeze(1) & (ref_class != avoided)
    if not bool(allowed.any()):
        return -1
    return int(dist.detach().masked_fill(~allowed, float("inf")).argmin())


def _hard_quadruplets(dist, negative, pos_d, pos_valid, anchor_class, ref_class, margin, margin2):
    num_refs = dist.shape[1]
    flat = dist.reshape(-1)
    has_positive = pos_valid.any(dim=1)
    hardest_pos = pos_d.masked_fill(~pos_valid, float("-inf")).amax(dim=1)
    has_negative = negative.any(dim=1)
    hardest_neg = dist.masked_fill(~negative, float("inf")).amin(dim=1)
    used = has_positive & has_negative
    triplet_terms = (hardest_pos[used] - hardest_neg[used] + margin).clamp_min(0)

    # The closest pair avoiding class c: the global closest (classes x, y) unless c is x or y.
    closest = _closest_pair_avoiding(dist, negative, anchor_class, ref_class, None)
    pair_index = torch.full_like(anchor_class, -1)
    if closest >= 0:
        x = anchor_class[closest // num_refs]
        y = ref_class[closest % num_refs]
        not_x = _closest_pair_avoiding(dist, negative, anchor_class, ref_class, x)
        not_y = _closest_pair_avoiding(dist, negative, anchor_class, ref_class, y)
        pair_index = torch.where(anchor_class == x, not_x, pair_index.fill_(closest))
        pair_index = torch.where(anchor_class == y, not_y, pair_index)
    quad_used = has_positive & (pair_index >= 0)
    pair_d = flat[pair_index[quad_used]]
    quad_terms = (hardest_pos[quad_used] - pair_d + margin2).clamp_min(0)

    num_triplets, num_quads = int(used.sum()), int(quad_used.sum())
    loss = triplet_terms.sum() / max(num_triplets, 1) + quad_terms.sum() / max(num_quads, 1)
    active_triplets = int((triplet_terms > 0).sum())
    active_quads = int((quad_terms > 0).sum())
    return loss, (num_triplets, active_triplets, num_quads, active_quads)
