"""Statistics of one call of a triplet loss, for logging: what was mined and how far apart things are."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["TripletStats"]


@dataclass(frozen=True)
class TripletStats:
    """What one call of a triplet loss saw. Computed from the same distances as the loss.

    Attributes:
        num_valid_triplets: every (anchor, positive, negative) the labels allow.
        num_selected: what the mining used: triplets for ``all`` and the windows, anchors for
            ``hard``/``easy-positive``, positive pairs for ``semihard``.
        num_active: how many of those have a loss > 0.
        active_triplet_fraction: the share of the triplets the mining considered that have a
            loss > 0: of all valid triplets for ``all`` and the windows (which select triplets by
            their loss), of the picks for ``hard``/``semihard``/``easy-positive``. Near 1.0 with
            the loss stuck at the margin is the sign of a collapsed embedding.
        mean_positive_distance: mean d(anchor, positive) over all positive pairs.
        mean_negative_distance: mean d(anchor, negative) over all negative pairs.
        hardest_positive_distance: the largest anchor-positive distance.
        hardest_negative_distance: the smallest anchor-negative distance.
    """

    num_valid_triplets: int
    num_selected: int
    num_active: int
    active_triplet_fraction: float
    mean_positive_distance: float
    mean_negative_distance: float
    hardest_positive_distance: float
    hardest_negative_distance: float

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain dict (for loggers)."""
        return asdict(self)
