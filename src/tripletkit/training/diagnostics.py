"""Collapse and stall detection: the most common triplet-training failure, said in words.

Two failure signatures, both reported by users of every peer library:

* **Stalled at the margin**: the loss sits at about the margin with nearly every selected triplet
  active. All embeddings have moved to one place (d_ap ≈ d_an ≈ 0, so every loss ≈ margin) or the
  model cannot separate anything; the ranking metrics can even look normal while it happens.
* **Collapsed embeddings**: the mean distance between negatives shrinks towards 0.

:class:`CollapseDetector` watches the loss and the mining statistics of recent steps (a window, so a
single odd batch does not trigger it) and returns one message per failure, naming what to try.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["CollapseDetector", "Diagnosis"]

_ADVICE = (
    "try a lower learning rate, a smaller margin, semi-hard mining (loss.mining=semihard), "
    "or more items per class (data.k)"
)


@dataclass(frozen=True)
class Diagnosis:
    """A detected failure: a short ``kind`` and the message shown to the user."""

    kind: str
    message: str


class CollapseDetector:
    """Watch ``(loss, active fraction, mean negative distance)`` per step.

    Args:
        margin: the loss's margin α (the loss a collapsed model sits at).
        distance_scale: the typical negative distance of a healthy embedding (2.0 for squared
            euclidean on the unit sphere, 1.0 for cosine or euclidean); collapse is a mean negative
            distance below ``collapse_fraction`` of it.
        window: number of recent steps judged together.

    >>> detector = CollapseDetector(margin=0.2, distance_scale=2.0, window=3)
    >>> [detector.update(loss=0.2, active_fraction=1.0, mean_negative_distance=0.001) for _ in range(3)][-1].kind
    'collapsed'
    """

    def __init__(
        self,
        margin: float,
        distance_scale: float = 2.0,
        window: int = 20,
        collapse_fraction: float = 0.01,
    ) -> None:
        self.margin = margin
        self.distance_scale = distance_scale
        self.collapse_fraction = collapse_fraction
        self.recent: deque[tuple[float, float, float]] = deque(maxlen=window)
        self.reported: set[str] = set()

    def update(
        self, loss: float, active_fraction: float, mean_negative_distance: float
    ) -> Diagnosis | None:
        """Record one step; return a :class:`Diagnosis` the first time a failure shows."""
        self.recent.append((loss, active_fraction, mean_negative_distance))
        if len(self.recent) < self.recent.maxlen:
            return None
        losses, fractions, negatives = zip(*self.recent, strict=True)
        mean_loss = sum(losses) / len(losses)
        mean_fraction = sum(fractions) / len(fractions)
        mean_negative = sum(negatives) / len(negatives)
        if (
            mean_negative < self.collapse_fraction * self.distance_scale
            and "collapsed" not in self.reported
        ):
            self.reported.add("collapsed")
            return Diagnosis(
                "collapsed",
                f"embeddings are collapsing to a point: the mean distance between negatives is "
                f"{mean_negative:.2g} over the last {len(self.recent)} steps (healthy: about "
                f"{self.distance_scale:g}); {_ADVICE}.",
            )
        at_margin = self.margin > 0 and abs(mean_loss - self.margin) < 0.05 * self.margin
        if at_margin and mean_fraction > 0.95 and "stalled" not in self.reported:
            self.reported.add("stalled")
            return Diagnosis(
                "stalled",
                f"training has stalled at the margin: the loss has been {mean_loss:.3g} "
                f"(margin {self.margin:g}) with {100 * mean_fraction:.0f}% of the selected triplets "
                f"active over the last {len(self.recent)} steps; {_ADVICE}.",
            )
        return None
