"""Which (anchor, reference) pairs are positives and which are negatives, from labels alone.

An anchor ``i`` and a reference item ``j`` form a

* **positive pair** when ``labels[i] == ref_labels[j]`` and ``j`` is not the anchor itself
  (``self_ref_index[i] != j``; when the anchors are mined against themselves, item ``i`` is reference
  ``i``);
* **negative pair** when ``labels[i] != ref_labels[j]``.

A valid triplet ``(a, p, n)`` is a positive pair ``(a, p)`` and a negative pair ``(a, n)``.

Two representations, for two uses:

* :func:`positive_table`: per anchor, the reference indices of its positives, padded, which costs
  O(B · max positives) instead of O(B · M). The mining kernels use it.
* :func:`pair_masks`: dense ``(B, M)`` boolean masks, for losses that look at every pair and for
  small inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "LabelGroups",
    "PositiveTable",
    "negative_counts",
    "pair_masks",
    "positive_table",
    "self_indices",
]


@dataclass(frozen=True)
class PositiveTable:
    """The positives of each anchor.

    Attributes:
        index: ``(B, P)`` int64 reference indices of each anchor's positives, ascending, padded
            with -1 at the end of each row; ``P`` is the largest number of positives of any anchor.
        count: ``(B,)`` int64 number of positives of each anchor.
    """

    index: torch.Tensor
    count: torch.Tensor


def self_indices(n: int, device: torch.device) -> torch.Tensor:
    """The ``self_ref_index`` of anchors mined against themselves: anchor ``i`` is reference ``i``."""
    return torch.arange(n, device=device)


class LabelGroups:
    """The reference labels, grouped once, to answer "which references share this label?" quickly.

    Building costs one sort of the M reference labels; each query then costs O(B log M).

    >>> groups = LabelGroups(torch.tensor([0, 1, 0]))
    >>> groups.negative_counts(torch.tensor([0, 2]))
    tensor([1, 3])
    """

    def __init__(self, ref_labels: torch.Tensor) -> None:
        self.num_refs = int(ref_labels.shape[0])
        self.ref_labels = ref_labels
        self.order = torch.argsort(ref_labels, stable=True)
        self.values, self.sizes = torch.unique_consecutive(
            ref_labels[self.order], return_counts=True
        )
        self.starts = torch.cumsum(self.sizes, 0) - self.sizes

    def _lookup(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start (in sorted order) and size of each label's group; size 0 for unseen labels."""
        if self.values.shape[0] == 0:
            zeros = torch.zeros_like(labels)
            return zeros, zeros
        group = torch.searchsorted(self.values, labels).clamp_max(self.values.shape[0] - 1)
        found = self.values[group] == labels
        size = torch.where(found, self.sizes[group], torch.zeros_like(labels))
        return self.starts[group], size

    def _self_is_positive_slot(
        self, labels: torch.Tensor, self_ref_index: torch.Tensor | None
    ) -> torch.Tensor:
        if self_ref_index is None or self.num_refs == 0:
            return torch.zeros_like(labels, dtype=torch.bool)
        has_self = self_ref_index >= 0
        same_label = self.ref_labels[self_ref_index.clamp_min(0)] == labels
        return has_self & same_label

    def negative_counts(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B,)`` int64: how many references have a label different from each anchor's."""
        return self.num_refs - self._lookup(labels)[1]

    def positive_counts(
        self, labels: torch.Tensor, self_ref_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B,)`` int64: how many positives each anchor has (its own copy excluded)."""
        size = self._lookup(labels)[1]
        return size - self._self_is_positive_slot(labels, self_ref_index).to(size.dtype)

    def positives(
        self, labels: torch.Tensor, self_ref_index: torch.Tensor | None = None
    ) -> PositiveTable:
        """The :class:`PositiveTable` of ``labels`` (see :func:`positive_table`)."""
        device = labels.device
        start, size = self._lookup(labels)
        width = int(size.max()) if size.numel() else 0
        if width == 0:
            empty = torch.empty(labels.shape[0], 0, dtype=torch.int64, device=device)
            return PositiveTable(empty, torch.zeros_like(labels))
        offsets = torch.arange(width, device=device)
        slot_valid = offsets.unsqueeze(0) < size.unsqueeze(1)
        sorted_position = (start.unsqueeze(1) + offsets.unsqueeze(0)).clamp_max(self.num_refs - 1)
        index = self.order[sorted_position]
        if self_ref_index is not None:
            slot_valid &= index != self_ref_index.unsqueeze(1)
            # Move the valid slots to the front of each row, keeping their ascending order.
            keep_order = torch.argsort((~slot_valid).to(torch.uint8), dim=1, stable=True)
            index = torch.gather(index, 1, keep_order)
            slot_valid = torch.gather(slot_valid, 1, keep_order)
        count = slot_valid.sum(dim=1)
        width = int(count.max()) if count.numel() else 0
        index = torch.where(slot_valid, index, torch.full_like(index, -1))[:, :width].contiguous()
        return PositiveTable(index, count)


def positive_table(
    labels: torch.Tensor, ref_labels: torch.Tensor, self_ref_index: torch.Tensor | None = None
) -> PositiveTable:
    """Reference indices of every anchor's positives.

    Args:
        labels: ``(B,)`` int64 anchor labels.
        ref_labels: ``(M,)`` int64 reference labels.
        self_ref_index: ``(B,)`` int64; the reference index that is the anchor itself, or -1 where
            none is. That reference is not a positive of its anchor.

    Returns:
        A :class:`PositiveTable`.

    >>> table = positive_table(torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0, 1, 0]),
    ...                        self_ref_index=torch.arange(4))
    >>> table.index
    tensor([[ 1,  3],
            [ 0,  3],
            [-1, -1],
            [ 0,  1]])
    """
    return LabelGroups(ref_labels).positives(labels, self_ref_index)


def negative_counts(labels: torch.Tensor, ref_labels: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64: how many references have a label different from each anchor's.

    >>> negative_counts(torch.tensor([0, 1]), torch.tensor([0, 0, 1]))
    tensor([1, 2])
    """
    return LabelGroups(ref_labels).negative_counts(labels)


def pair_masks(
    labels: torch.Tensor, ref_labels: torch.Tensor, self_ref_index: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``(B, M)`` boolean masks ``(positive, negative)`` of anchor-reference pairs.

    >>> pos, neg = pair_masks(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), torch.arange(3))
    >>> pos
    tensor([[False,  True, False],
            [ True, False, False],
            [False, False, False]])
    """
    same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
    positive = same.clone()
    if self_ref_index is not None:
        rows = torch.nonzero(self_ref_index >= 0).flatten()
        positive[rows, self_ref_index[rows]] = False
    return positive, ~same
