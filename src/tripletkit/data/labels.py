"""Class labels as contiguous int64 ids, with the class names kept beside them.

Manifests and image folders name classes with strings ("sneaker", "id_0042"); losses and the P×K
sampler need integers. :func:`encode_labels` maps the distinct values, sorted, to ``0..C-1`` and
returns the mapping, so every dataset in :mod:`tripletkit.data` exposes the same two attributes:
``labels`` (``(N,)`` int64 numpy array) and ``classes`` (``classes[labels[i]]`` is the original
value of item ``i``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["EncodedLabels", "encode_labels", "missing_label_rows", "require_positive_pair"]


class EncodedLabels(NamedTuple):
    """Integer ids and the class each id stands for.

    Attributes:
        ids: ``(N,)`` int64 numpy array with values in ``0..len(classes)-1``.
        classes: the distinct original values, sorted; ``classes[ids[i]]`` is item ``i``'s label.
    """

    ids: np.ndarray
    classes: list[Any]


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, (float, np.floating)):
        return math.isnan(float(value))
    return False


def missing_label_rows(values: Sequence[Any]) -> list[int]:
    """Positions of labels that are missing: ``None``, NaN or an empty string.

    >>> missing_label_rows(["a", "", None, float("nan"), 3])
    [1, 2, 3]
    """
    return [i for i, value in enumerate(values) if _is_missing(value)]


def _canonical(value: Any) -> Any:
    """Integer-valued numbers become ``int`` (``3.0`` -> ``3``); strings are left as they are."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


def encode_labels(values: Sequence[Any] | np.ndarray, name: str = "labels") -> EncodedLabels:
    """Map labels (ints, strings, integer-valued floats) to contiguous int64 ids ``0..C-1``.

    The distinct values are sorted (numbers numerically, strings alphabetically; a mix of both is
    sorted by ``str``), so the same set of labels always gets the same ids. Integer-valued floats
    (``3.0``, as pandas and Parquet produce for integer columns with gaps) become ints.

    Args:
        values: ``N`` labels.
        name: what to call the labels in error messages.

    Returns:
        :class:`EncodedLabels` ``(ids, classes)``.

    Raises:
        ValueError: a label is missing (None, NaN, empty string); the message gives the positions.

    >>> encode_labels(["shoe", "bag", "shoe"])
    EncodedLabels(ids=array([1, 0, 1]), classes=['bag', 'shoe'])
    >>> encode_labels([7, 3, 7.0]).classes
    [3, 7]
    """
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise ValueError(f"{name} has shape {values.shape}; expected a 1-D array of N labels")
    if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.integer):
        classes_array, ids = np.unique(values, return_inverse=True)
        return EncodedLabels(ids.astype(np.int64), [int(c) for c in classes_array])
    values = list(values.tolist() if isinstance(values, np.ndarray) else values)
    missing = missing_label_rows(values)
    if missing:
        shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{name} has {len(missing)} missing values (None, NaN or empty) at positions {shown}; "
            "every item needs a label"
        )
    canonical = [_canonical(v) for v in values]
    distinct = set(canonical)
    numbers = all(isinstance(v, (int, float)) for v in distinct)
    classes = sorted(distinct) if numbers else sorted(distinct, key=str)
    lookup = {c: i for i, c in enumerate(classes)}
    ids = np.fromiter((lookup[v] for v in canonical), dtype=np.int64, count=len(canonical))
    return EncodedLabels(ids, classes)


def require_positive_pair(ids: np.ndarray, source: str, column: str = "label") -> None:
    """Raise ``ValueError`` when no two items share a label (no positive pair, nothing to train).

    >>> require_positive_pair(np.array([0, 1, 1]), "toy")
    >>> require_positive_pair(np.array([0, 1, 2]), "toy")
    Traceback (most recent call last):
    ...
    ValueError: toy: every one of the 3 items has a distinct label value, so no positive pair can be formed; triplet training needs at least two items of some class (pass require_positives=False for a query/gallery set)
    """
    if ids.shape[0] and np.bincount(ids).max() < 2:
        raise ValueError(
            f"{source}: every one of the {ids.shape[0]} items has a distinct {column} value, so "
            "no positive pair can be formed; triplet training needs at least two items of some "
            "class (pass require_positives=False for a query/gallery set)"
        )
