"""Device-generic kernels of the mined batch triplet loss, in vectorised torch operations.

The same algorithms and results as :mod:`~tripletkit.functional.triplet_kernels_numba` (see
there), for CUDA and any other device: a batched ``searchsorted`` of each negative among the
anchor's sorted positives, prefix sums for the range modes, ``scatter_reduce`` buckets for
``semihard``. Memory is O(c · M) for a chunk of c anchors; the soft forms of ``all`` and the windows
work on blocks of anchors so that their (block, P, M) tensors stay within the same budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tripletkit.functional.mining_modes import ALL, EASY_POSITIVE, HARD, SEMIHARD_WINDOW
from tripletkit.functional.soft_margin import softplus

__all__ = ["mine_picks", "mine_ranges"]

_LOSS_SUM, _SELECTED, _ACTIVE, _POS_SUM, _NEG_SUM, _NEG_COUNT, _POS_MAX, _NEG_MIN = range(8)
_SOFT_BLOCK_ELEMENTS = 2**24
_INF = float("inf")


class _Rows:
    """A chunk of anchor rows: positives, negatives and the statistics every mode reports."""

    def __init__(self, dist, anchor_labels, ref_labels, pos_index, pos_count):
        self.dist = dist
        self.num_rows, self.num_refs = dist.shape
        self.num_slots = pos_index.shape[1]
        self.pos_index = pos_index
        self.pos_count = pos_count
        self.pos_valid = torch.arange(self.num_slots, device=dist.device) < pos_count.unsqueeze(1)
        self.pos_d = dist.gather(1, pos_index.clamp_min(0))
        self.neg = anchor_labels.unsqueeze(1) != ref_labels.unsqueeze(0)
        self.has_neg = self.neg.any(dim=1)

    def stats(self) -> torch.Tensor:
        f64 = torch.float64
        dist = self.dist
        stats = torch.zeros(self.num_rows, 8, dtype=f64, device=dist.device)
        zero = torch.zeros((), dtype=dist.dtype, device=dist.device)
        stats[:, _POS_SUM] = torch.where(self.pos_valid, self.pos_d, zero).sum(1, dtype=f64)
        stats[:, _POS_MAX] = -_INF
        if self.num_slots:
            stats[:, _POS_MAX] = torch.where(self.pos_valid, self.pos_d, -_INF).amax(1).to(f64)
        stats[:, _NEG_SUM] = torch.where(self.neg, dist, zero).sum(1, dtype=f64)
        stats[:, _NEG_COUNT] = self.neg.sum(1).to(f64)
        stats[:, _NEG_MIN] = torch.where(self.neg, dist, _INF).amin(1).to(f64)
        return stats

    def sorted_positives(self):
        """Positive distances ascending (padding +inf at the end), their reference indices."""
        padded = torch.where(self.pos_valid, self.pos_d, _INF)
        pos_sorted, order = torch.sort(padded, dim=1, stable=True)
        return pos_sorted.contiguous(), self.pos_index.gather(1, order)


def _loss_and_slope(x: torch.Tensor, margin: float, soft: bool):
    """Per-triplet loss and its derivative with respect to x = d_ap - d_an."""
    if soft:
        return softplus(x), torch.sigmoid(x)
    shifted = x + margin
    return shifted.clamp_min(0), (shifted > 0).to(x.dtype)


def mine_picks(dist, anchor_labels, ref_labels, pos_index, pos_count, margin, mode, soft):
    """Selection modes: ``(stats, pick_pos, pick_neg, pick_slope)`` as the numba ``mine_picks``."""
    rows = _Rows(dist, anchor_labels, ref_labels, pos_index, pos_count)
    stats = rows.stats()
    if rows.num_slots == 0:
        empty = torch.zeros(rows.num_rows, 1, dtype=torch.int64, device=dist.device)
        return stats, empty, empty, torch.zeros(rows.num_rows, 1, dtype=torch.float64)
    neg_min_d, neg_min_arg = torch.where(rows.neg, dist, _INF).min(dim=1)
    if mode in (HARD, EASY_POSITIVE):
        if mode == HARD:
            pos_d, slot = torch.where(rows.pos_valid, rows.pos_d, -_INF).max(dim=1)
        else:
            pos_d, slot = torch.where(rows.pos_valid, rows.pos_d, _INF).min(dim=1)
        pick_pos = rows.pos_index.gather(1, slot.unsqueeze(1))
        pick_neg = neg_min_arg.unsqueeze(1)
        used = ((rows.pos_count > 0) & rows.has_neg).unsqueeze(1)
        x = (pos_d - neg_min_d).unsqueeze(1)
    else:
        # semihard: bucket every negative by the number of positives strictly below it.
        pos_sorted, pick_pos = rows.sorted_positives()
        below = torch.searchsorted(pos_sorted, dist, right=False)
        buckets = rows.num_slots + 1
        bucket_min = torch.full(
            (rows.num_rows, buckets), _INF, dtype=dist.dtype, device=dist.device
        )
        bucket_min.scatter_reduce_(1, below, torch.where(rows.neg, dist, _INF), reduce="amin")
        at_min = rows.neg & (dist == bucket_min.gather(1, below))
        refs = torch.arange(rows.num_refs, device=dist.device).expand_as(below)
        candidate = torch.where(at_min, refs, torch.full_like(refs, rows.num_refs))
        bucket_arg = torch.full((rows.num_rows, buckets), rows.num_refs, device=dist.device)
        bucket_arg.scatter_reduce_(1, below, candidate, reduce="amin")
        # Closest negative beyond positive j = min over buckets j+1..P: a suffix minimum.
        suffix_d, suffix_pos = torch.cummin(bucket_min[:, 1:].flip(1), dim=1)
        suffix_d = suffix_d.flip(1)
        suffix_arg = bucket_arg.gather(1, rows.num_slots - suffix_pos.flip(1))
        far_d, far_arg = torch.where(rows.neg, dist, -_INF).max(dim=1)
        beyond = torch.isfinite(suffix_d)
        neg_d = torch.where(beyond, suffix_d, far_d.unsqueeze(1))
        pick_neg = torch.where(beyond, suffix_arg, far_arg.unsqueeze(1))
        used = rows.pos_valid & rows.has_neg.unsqueeze(1)
        x = pos_sorted - neg_d
    x = torch.where(used, x, torch.zeros_like(x))
    loss, slope = _loss_and_slope(x, margin, soft)
    loss = torch.where(used, loss, torch.zeros_like(loss))
    stats[:, _LOSS_SUM] = loss.sum(1, dtype=torch.float64)
    stats[:, _SELECTED] = used.sum(1).to(torch.float64)
    stats[:, _ACTIVE] = (loss > 0).sum(1).to(torch.float64)
    slope = torch.where(used, slope, torch.zeros_like(slope)).to(torch.float64)
    zero_index = torch.zeros_like(pick_pos)
    pick_pos = torch.where(used, pick_pos.clamp_min(0), zero_index)
    pick_neg = torch.where(used, pick_neg, zero_index)
    return stats, pick_pos, pick_neg, slope


def _soft_range_blocks(rows: _Rows, mode: int, margin: float, pos_sorted: torch.Tensor):
    """Yield (row slice, selected (b, P, M) mask, x = d_ap - d_an) in memory-bounded blocks."""
    block = max(1, _SOFT_BLOCK_ELEMENTS // max(rows.num_slots * rows.num_refs, 1))
    for start in range(0, rows.num_rows, block):
        rs = slice(start, min(start + block, rows.num_rows))
        ps = pos_sorted[rs].unsqueeze(2)
        dn = rows.dist[rs].unsqueeze(1)
        selected = rows.pos_valid[rs].unsqueeze(2) & rows.neg[rs].unsqueeze(1)
        if mode == SEMIHARD_WINDOW:
            selected &= (ps < dn) & (dn < ps + margin)
        elif mode != ALL:  # HARD_WINDOW
            selected &= dn <= ps
        yield rs, selected, torch.where(selected, ps - dn, torch.zeros_like(dn))


def mine_ranges(
    dist, anchor_labels, ref_labels, pos_index, pos_count, margin, mode, soft, want_grad
):
    """Range modes: ``(stats, grad or None)`` as the numba ``mine_ranges``."""
    rows = _Rows(dist, anchor_labels, ref_labels, pos_index, pos_count)
    stats = rows.stats()
    grad = torch.zeros_like(dist) if want_grad else None
    if rows.num_slots == 0:
        return stats, grad
    f64 = torch.float64
    pos_sorted, pos_ref = rows.sorted_positives()
    if soft:
        pos_grad = torch.zeros_like(pos_sorted)
        for rs, selected, x in _soft_range_blocks(rows, mode, margin, pos_sorted):
            loss = torch.where(selected, softplus(x), torch.zeros_like(x))
            stats[rs, _LOSS_SUM] = loss.sum((1, 2), dtype=f64)
            stats[rs, _SELECTED] = selected.sum((1, 2)).to(f64)
            if want_grad:
                slope = torch.where(selected, torch.sigmoid(x), torch.zeros_like(x))
                grad[rs] -= slope.sum(1)
                pos_grad[rs] += slope.sum(2)
        stats[:, _ACTIVE] = stats[:, _SELECTED]
        if want_grad:
            pos_grad = torch.where(rows.pos_valid, pos_grad, torch.zeros_like(pos_grad))
            grad.scatter_add_(1, pos_ref.clamp_min(0), pos_grad)
        return stats, grad

    thresholds = (pos_sorted + margin).contiguous()
    count = rows.pos_count.unsqueeze(1).expand_as(dist)
    at_most_threshold = torch.searchsorted(thresholds, dist, right=True)
    below = torch.searchsorted(pos_sorted, dist, right=False)
    if mode == ALL:
        lo, hi = at_most_threshold, count
    elif mode == SEMIHARD_WINDOW:
        lo, hi = at_most_threshold, below
    else:  # HARD_WINDOW
        lo, hi = below, count
    width = torch.where(rows.neg, (hi - lo).clamp_min(0), torch.zeros_like(lo))
    has = width > 0
    lo = torch.where(has, lo, torch.zeros_like(lo))
    hi = torch.where(has, hi, torch.zeros_like(hi))
    stats[:, _SELECTED] = width.sum(1).to(f64)
    finite = torch.where(rows.pos_valid, thresholds, torch.zeros_like(thresholds)).to(f64)
    prefix = F.pad(torch.cumsum(finite, 1), (1, 0))
    span = prefix.gather(1, hi) - prefix.gather(1, lo) - width.to(f64) * dist.to(f64)
    stats[:, _LOSS_SUM] = torch.where(has, span, torch.zeros_like(span)).sum(1)
    # Active: loss > 0 (t_j > d_n). Only hard-window (margin 0) selects triplets with loss exactly
    # 0; they sit at the hinge's kink, where the slope is 0 as in torch.relu.
    if mode == ALL or mode == SEMIHARD_WINDOW:
        active = width
    else:
        lo = torch.where(has, torch.maximum(lo, at_most_threshold), torch.zeros_like(lo))
        active = torch.where(has, (hi - lo).clamp_min(0), torch.zeros_like(lo))
        hi = torch.where(active > 0, hi, lo)
    stats[:, _ACTIVE] = active.sum(1).to(f64)
    if want_grad:
        grad = -active.to(dist.dtype)
        ones = (active > 0).to(dist.dtype)
        diff = torch.zeros(rows.num_rows, rows.num_slots + 1, dtype=dist.dtype, device=dist.device)
        diff.scatter_add_(1, lo, ones)
        diff.scatter_add_(1, hi, -ones)
        pos_grad = torch.cumsum(diff[:, :-1], dim=1)
        pos_grad = torch.where(rows.pos_valid, pos_grad, torch.zeros_like(pos_grad))
        grad.scatter_add_(1, pos_ref.clamp_min(0), pos_grad)
    return stats, grad
