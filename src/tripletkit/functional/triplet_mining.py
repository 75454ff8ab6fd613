"""The triplets each mining mode selects, as indices, from the core's exact kernels.

:func:`~tripletkit.functional.batch_triplet_loss` never materialises triplets; miners
(:mod:`tripletkit.mining`) must return them. This module gets them from the same place as the loss,
so that a miner and the loss agree to the last tie:

* selection modes (``hard``, ``semihard``, ``easy-positive``) run the core's per-anchor kernels
  (numba on CPU, torch elsewhere) and keep every triplet they pick, including those whose loss is
  already 0 (the loss's backward pass only needs the others);
* range modes (``all``, ``semihard-window``, ``hard-window``) select every triplet whose distances
  satisfy the mode's condition, in float64 as the CPU kernels compare, block by block of anchors so
  that no more than about 2**24 candidate triplets are held at once. Their output is as large as the
  selection itself: that is what was asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from tripletkit.functional import triplet_kernels_torch
from tripletkit.functional.batch_triplet import (
    DENSE_MAX_POSITIVES,
    STAT_COLUMNS,
    _kernel_input,
    _resolve_backend,
    triplet_kernels_numba,
)
from tripletkit.functional.mining_modes import (
    EASY_POSITIVE,
    HARD,
    HARD_WINDOW,
    MINING_CODES,
    MINING_MODES,
    SEMIHARD,
    SEMIHARD_WINDOW,
)
from tripletkit.pairs import PositiveTable
from tripletkit.validation import check_choice

__all__ = ["triplet_indices"]

_NEG_COUNT = 5  # the negatives-count column of the kernels' statistics
_BLOCK_ELEMENTS = 2**24


def _picked(
    dist: torch.Tensor,
    labels: torch.Tensor,
    ref_labels: torch.Tensor,
    table: PositiveTable,
    mode: int,
    margin: float,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    work = _kernel_input(dist)
    if backend == "numba":
        rows = work.shape[0]
        width = max(table.index.shape[1], 1) if mode == SEMIHARD else 1
        stats = np.empty((rows, STAT_COLUMNS), dtype=np.float64)
        pick_pos = np.empty((rows, width), dtype=np.int64)
        pick_neg = np.empty((rows, width), dtype=np.int64)
        pick_slope = np.empty((rows, width), dtype=np.float64)
        triplet_kernels_numba.mine_picks(
            work.numpy(),
            labels.numpy(),
            ref_labels.numpy(),
            table.index.numpy(),
            table.count.numpy(),
            margin,
            mode,
            False,
            DENSE_MAX_POSITIVES,
            stats,
            pick_pos,
            pick_neg,
            pick_slope,
            np.empty((0, work.shape[1]), dtype=work.numpy().dtype),  # no gradient
        )
        stats, pick_pos, pick_neg = (torch.from_numpy(a) for a in (stats, pick_pos, pick_neg))
    else:
        stats, pick_pos, pick_neg, _ = triplet_kernels_torch.mine_picks(
            work, labels, ref_labels, table.index, table.count, margin, mode, False
        )
    has_negative = stats[:, _NEG_COUNT].to(pick_pos.device) > 0
    slots = torch.arange(pick_pos.shape[1], device=pick_pos.device)
    # A slot is used when the anchor has that many positives and a negative; the kernels write the
    # pick of every used slot, whatever its loss (ordered by positive distance for semihard).
    used = (slots.unsqueeze(0) < table.count.unsqueeze(1)) & has_negative.unsqueeze(1)
    if mode != SEMIHARD:
        used = used[:, :1]
    anchors = torch.arange(pick_pos.shape[0], device=pick_pos.device).unsqueeze(1)
    return anchors.expand_as(pick_pos)[used], pick_pos[used], pick_neg[used]


def _in_range(
    dist: torch.Tensor,
    labels: torch.Tensor,
    ref_labels: torch.Tensor,
    table: PositiveTable,
    mode: int,
    margin: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    num_anchors, num_refs = dist.shape
    width = table.index.shape[1]
    empty = torch.empty(0, dtype=torch.int64, device=dist.device)
    if width == 0:
        return empty, empty, empty
    block = max(1, _BLOCK_ELEMENTS // max(width * num_refs, 1))
    slots = torch.arange(width, device=dist.device)
    parts = []
    for start in range(0, num_anchors, block):
        rows = slice(start, min(start + block, num_anchors))
        d = dist[rows].detach().to(torch.float64)
        index = table.index[rows]
        d_ap = d.gather(1, index.clamp_min(0)).unsqueeze(2)
        d_an = d.unsqueeze(1)
        if mode == SEMIHARD_WINDOW:
            selected = (d_ap < d_an) & (d_an < d_ap + margin)
        elif mode == HARD_WINDOW:
            selected = d_an <= d_ap
        else:  # ALL: the triplets with a positive hinge loss
            selected = d_an < d_ap + margin
        valid = slots.unsqueeze(0) < table.count[rows].unsqueeze(1)
        negative = labels[rows].unsqueeze(1) != ref_labels.unsqueeze(0)
        selected &= valid.unsqueeze(2) & negative.unsqueeze(1)
        anchor, slot, neg = selected.nonzero(as_tuple=True)
        parts.append((anchor + start, index[anchor, slot], neg))
    if not parts:
        return empty, empty, empty
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def triplet_indices(
    dist: torch.Tensor,
    labels: torch.Tensor,
    ref_labels: torch.Tensor,
    table: PositiveTable,
    *,
    mining: str,
    margin: float,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The triplets a mining mode of the batch triplet loss selects, as ``(anchors, pos, neg)``.

    Args:
        dist: ``(B, M)`` anchor-reference distances (read only; detached).
        labels: ``(B,)`` int64 anchor labels; ``ref_labels``: ``(M,)`` int64.
        table: the anchors' :class:`~tripletkit.pairs.PositiveTable` (own copies excluded).
        mining: one of :data:`~tripletkit.functional.mining_modes.MINING_MODES`.
        margin: α >= 0 (the hinge of ``all`` and the windows, the loss of the others).
        backend: ``"auto"``, ``"numba"`` or ``"torch"``, for the selection modes' kernels.

    Returns:
        Three ``(T,)`` int64 tensors: anchor rows, positive and negative reference rows, sorted by
        anchor (then by positive: ascending reference index, or ascending distance for
        ``semihard``; then by negative).

    >>> from tripletkit.pairs import positive_table
    >>> dist = torch.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 0.5], [3.0, 0.5, 0.0]])
    >>> labels = torch.tensor([0, 0, 1])
    >>> table = positive_table(labels, labels, torch.arange(3))
    >>> triplet_indices(dist, labels, labels, table, mining="all", margin=1.0)
    (tensor([1]), tensor([0]), tensor([2]))
    """
    mode = MINING_CODES[check_choice(mining, MINING_MODES, "mining")]
    if mode in (HARD, SEMIHARD, EASY_POSITIVE):
        backend = _resolve_backend(backend, dist.device)
        return _picked(dist, labels, ref_labels, table, mode, margin, backend)
    return _in_range(dist, labels, ref_labels, table, mode, margin)
