"""Statistics of one call of a pair-based loss, for logging (the sibling of ``TripletStats``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["PairStats", "pair_stats"]


@dataclass(frozen=True)
class PairStats:
    """What one call of a pair, proxy or InfoNCE loss saw. Computed from the loss's own distances.

    Attributes:
        num_positive_pairs: (anchor, reference) pairs with the same label (own copies excluded).
        num_negative_pairs: pairs with different labels.
        num_selected_pairs: the pairs the loss used (all of them, or what its mining kept).
        num_active_pairs: selected pairs that still push the embedding (each loss's docstring says
            which: a hinge above 0, a positive not ranked first, a pair kept by pair mining).
        active_pair_fraction: ``num_active_pairs / num_selected_pairs`` (0 when none selected).
        mean_positive_distance: mean distance over the positive pairs.
        mean_negative_distance: mean distance over the negative pairs.
    """

    num_positive_pairs: int
    num_negative_pairs: int
    num_selected_pairs: int
    num_active_pairs: int
    active_pair_fraction: float
    mean_positive_distance: float
    mean_negative_distance: float

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain dict (for loggers)."""
        return asdict(self)


def _mean(total: torch.Tensor, count: int) -> float:
    return float(total) / count if count else float("nan")


def pair_stats(
    positive_sum: torch.Tensor,
    num_positive: int,
    negative_sum: torch.Tensor,
    num_negative: int,
    num_selected: int,
    num_active: int,
) -> PairStats:
    """Assemble :class:`PairStats` from sums of distances and counts.

    >>> pair_stats(torch.tensor(1.0), 2, torch.tensor(6.0), 3, 5, 1).mean_negative_distance
    2.0
    """
    return PairStats(
        num_positive_pairs=int(num_positive),
        num_negative_pairs=int(num_negative),
        num_selected_pairs=int(num_selected),
        num_active_pairs=int(num_active),
        active_pair_fraction=num_active / num_selected if num_selected else 0.0,
        mean_positive_distance=_mean(positive_sum, num_positive),
        mean_negative_distance=_mean(negative_sum, num_negative),
    )
