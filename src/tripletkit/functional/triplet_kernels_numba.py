"""CPU kernels of the mined batch triplet loss (numba, one parallel loop over anchor rows).

No triplet is enumerated. For one anchor with P positives and a row of M reference distances, the
positives' distances are sorted and ``t_j = d_ap(j) + margin`` are the thresholds.

**Range modes** (:func:`mine_ranges`: ``all``, ``semihard-window``, ``hard-window``). Negative ``n``
forms a selected triplet with positive ``j`` when ``d_n < t_j`` (all), ``d_ap(j) < d_n < t_j``
(semihard-window) or ``d_n <= d_ap(j)`` (hard-window), and the loss of the triplet is
``t_j - d_n``. The gradient with respect to the distances is dense (every selected negative gets
``-(its number of selected positives)``, every positive ``+(its number of selected negatives)``)
and is written during the same pass as the loss:

* few positives (P <= ``dense_max``): one branch-free, vectorised pass over the row per positive
  that only counts, per negative, how many positives select it (compared in the distances' own
  dtype against bounds rounded outward, so float32 rows use the full SIMD width and select
  exactly what the float64 thresholds select); one last pass turns the counts into the gradient
  and the loss's sum of distances: O(P · M) simple operations on a row in L1 cache;
* many positives: a binary search per negative gives the contiguous range ``[lo, hi)`` of sorted
  positives it is selected with; prefix sums of ``t`` give the range's loss, a difference array over
  the ranges the positives' gradients: O(M log P).

**Selection modes** (:func:`mine_picks`: ``hard``, ``easy-positive``, ``semihard``). Each anchor
picks one triplet (hard, easy-positive) or one per positive (semihard). Their gradient is sparse, so
the kernel records the picked ``(positive, negative, slope)`` and the backward pass never needs the
distance matrix again. ``semihard`` buckets every negative by how many positives lie strictly below
it; a suffix minimum over the buckets gives, for each positive, the closest negative that is still
farther (or, if none, the farthest negative).

Soft margin: ``softplus(d_ap - d_an)`` per selected pair; for the range modes a pass per positive
over the row, since softplus has no prefix sums. Ties select the lowest reference index. Per-row
statistics are written as float64 columns (``STAT_*``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from tripletkit.functional.mining_modes import (
    ALL,
    EASY_POSITIVE,
    HARD,
    HARD_WINDOW,
    SEMIHARD_WINDOW,
)

__all__ = ["DENSE_MAX_POSITIVES", "NUM_STATS", "mine_picks", "mine_ranges"]

(
    STAT_LOSS_SUM,
    STAT_SELECTED,
    STAT_ACTIVE,
    STAT_POS_SUM,
    STAT_NEG_SUM,
    STAT_NEG_COUNT,
    STAT_POS_MAX,
    STAT_NEG_MIN,
) = range(8)
NUM_STATS = 8

#: Rows at least this long are counted by binary search: a float32 count is exact below 2**24.
EXACT_COUNT_LIMIT = 2**24

#: Default switch between the per-positive vectorised passes (P <= this) and binary search.
DENSE_MAX_POSITIVES = 48

# Reassociation lets LLVM vectorise the masked sums and minima. No NaN/Inf reaches the kernels
# (inputs are checked) and a row's reduction order is fixed, so results are reproducible.
_FASTMATH = {"reassoc", "contract", "nsz"}


@nb.njit(cache=True, inline="always")
def _count_less(values, n, x):
    """Number of ``values[:n]`` (ascending) that are < x."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True, inline="always")
def _count_less_equal(values, n, x):
    """Number of ``values[:n]`` (ascending) that are <= x."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True, inline="always")
def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@nb.njit(cache=True, inline="always")
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@nb.njit(cache=True, inline="always")
def _loss_and_slope(x, margin, soft):
    """Loss of one triplet with d_ap - d_an = x, and its derivative with respect to x."""
    if soft:
        return _softplus(x), _sigmoid(x)
    shifted = x + margin
    if shifted > 0.0:
        return shifted, 1.0
    return 0.0, 0.0


@nb.njit(cache=True, inline="always")
def _one_and_zero(like):
    """1 and 0 in ``like``'s dtype."""
    unit = np.zeros(2, like.dtype)
    unit[0] = 1
    return unit[0], unit[1]


@nb.njit(cache=True, inline="always")
def _infinity_and_zero(like):
    """+inf and 0 in ``like``'s dtype."""
    unit = np.zeros(2, like.dtype)
    unit[0] = np.inf
    return unit[0], unit[1]


_MIN_LANES = 16


@nb.njit(cache=True, fastmath=_FASTMATH)
def _row_min(values):
    """The smallest value (float64), through independent lanes: LLVM does not vectorise a
    floating-point min reduction by itself, and this runs once per anchor row."""
    lanes = np.full(_MIN_LANES, np.inf, values.dtype)
    size = values.shape[0]
    whole = size - size % _MIN_LANES
    for start in range(0, whole, _MIN_LANES):
        for k in range(_MIN_LANES):
            value = values[start + k]
            lanes[k] = value if value < lanes[k] else lanes[k]
    smallest = np.inf
    for k in range(_MIN_LANES):
        smallest = min(smallest, np.float64(lanes[k]))
    for n in range(whole, size):
        smallest = min(smallest, np.float64(values[n]))
    return smallest


@nb.njit(cache=True, fastmath=_FASTMATH)
def _row_max_finite(values):
    """The largest finite value (float64; -inf if none), through independent lanes."""
    lanes = np.full(_MIN_LANES, -np.inf, values.dtype)
    infinity, _ = _infinity_and_zero(values)
    size = values.shape[0]
    whole = size - size % _MIN_LANES
    for start in range(0, whole, _MIN_LANES):
        for k in range(_MIN_LANES):
            value = values[start + k]
            lanes[k] = value if (value > lanes[k] and value < infinity) else lanes[k]
    largest = -np.inf
    for k in range(_MIN_LANES):
        largest = max(largest, np.float64(lanes[k]))
    for n in range(whole, size):
        if values[n] < infinity:
            largest = max(largest, np.float64(values[n]))
    return largest


@nb.njit(cache=True, fastmath=_FASTMATH)
def _negative_pass(d, ref_labels, anchor_label, neg, masked, out):
    """Fill the row's negative mask, ``masked`` (the negatives' distances, +inf elsewhere, so
    that a range compare alone excludes the rest) and the negative statistics; return the
    number of negatives."""
    infinity, _ = _infinity_and_zero(d)
    total = 0.0
    count = 0
    for n in range(d.shape[0]):
        is_neg = ref_labels[n] != anchor_label
        neg[n] = is_neg
        masked[n] = d[n] if is_neg else infinity
        total += np.float64(d[n]) if is_neg else 0.0
        count += 1 if is_neg else 0
    out[STAT_NEG_SUM] = total
    out[STAT_NEG_COUNT] = count
    out[STAT_NEG_MIN] = _row_min(masked)
    return count


@nb.njit(cache=True)
def _row_prelude(d, anchor_label, ref_labels, pos_row, num_pos, neg, masked, out):
    """Statistics, negative mask and the positives' distances of one row.

    Returns (number of negatives, positive distances in ``pos_row`` order).
    """
    for s in range(NUM_STATS):
        out[s] = 0.0
    num_neg = _negative_pass(d, ref_labels, anchor_label, neg, masked, out)
    pos_d = np.empty(num_pos, np.float64)
    pos_max = -np.inf
    for j in range(num_pos):
        pos_d[j] = d[pos_row[j]]
        out[STAT_POS_SUM] += pos_d[j]
        pos_max = max(pos_max, pos_d[j])
    out[STAT_POS_MAX] = pos_max
    return num_neg, pos_d


@nb.njit(cache=True)
def _sort_positives(pos_d, pos_row, num_pos):
    """Positive distances ascending and their reference indices (stable: ties by index)."""
    order = np.argsort(pos_d, kind="mergesort")
    pos_sorted = np.empty(num_pos, np.float64)
    pos_ref = np.empty(num_pos, np.int64)
    for j in range(num_pos):
        pos_sorted[j] = pos_d[order[j]]
        pos_ref[j] = pos_row[order[j]]
    return pos_sorted, pos_ref


@nb.njit(cache=True, fastmath=_FASTMATH)
def _dense_range_pass(d, neg, low, high, inclusive_high, active_below, grad, want_grad):
    """One positive: the negatives with low < d < high (or d <= high when ``inclusive_high``).

    Returns (count, sum of their distances, how many of them are < ``active_below``) and subtracts
    1 from the gradient of the active ones (a selected triplet with loss exactly 0 sits at the
    hinge's kink, where the slope is 0 as in ``torch.relu``).
    """
    count = 0
    total = 0.0
    active = 0
    for n in range(d.shape[0]):
        value = np.float64(d[n])
        upper = value <= high if inclusive_high else value < high
        selected = neg[n] and value > low and upper
        is_active = selected and value < active_below
        count += 1 if selected else 0
        total += value if selected else 0.0
        active += 1 if is_active else 0
        if want_grad:
            grad[n] -= 1.0 if is_active else 0.0
    return count, total, active


@nb.njit(cache=True)
def _selection_bounds(pos_sorted, thresholds, mode, like):
    """Per positive, ``(low, high)`` in ``like``'s dtype such that ``low < d < high`` holds for a
    value ``d`` of that dtype exactly when the mode selects it against that positive (in float64):
    ``d < t_j`` (all), ``d_ap(j) < d < t_j`` (semihard-window), ``d <= d_ap(j)`` (hard-window).
    A strict upper bound rounds up, a strict lower one down; ``d <= h`` becomes ``d < next(h)``."""
    num_pos = pos_sorted.shape[0]
    low = np.empty(num_pos, like.dtype)
    high = np.empty(num_pos, like.dtype)
    # Infinities of the same dtype: np.nextafter with a float64 direction would step in float64
    # and round straight back.
    infinity = np.empty(2, like.dtype)
    infinity[0], infinity[1] = -np.inf, np.inf
    for j in range(num_pos):
        low[j] = infinity[0]
        if mode == SEMIHARD_WINDOW:
            low[j] = pos_sorted[j]  # rounds to nearest
            if low[j] > pos_sorted[j]:
                low[j] = np.nextafter(low[j], infinity[0])
        if mode == HARD_WINDOW:
            high[j] = pos_sorted[j]
            if high[j] > pos_sorted[j]:
                high[j] = np.nextafter(high[j], infinity[0])
            high[j] = np.nextafter(high[j], infinity[1])
        else:
            high[j] = thresholds[j]
            if high[j] < thresholds[j]:
                high[j] = np.nextafter(high[j], infinity[1])
    return low, high


@nb.njit(cache=True, fastmath=_FASTMATH)
def _count_pass(masked, low, high, times, one, zero):
    """One positive: count the negatives with ``low < d < high`` and add 1 to their ``times``.

    ``masked`` holds +inf for the non-negatives, which no bound selects. ``times``, ``one``,
    ``zero`` and the count have the distances' dtype, exact for rows shorter than
    ``EXACT_COUNT_LIMIT``: the loop is two compares and two adds per element in the full SIMD
    width of that dtype (a float64 literal or an integer count would halve it)."""
    count = zero
    for n in range(masked.shape[0]):
        value = masked[n]
        hit = one if (value > low and value < high) else zero
        times[n] += hit
        count += hit
    return int(count)


@nb.njit(cache=True, fastmath=_FASTMATH)
def _settle_counts(d, times, grad, want_grad):
    """Sum of ``times[n] * d[n]`` (float64); subtracts ``times`` from the gradient."""
    total = 0.0
    for n in range(d.shape[0]):
        total += np.float64(d[n]) * times[n]
        if want_grad:
            grad[n] -= times[n]
    return total


@nb.njit(cache=True)
def _range_row(
    d,
    anchor_label,
    ref_labels,
    pos_row,
    num_pos,
    margin,
    mode,
    soft,
    dense_max,
    grad,
    neg,
    masked,
    out,
):
    """Mine one anchor row in a range mode; with ``grad`` of length > 0, write d(loss)/d(d)."""
    num_refs = d.shape[0]
    want_grad = grad.shape[0] > 0
    if want_grad:
        grad[:] = 0.0
    num_neg, pos_d = _row_prelude(d, anchor_label, ref_labels, pos_row, num_pos, neg, masked, out)
    if num_pos == 0 or num_neg == 0:
        return
    pos_sorted, pos_ref = _sort_positives(pos_d, pos_row, num_pos)
    thresholds = pos_sorted + margin
    pos_grad = np.zeros(num_pos, np.float64)

    if soft:
        for j in range(num_pos):
            for n in range(num_refs):
                if not neg[n]:
                    continue
                value = np.float64(d[n])
                if mode == SEMIHARD_WINDOW:
                    selected = pos_sorted[j] < value and value < thresholds[j]
                elif mode == HARD_WINDOW:
                    selected = value <= pos_sorted[j]
                else:
                    selected = True
                if selected:
                    x = pos_sorted[j] - value
                    out[STAT_LOSS_SUM] += _softplus(x)
                    out[STAT_SELECTED] += 1.0
                    if want_grad:
                        slope = _sigmoid(x)
                        grad[n] -= slope
                        pos_grad[j] += slope
        out[STAT_ACTIVE] = out[STAT_SELECTED]
    elif num_pos <= dense_max and num_refs < EXACT_COUNT_LIMIT:
        # Every selected triplet here has loss t_j - d_n > 0 (so it is active), except in
        # hard-window with t_j == d_ap(j) (margin 0): those positives take the general pass.
        # The others only count: times[n] = how many positives selected negative n, compared in
        # d's own precision (twice the SIMD width for float32) against bounds rounded outward.
        low_bound, high_bound = _selection_bounds(pos_sorted, thresholds, mode, d[:1])
        times = np.zeros(num_refs, d.dtype)
        one, zero = _one_and_zero(d)
        counted_loss = 0.0
        for j in range(num_pos):
            if mode == HARD_WINDOW and not thresholds[j] > pos_sorted[j]:
                count, total, active = _dense_range_pass(
                    d, neg, -np.inf, pos_sorted[j], True, thresholds[j], grad, want_grad
                )
                out[STAT_LOSS_SUM] += count * thresholds[j] - total
            else:
                count = _count_pass(masked, low_bound[j], high_bound[j], times, one, zero)
                counted_loss += count * thresholds[j]
                active = count
            out[STAT_SELECTED] += count
            out[STAT_ACTIVE] += active
            pos_grad[j] = active
        out[STAT_LOSS_SUM] += counted_loss - _settle_counts(d, times, grad, want_grad)
    else:
        prefix = np.zeros(num_pos + 1, np.float64)
        for j in range(num_pos):
            prefix[j + 1] = prefix[j] + thresholds[j]
        range_diff = np.zeros(num_pos + 1, np.float64)
        for n in range(num_refs):
            if not neg[n]:
                continue
            value = np.float64(d[n])
            if mode == ALL:
                lo = _count_less_equal(thresholds, num_pos, value)
                hi = num_pos
            elif mode == SEMIHARD_WINDOW:
                lo = _count_less_equal(thresholds, num_pos, value)
                hi = _count_less(pos_sorted, num_pos, value)
            else:  # HARD_WINDOW
                lo = _count_less(pos_sorted, num_pos, value)
                hi = num_pos
            width = hi - lo
            if width <= 0:
                continue
            out[STAT_SELECTED] += width
            out[STAT_LOSS_SUM] += (prefix[hi] - prefix[lo]) - width * value
            # Active: loss > 0, i.e. t_j > d_n; only hard-window (margin 0) selects inactive ones.
            active_lo = (
                max(lo, _count_less_equal(thresholds, num_pos, value))
                if mode == HARD_WINDOW
                else lo
            )
            out[STAT_ACTIVE] += hi - active_lo
            if want_grad and hi > active_lo:
                grad[n] = -(hi - active_lo)
                range_diff[active_lo] += 1.0
                range_diff[hi] -= 1.0
        running = 0.0
        for j in range(num_pos):
            running += range_diff[j]
            pos_grad[j] = running
    if want_grad:
        for j in range(num_pos):
            grad[pos_ref[j]] += pos_grad[j]


@nb.njit(cache=True)
def _first_index(d, neg, value):
    """Lowest index n with neg[n] and d[n] == value (-1 if none)."""
    for n in range(d.shape[0]):
        if neg[n] and d[n] == value:
            return n
    return -1


@nb.njit(cache=True)
def _pick_row(
    d,
    anchor_label,
    ref_labels,
    pos_row,
    num_pos,
    margin,
    mode,
    soft,
    dense_max,
    pick_pos,
    pick_neg,
    pick_slope,
    neg,
    masked,
    out,
):
    """Mine one anchor row in a selection mode; record the picked triplets and their slopes."""
    num_refs = d.shape[0]
    pick_pos[:] = 0
    pick_neg[:] = 0
    pick_slope[:] = 0.0
    num_neg, pos_d = _row_prelude(d, anchor_label, ref_labels, pos_row, num_pos, neg, masked, out)
    if num_pos == 0 or num_neg == 0:
        return

    if mode == HARD or mode == EASY_POSITIVE:
        # Ties keep the first (lowest reference index): pos_row is ascending.
        chosen = 0
        for j in range(1, num_pos):
            if (mode == HARD and pos_d[j] > pos_d[chosen]) or (
                mode == EASY_POSITIVE and pos_d[j] < pos_d[chosen]
            ):
                chosen = j
        neg_d = out[STAT_NEG_MIN]
        loss, slope = _loss_and_slope(pos_d[chosen] - neg_d, margin, soft)
        out[STAT_LOSS_SUM] = loss
        out[STAT_SELECTED] = 1.0
        out[STAT_ACTIVE] = 1.0 if loss > 0.0 else 0.0
        pick_pos[0] = pos_row[chosen]
        pick_neg[0] = _first_index(d, neg, neg_d)
        pick_slope[0] = slope
        return

    # semihard
    pos_sorted, pos_ref = _sort_positives(pos_d, pos_row, num_pos)
    far_d = _row_max_finite(masked)
    far_arg = _first_index(d, neg, far_d)
    # Bucket b holds the negatives with exactly b positives below them; the closest negative beyond
    # positive j is the minimum over buckets j+1..P (a bucket is a value range: no ties across).
    below = np.zeros(num_refs, d.dtype)
    one, zero = _one_and_zero(d)
    if num_pos <= dense_max and num_refs < EXACT_COUNT_LIMIT:
        # d_n > d_ap(j) counted in d's own dtype (bounds rounded down; no upper bound).
        unbounded = np.full(num_pos, np.inf)
        low, high = _selection_bounds(pos_sorted, unbounded, SEMIHARD_WINDOW, d[:1])
        for j in range(num_pos):
            _count_pass(masked, low[j], high[j], below, one, zero)
    else:
        for n in range(num_refs):
            if neg[n]:
                below[n] = _count_less(pos_sorted, num_pos, np.float64(d[n]))
    bucket_min = np.full(num_pos + 1, np.inf)
    bucket_arg = np.full(num_pos + 1, -1, np.int64)
    for n in range(num_refs):
        if neg[n]:
            value = np.float64(d[n])
            b = int(below[n])
            if value < bucket_min[b]:  # strict: ties keep the lowest index
                bucket_min[b] = value
                bucket_arg[b] = n
    running = np.inf
    running_arg = -1
    for j in range(num_pos - 1, -1, -1):
        if bucket_min[j + 1] < running:
            running = bucket_min[j + 1]
            running_arg = bucket_arg[j + 1]
        neg_d, neg_arg = (running, running_arg) if running_arg >= 0 else (far_d, far_arg)
        loss, slope = _loss_and_slope(pos_sorted[j] - neg_d, margin, soft)
        out[STAT_LOSS_SUM] += loss
        out[STAT_SELECTED] += 1.0
        out[STAT_ACTIVE] += 1.0 if loss > 0.0 else 0.0
        pick_pos[j] = pos_ref[j]
        pick_neg[j] = neg_arg
        pick_slope[j] = slope


@nb.njit(parallel=True, cache=True)
def mine_ranges(
    dist,
    anchor_labels,
    ref_labels,
    pos_index,
    pos_count,
    margin,
    mode,
    soft,
    dense_max,
    stats,
    grad,
):
    """Mine every row of ``dist`` ``(c, M)`` in a range mode.

    Fills ``stats`` ``(c, NUM_STATS)`` float64 and, when ``grad`` has ``c`` rows (not 0), writes
    d(sum of the rows' losses)/d(dist) into it (fully overwritten; same dtype as ``dist``).
    """
    want_grad = grad.shape[0] > 0
    no_grad = np.empty(0, dist.dtype)
    for i in nb.prange(dist.shape[0]):
        neg = np.empty(dist.shape[1], np.bool_)
        masked = np.empty(dist.shape[1], dist.dtype)
        _range_row(
            dist[i],
            anchor_labels[i],
            ref_labels,
            pos_index[i],
            pos_count[i],
            margin,
            mode,
            soft,
            dense_max,
            grad[i] if want_grad else no_grad,
            neg,
            masked,
            stats[i],
        )


@nb.njit(parallel=True, cache=True)
def mine_picks(
    dist,
    anchor_labels,
    ref_labels,
    pos_index,
    pos_count,
    margin,
    mode,
    soft,
    dense_max,
    stats,
    pick_pos,
    pick_neg,
    pick_slope,
    grad,
):
    """Mine every row of ``dist`` ``(c, M)`` in a selection mode.

    Fills ``stats`` and, per row, the picked triplets: ``pick_pos``/``pick_neg`` ``(c, W)`` int64
    reference indices and ``pick_slope`` ``(c, W)`` float64 d(loss)/d(d_ap - d_an), where W is 1
    (hard, easy-positive) or the width of ``pos_index`` (semihard); unused slots have slope 0.
    When ``grad`` has ``c`` rows (not 0), also writes the picks as d(sum of the rows' losses)/
    d(dist) into it (fully overwritten; same dtype as ``dist``).
    """
    want_grad = grad.shape[0] > 0
    for i in nb.prange(dist.shape[0]):
        neg = np.empty(dist.shape[1], np.bool_)
        masked = np.empty(dist.shape[1], dist.dtype)
        _pick_row(
            dist[i],
            anchor_labels[i],
            ref_labels,
            pos_index[i],
            pos_count[i],
            margin,
            mode,
            soft,
            dense_max,
            pick_pos[i],
            pick_neg[i],
            pick_slope[i],
            neg,
            masked,
            stats[i],
        )
        if want_grad:
            row = grad[i]
            row[:] = 0.0
            for w in range(pick_slope.shape[1]):
                slope = pick_slope[i, w]
                if slope != 0.0:
                    row[pick_pos[i, w]] += slope
                    row[pick_neg[i, w]] -= slope
