"""The k smallest ``(distance, index)`` pairs of each row, kept in a bounded heap per row (numba).

Each row owns a max-heap of its ``k`` best entries so far, ordered lexicographically by
``(distance, reference index)``: the root is the worst kept entry. A new distance is compared with
the root once; only a strictly better pair enters (``O(log k)``). After the first few tiles almost
every distance is rejected by that single comparison, and 64 adjacent distances are screened
against their roots at once with SIMD compares, so most of a tile is passed over at memory speed,
on all cores (rows are independent). Because the order is lexicographic, the result does
not depend on the order in which tiles arrive, and ties at the k-th place keep the lowest indices.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["heap_merge_tile", "sorted_heaps"]


@nb.njit(cache=True, inline="always")
def _greater(v1, i1, v2, i2) -> bool:
    return v1 > v2 or (v1 == v2 and i1 > i2)


@nb.njit(cache=True, inline="always")
def _sift_down(values, indices, position, end) -> None:
    """Restore the max-heap order below ``position`` within ``[0, end)`` (1-D views)."""
    value = values[position]
    index = indices[position]
    while True:
        child = 2 * position + 1
        if child >= end:
            break
        if child + 1 < end and _greater(
            values[child + 1], indices[child + 1], values[child], indices[child]
        ):
            child += 1
        if not _greater(values[child], indices[child], value, index):
            break
        values[position] = values[child]
        indices[position] = indices[child]
        position = child
    values[position] = value
    indices[position] = index


@nb.njit(cache=True, inline="always")
def _offer(values, indices, size, k, value, index) -> int:
    """Offer ``(value, index)`` to one row's heap (1-D views); return the new size."""
    if size < k:
        position = size
        while position > 0:
            parent = (position - 1) >> 1
            if _greater(values[parent], indices[parent], value, index):
                break
            values[position] = values[parent]
            indices[position] = indices[parent]
            position = parent
        values[position] = value
        indices[position] = index
        return size + 1
    # Full: the new pair replaces the worst (the root) and sinks to its place.
    values[0] = value
    indices[0] = index
    _sift_down(values, indices, 0, k)
    return size


#: Distances screened together before any is looked at one by one: the screen is a branch-free
#: loop over a contiguous 1-D view, which LLVM turns into SIMD compares (2-D indexing with a
#: computed offset is not vectorised: each access checks for a negative index).
_CHUNK = 64


@nb.njit(cache=True, inline="always")
def _any_within(chunk, worst) -> bool:
    """Whether some entry of ``chunk`` is not above the scalar ``worst`` (NaN counts as within)."""
    hits = 0
    for j in range(chunk.shape[0]):
        hits += not (chunk[j] > worst)
    return hits > 0


@nb.njit(cache=True, inline="always")
def _any_within_each(chunk, worst) -> bool:
    """Whether some ``chunk[j]`` is not above ``worst[j]`` (same length; NaN counts as within)."""
    hits = 0
    for j in range(chunk.shape[0]):
        hits += not (chunk[j] > worst[j])
    return hits > 0


@nb.njit(parallel=True, cache=True)
def heap_merge_tile(
    block: np.ndarray,
    transposed: bool,
    row_start: int,
    ref_start: int,
    skip_column: np.ndarray,
    heap_values: np.ndarray,
    heap_indices: np.ndarray,
    heap_sizes: np.ndarray,
) -> None:  # pragma: no cover - compiled by numba; tested through knn
    """Offer every entry of a tile to its row's heap.

    Args:
        block: ``(B, C)`` distances of heap rows ``row_start .. row_start + B`` to references
            ``ref_start .. ref_start + C``; with ``transposed``, ``(C, B)`` holding the same
            distances (a tile computed the other way round, read column by column).
        transposed: see ``block``.
        row_start: the first heap row this tile feeds.
        ref_start: reference index of the tile's first reference.
        skip_column: ``(B,)`` int64 reference (relative to ``ref_start``) to leave out of each
            row (the query itself), or -1.
        heap_values, heap_indices: ``(N, k)`` heaps, updated in place.
        heap_sizes: ``(N,)`` int64 entries in each heap, updated in place.
    """
    if transposed:
        _merge_columns(
            block, row_start, ref_start, skip_column, heap_values, heap_indices, heap_sizes
        )
        return
    rows = block.shape[0]
    cols = block.shape[1]
    k = heap_values.shape[1]
    for r in nb.prange(rows):
        row = row_start + r
        values = heap_values[row]
        indices = heap_indices[row]
        size = heap_sizes[row]
        skip = skip_column[r]
        line = block[r]
        # The worst kept entry, cached: most distances are rejected by comparing with it alone.
        full = size == k
        worst_value = values[0]
        worst_index = indices[0]
        for first in range(0, cols, _CHUNK):
            chunk = line[first : min(first + _CHUNK, cols)]
            if full and not _any_within(chunk, worst_value):
                continue
            for j in range(chunk.shape[0]):
                value = chunk[j]
                if full and value > worst_value:
                    continue
                c = first + j
                index = ref_start + c
                if (full and value == worst_value and index > worst_index) or c == skip:
                    continue
                size = _offer(values, indices, size, k, value, index)
                full = size == k
                worst_value = values[0]
                worst_index = indices[0]
        heap_sizes[row] = size


#: Heap rows fed together from a transposed tile: 256 contiguous bytes of float32 distances per
#: read (measured best on 2,048-wide tiles; narrower strips visit more memory pages per distance).
_STRIP = 64
# Stands for "no worst entry yet": no index compares greater.
_NO_INDEX = np.iinfo(np.int64).max


@nb.njit(parallel=True, cache=True)
def _merge_columns(
    block, row_start, ref_start, skip_column, heap_values, heap_indices, heap_sizes
) -> None:  # pragma: no cover - compiled by numba; tested through knn
    """:func:`heap_merge_tile` for a transposed tile: heap row ``r`` takes column ``r``.

    Reading one column at a time strides through memory (a cache miss per distance); instead each
    task owns a strip of ``_STRIP`` adjacent columns and walks the tile's rows, reading the
    strip's contiguous distances of each row and offering each to its column's heap.
    """
    cols = block.shape[0]
    rows = block.shape[1]
    k = heap_values.shape[1]
    strips = (rows + _STRIP - 1) // _STRIP
    for strip in nb.prange(strips):
        first = strip * _STRIP
        stop = min(first + _STRIP, rows)
        width = stop - first
        # Each column's worst kept entry, cached as in the row-wise loop; +inf while not full.
        worst_value = np.empty(width, dtype=heap_values.dtype)
        worst_index = np.empty(width, dtype=np.int64)
        for j in range(width):
            row = row_start + first + j
            full = heap_sizes[row] == k
            worst_value[j] = heap_values[row, 0] if full else np.inf
            worst_index[j] = heap_indices[row, 0] if full else _NO_INDEX
        skips = skip_column[first:stop]
        for c in range(cols):
            line = block[c, first:stop]
            if not _any_within_each(line, worst_value):
                continue
            index = ref_start + c
            for j in range(width):
                value = line[j]
                if value > worst_value[j] or (value == worst_value[j] and index > worst_index[j]):
                    continue
                if c == skips[j]:
                    continue
                row = row_start + first + j
                size = _offer(heap_values[row], heap_indices[row], heap_sizes[row], k, value, index)
                heap_sizes[row] = size
                if size == k:
                    worst_value[j] = heap_values[row, 0]
                    worst_index[j] = heap_indices[row, 0]


@nb.njit(parallel=True, cache=True)
def _sort_rows(values, indices) -> None:  # pragma: no cover - compiled by numba
    """Sorts each row by ``(value, index)`` in place: heapsort (heapify first, so any row works)."""
    n, k = values.shape
    for r in nb.prange(n):
        row_values = values[r]
        row_indices = indices[r]
        for position in range(k // 2 - 1, -1, -1):
            _sift_down(row_values, row_indices, position, k)
        for end in range(k - 1, 0, -1):
            value, index = row_values[0], row_indices[0]
            row_values[0], row_indices[0] = row_values[end], row_indices[end]
            row_values[end], row_indices[end] = value, index
            _sift_down(row_values, row_indices, 0, end)


def sorted_heaps(
    heap_values: np.ndarray, heap_indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's entries in ascending ``(distance, index)`` order (new arrays).

    >>> sorted_heaps(np.array([[3.0, 1.0, 1.0]]), np.array([[0, 5, 2]]))
    (array([[1., 1., 3.]]), array([[2, 5, 0]]))
    """
    values = np.array(heap_values, copy=True, order="C")
    indices = np.array(heap_indices, copy=True, order="C")
    if values.size:
        _sort_rows(values, indices)
    return values, indices
