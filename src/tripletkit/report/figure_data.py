"""The numbers behind the report's figures and tables: pure NumPy, no plotting.

Kept apart from :mod:`.figures` so that what a picture shows can be tested without drawing it:
the training curves from ``metrics.jsonl``, the distance histograms and their overlap area, the
per-class table (worst first), the 2-D map and the retrieval gallery's queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ClassRow",
    "DistanceHistograms",
    "TrainingCurves",
    "distance_histograms",
    "even_subset",
    "gallery_queries",
    "histogram_overlap",
    "pca_2d",
    "per_class_rows",
    "training_curves",
]


@dataclass(frozen=True)
class TrainingCurves:
    """The series of the training-curves figure.

    Attributes:
        steps: ``(S,)`` optimizer step of each step record.
        loss: ``(S,)`` training loss at each step (NaN where not logged).
        active_fraction: ``(S,)`` fraction of the mined triplets that still violate the margin.
        epoch_ends: ``(E,)`` how many epochs were done at each validation (0 = before training).
        validation: ``{metric: (E,) values}`` for ``recall_at_1`` and ``map_at_r``.
    """

    steps: np.ndarray
    loss: np.ndarray
    active_fraction: np.ndarray
    epoch_ends: np.ndarray
    validation: dict[str, np.ndarray]


def _number(record: dict[str, Any], key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def training_curves(records: list[dict[str, Any]]) -> TrainingCurves:
    """Series of the records of ``metrics.jsonl`` (see :func:`tripletkit.training.run_log.read_metrics`).

    A resumed run logs some steps and epochs twice; the last record of each wins. Validation
    records are placed at the number of epochs done (epoch ``-1``, before training, at 0).

    >>> curves = training_curves([
    ...     {"kind": "epoch", "epoch": -1, "recall_at_1": 0.5, "map_at_r": 0.2},
    ...     {"kind": "step", "step": 1, "loss": 0.3, "active_triplet_fraction": 0.9},
    ...     {"kind": "epoch", "epoch": 0, "recall_at_1": 0.7, "map_at_r": 0.4},
    ... ])
    >>> curves.steps.tolist(), curves.epoch_ends.tolist(), curves.validation["map_at_r"].tolist()
    ([1], [0, 1], [0.2, 0.4])
    """
    steps: dict[int, dict[str, Any]] = {}
    epochs: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.get("kind") == "step" and isinstance(record.get("step"), int):
            steps[record["step"]] = record
        elif record.get("kind") == "epoch" and isinstance(record.get("epoch"), int):
            epochs[record["epoch"]] = record
    step_ids = sorted(steps)
    epoch_ids = sorted(epochs)
    return TrainingCurves(
        steps=np.array(step_ids, dtype=np.int64),
        loss=np.array([_number(steps[s], "loss") for s in step_ids], dtype=np.float64),
        active_fraction=np.array(
            [_number(steps[s], "active_triplet_fraction") for s in step_ids], dtype=np.float64
        ),
        epoch_ends=np.array([e + 1 for e in epoch_ids], dtype=np.int64),
        validation={
            key: np.array([_number(epochs[e], key) for e in epoch_ids], dtype=np.float64)
            for key in ("recall_at_1", "map_at_r")
        },
    )


@dataclass(frozen=True)
class DistanceHistograms:
    """Positive- and negative-pair distances binned on shared edges.

    Attributes:
        edges: ``(B + 1,)`` bin edges; positive, negative: ``(B,)`` fraction of the pairs in
            each bin (each sums to 1).
        overlap: ``sum(min(positive, negative))``: the shared area of the two normalised
            histograms, 0 (separated) to 1 (identical).
        num_positive, num_negative: pairs behind each histogram.
    """

    edges: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    overlap: float
    num_positive: int
    num_negative: int


def histogram_overlap(positive: np.ndarray, negative: np.ndarray) -> float:
    """Shared area of two histograms given as fractions per bin on the same edges.

    >>> histogram_overlap(np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.25, 0.75]))
    0.25
    """
    if positive.shape != negative.shape:
        raise ValueError(
            f"histograms must have the same bins; got shapes {positive.shape} and {negative.shape}"
        )
    return float(np.minimum(positive, negative).sum())


def distance_histograms(
    positive: Any, negative: Any, bins: int = 50, value_range: tuple[float, float] | None = None
) -> DistanceHistograms:
    """Bin positive- and negative-pair distances on the same edges and measure their overlap.

    Args:
        positive: ``(P,)`` distances of same-class pairs; negative: ``(N,)`` of different-class.
        bins: number of equal-width bins.
        value_range: ``(low, high)`` of the edges; default: the range of all the distances (pass
            one range to compare histograms before and after training on the same axis).

    >>> h = distance_histograms([0.1, 0.1, 0.3, 0.3], [0.3, 0.5, 0.5, 0.5], 3, (0.0, 0.6))
    >>> h.positive.tolist(), h.negative.tolist(), h.overlap
    ([0.5, 0.5, 0.0], [0.0, 0.25, 0.75], 0.25)
    """
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(
            f"distance histograms need positive and negative pairs; got {pos.size} and {neg.size}"
        )
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("distances contain NaN or infinity; the embeddings are not finite")
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}")
    if value_range is None:
        low = float(min(pos.min(), neg.min()))
        high = float(max(pos.max(), neg.max()))
    else:
        low, high = (float(v) for v in value_range)
    if not high > low:  # every distance equal: one bin of width 1 around it
        low, high = low - 0.5, low + 0.5
    edges = np.linspace(low, high, bins + 1)
    pos_counts = np.histogram(np.clip(pos, low, high), edges)[0] / pos.size
    neg_counts = np.histogram(np.clip(neg, low, high), edges)[0] / neg.size
    return DistanceHistograms(
        edges,
        pos_counts,
        neg_counts,
        histogram_overlap(pos_counts, neg_counts),
        int(pos.size),
        int(neg.size),
    )


@dataclass(frozen=True)
class ClassRow:
    """One row of the per-class table."""

    label: int
    name: str
    items: int
    recall_at_1: float
    map_at_r: float
    map_at_r_before: float | None


def per_class_rows(
    per_class: dict[str, dict[int, float]],
    labels: Any,
    class_names: list[str] | None = None,
    per_class_before: dict[str, dict[int, float]] | None = None,
) -> list[ClassRow]:
    """The per-class table, worst class first: by MAP@R, then Recall@1, then label (ascending).

    Args:
        per_class: ``RetrievalEvaluation.per_class`` (``{"precision_at_1": {label: v},
            "map_at_r": {...}}``); Recall@1 is precision@1 (one relevant item is enough).
        labels: ``(N,)`` labels of the evaluated items (for the item counts).
        class_names: name of each label id, if known.
        per_class_before: the same for the untrained model (adds a "before" column).

    >>> rows = per_class_rows(
    ...     {"precision_at_1": {0: 0.9, 1: 0.5}, "map_at_r": {0: 0.8, 1: 0.3}}, [0, 0, 1, 1, 1]
    ... )
    >>> [(r.label, r.items, r.map_at_r) for r in rows]
    [(1, 3, 0.3), (0, 2, 0.8)]
    """
    label_array = np.asarray(labels).ravel()
    values, counts = np.unique(label_array, return_counts=True)
    count_of = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    recall = per_class.get("precision_at_1", {})
    mapr = per_class.get("map_at_r", {})
    before = (per_class_before or {}).get("map_at_r", {})
    rows = []
    for label in sorted(set(recall) | set(mapr)):
        name = (
            class_names[label]
            if class_names is not None and 0 <= label < len(class_names)
            else str(label)
        )
        rows.append(
            ClassRow(
                label=int(label),
                name=str(name),
                items=count_of.get(int(label), 0),
                recall_at_1=float(recall.get(label, float("nan"))),
                map_at_r=float(mapr.get(label, float("nan"))),
                map_at_r_before=float(before[label]) if label in before else None,
            )
        )

    def worst_first(row: ClassRow) -> tuple[float, float, int]:
        # NaN (never evaluated) sorts last rather than poisoning the order.
        m = row.map_at_r if np.isfinite(row.map_at_r) else np.inf
        r = row.recall_at_1 if np.isfinite(row.recall_at_1) else np.inf
        return (m, r, row.label)

    return sorted(rows, key=worst_first)


def even_subset(labels: Any, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` items drawn (seeded) evenly across the classes.

    Classes smaller than their share give their leftover share to the others.

    >>> labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    >>> np.bincount(labels[even_subset(labels, 5)]).tolist()
    [3, 2]
    """
    label_array = np.asarray(labels).ravel()
    n = label_array.shape[0]
    if limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes = np.unique(label_array)
    members = [rng.permutation(np.flatnonzero(label_array == c)) for c in classes]
    taken = [0] * len(members)
    left = limit
    while left > 0:
        open_classes = [i for i, m in enumerate(members) if taken[i] < m.size]
        share = max(left // len(open_classes), 1)
        for i in open_classes:
            extra = min(share, members[i].size - taken[i], left)
            taken[i] += extra
            left -= extra
            if left == 0:
                break
    return np.sort(np.concatenate([m[:t] for m, t in zip(members, taken, strict=True)]))


def pca_2d(embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project ``(N, D)`` embeddings on their first two principal components.

    Returns ``(points, explained)``: ``(N, 2)`` coordinates and the ``(2,)`` fraction of the
    variance each component explains. Signs are fixed so that each component's largest-magnitude
    loading is positive (the same data always gives the same picture).

    >>> points, explained = pca_2d(np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.1]]))
    >>> bool(explained[0] > 0.99)
    True
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"PCA needs a (N, D) array with N >= 2; got shape {x.shape}")
    centred = x - x.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:2]
    if components.shape[0] < 2:  # one-dimensional embeddings: a flat second axis
        components = np.vstack([components, np.zeros_like(components)])
        singular = np.concatenate([singular, [0.0]])
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    signs[signs == 0] = 1.0
    components = components * signs[:, None]
    total = float((singular**2).sum())
    explained = (singular[:2] ** 2) / total if total > 0 else np.zeros(2)
    return centred @ components.T, explained


def gallery_queries(labels: Any, count: int = 8, seed: int = 0) -> np.ndarray:
    """``count`` query indices, one class after another (round robin), seeded.

    >>> gallery_queries([0, 0, 1, 1, 2], count=4, seed=0).shape
    (4,)
    """
    label_array = np.asarray(labels).ravel()
    rng = np.random.default_rng(seed)
    pools = [
        rng.permutation(np.flatnonzero(label_array == c)).tolist() for c in np.unique(label_array)
    ]
    chosen: list[int] = []
    while len(chosen) < min(count, label_array.shape[0]):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(pool.pop())
    return np.array(chosen, dtype=np.int64)
