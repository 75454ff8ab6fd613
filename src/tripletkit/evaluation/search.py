"""Exact nearest-neighbour search in bounded memory, with one rule for ties.

Every evaluation protocol ranks references by their distance to a query. Doing that with a dense
``(N, M)`` distance matrix runs out of memory long before real reference sets do (100,000 × 100,000
float32 is 40 GB), so the search here walks over *tiles*: a block of queries against a block of
references, whose distances come from :func:`tripletkit.distances.pairwise_distances_unchecked`.
The peak extra memory is a few tiles (``tile_bytes``, 32 MiB by default) plus the results; a set
searched against itself also keeps every query's running top-k (``N · k · 8`` bytes for float32,
up to 512 MiB, beyond which it is searched block by block like a separate reference set).

**Ranking rule.** References are ordered by ``(distance, reference index)``: the smaller distance
first and, between equal distances, the reference that comes first in the reference set (as
faiss's exact L2 search, which pytorch-metric-learning uses, orders them). The rule holds at the k-th position too: when several
references tie at the cut, the ones with the lowest indices are kept. With ``exclude_self`` (a set
searched against itself) query ``i`` never returns reference ``i``, even when duplicates of it sit at
distance 0.

Two ways to walk the tiles:

* :func:`knn` / :func:`iter_knn` keep the ``k`` best per query in a bounded heap per row
  (:mod:`tripletkit.evaluation.topk_kernel`, numba, all cores): a reference enters only if it beats
  the current k-th entry, so after the first tiles almost every distance costs one comparison. A
  set searched against itself computes each tile of its symmetric distance matrix once and feeds
  it to both blocks' heaps: half the matrix products.
* :func:`iter_rankings` orders *all* references for a block of queries (what mean average precision
  over the whole ranking, CMC and mINP need). It sorts ``(distance, index)`` pairs packed into one
  64-bit key for float32 distances.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tripletkit.distances import METRICS, Metric, pairwise_distances_unchecked, unit_rows
from tripletkit.evaluation.topk_kernel import heap_merge_tile, sorted_heaps
from tripletkit.validation import check_choice, check_embeddings, check_same_dim

__all__ = [
    "DEFAULT_TILE_BYTES",
    "Neighbours",
    "PairOffsets",
    "ReferenceParts",
    "as_embeddings",
    "check_pair_offsets",
    "check_reference_offsets",
    "check_reference_parts",
    "iter_knn",
    "iter_rankings",
    "knn",
]

#: Memory allowed for one tile of distances and its bookkeeping (bytes).
DEFAULT_TILE_BYTES = 32 * 2**20

# Bytes of bookkeeping per tile element, on top of the distance itself: the float32 result of the
# distance before its copy (top-k), or the sort key, the order and the relevance arrays (full
# ranking).
_TOPK_BYTES_PER_ELEMENT = 4
_RANKING_BYTES_PER_ELEMENT = 96
_MAX_REFERENCE_TILE = 32_768
# A set searched against itself keeps every row's heap (see _symmetric_knn) up to this size.
_SYMMETRIC_HEAP_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` nearest references of each query.

    Attributes:
        distances: ``(N, k)`` distances, ascending along each row (float32, or float64 for float64
            embeddings), in the metric that was searched.
        indices: ``(N, k)`` int64 reference indices, in ranking order.
    """

    distances: torch.Tensor
    indices: torch.Tensor


def as_embeddings(x: Any, name: str) -> torch.Tensor:
    """``x`` (a tensor or a numpy array) as a checked 2-D floating tensor; see ``check_embeddings``.

    >>> as_embeddings(np.zeros((2, 3), dtype=np.float32), "queries").shape
    torch.Size([2, 3])
    """
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        if not x.flags.writeable:  # e.g. read-only views of a Parquet file
            x = x.copy()
        x = torch.from_numpy(x)
    return check_embeddings(x, name).detach()


def check_reference_offsets(offsets: Any, num_references: int, name: str) -> np.ndarray | None:
    """``offsets`` as a finite ``(num_references,)`` float64 array, or ``None`` for none.

    Offsets are added to every distance to their reference before ranking (e.g. the hubness
    correction of :func:`tripletkit.evaluation.hubness.hubness_offsets`).

    >>> check_reference_offsets([0.5, -1], 2, "offsets").tolist()
    [0.5, -1.0]
    """
    if offsets is None:
        return None
    if isinstance(offsets, torch.Tensor):
        offsets = offsets.detach().cpu().numpy()
    values = np.asarray(offsets)
    if (
        values.shape != (num_references,)
        or not np.issubdtype(values.dtype, np.number)
        or np.issubdtype(values.dtype, np.complexfloating)
    ):
        raise ValueError(
            f"{name} has shape {values.shape} and dtype {values.dtype}; expected "
            f"({num_references},) real numbers, one per reference (see hubness_offsets)"
        )
    values = values.astype(np.float64)
    if not bool(np.isfinite(values).all()):
        raise ValueError(f"{name} must be finite; got NaN or Inf")
    return values


@dataclass(frozen=True)
class PairOffsets:
    """Offsets of single (query, reference) pairs (checked by :func:`check_pair_offsets`),
    sorted by query row: ``values[i]`` is added to the distance of query ``query_rows[i]`` to
    reference ``reference_rows[i]`` (a pair listed twice gets both)."""

    query_rows: np.ndarray
    reference_rows: np.ndarray
    values: np.ndarray

    def add_to(self, distances: torch.Tensor, start: int) -> None:
        """Add the offsets of queries ``start .. start + len(distances)`` to ``distances`` (the
        rows of those queries), in place."""
        first, last = np.searchsorted(self.query_rows, [start, start + distances.shape[0]])
        if first == last:
            return
        rows = torch.from_numpy(self.query_rows[first:last] - start).to(distances.device)
        columns = torch.from_numpy(self.reference_rows[first:last]).to(distances.device)
        values = torch.from_numpy(self.values[first:last]).to(distances)
        distances.index_put_((rows, columns), values, accumulate=True)

    def add_to_tile(self, block: np.ndarray, start: int, reference_start: int) -> None:
        """Add the offsets of queries ``start .. start + len(block)`` to references
        ``reference_start .. reference_start + block.shape[1]`` (a tile of distances), in
        place."""
        first, last = np.searchsorted(self.query_rows, [start, start + block.shape[0]])
        if first == last:
            return
        columns = self.reference_rows[first:last] - reference_start
        inside = (columns >= 0) & (columns < block.shape[1])
        if inside.any():
            rows = self.query_rows[first:last][inside] - start
            np.add.at(
                block, (rows, columns[inside]), self.values[first:last][inside].astype(block.dtype)
            )

    def subset(self, query_rows: np.ndarray) -> PairOffsets:
        """The offsets of the queries ``query_rows`` (distinct rows), renumbered to their
        positions in ``query_rows``."""
        position = np.full(int(self.query_rows.max(initial=-1)) + 1, -1, dtype=np.int64)
        kept_rows = query_rows[query_rows < position.shape[0]]
        position[kept_rows] = np.flatnonzero(query_rows < position.shape[0])
        new_rows = position[self.query_rows]
        keep = new_rows >= 0
        order = np.argsort(new_rows[keep], kind="stable")
        return PairOffsets(
            query_rows=new_rows[keep][order],
            reference_rows=self.reference_rows[keep][order],
            values=self.values[keep][order],
        )


def check_pair_offsets(
    pair_offsets: Any, num_queries: int, num_references: int, name: str
) -> PairOffsets | None:
    """``pair_offsets = (query_rows, reference_rows, values)``, three ``(N,)`` arrays, as a
    :class:`PairOffsets`, or ``None`` for none: rows in range, values finite.

    >>> check_pair_offsets(([1, 0], [2, 2], [0.5, -1]), 2, 3, "offsets").query_rows.tolist()
    [0, 1]
    """
    if pair_offsets is None:
        return None
    try:
        query_rows, reference_rows, values = (
            np.asarray(part.detach().cpu() if isinstance(part, torch.Tensor) else part)
            for part in pair_offsets
        )
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be (query_rows, reference_rows, values): three arrays of one length"
        ) from None
    size = query_rows.shape
    if len(size) != 1 or reference_rows.shape != size or values.shape != size:
        raise ValueError(
            f"{name} has shapes {query_rows.shape}, {reference_rows.shape} and {values.shape}; "
            "expected three (N,) arrays (query_rows, reference_rows, values)"
        )
    for rows, bound, what in (
        (query_rows, num_queries, "query_rows"),
        (reference_rows, num_references, "reference_rows"),
    ):
        if rows.size and not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"{name}: {what} must be integers; got {rows.dtype}")
        if rows.size and (rows.min() < 0 or rows.max() >= bound):
            raise ValueError(f"{name}: {what} must lie in [0, {bound - 1}]")
    if values.size and (
        not np.issubdtype(values.dtype, np.number)
        or np.issubdtype(values.dtype, np.complexfloating)
        or not bool(np.isfinite(values.astype(np.float64)).all())
    ):
        raise ValueError(f"{name}: values must be finite real numbers")
    order = np.argsort(query_rows, kind="stable")
    return PairOffsets(
        query_rows=query_rows[order].astype(np.int64),
        reference_rows=reference_rows[order].astype(np.int64),
        values=values[order].astype(np.float64),
    )


@dataclass(frozen=True)
class ReferenceParts:
    """Parts of references (checked by :func:`check_reference_parts`), sorted by reference.

    A reference with parts (a document's chunks, a list of synonyms' single words) is as far from a
    query as ``d - weight * max(d - d_part, 0)``, i.e. ``(1 - weight) * d + weight * min(d,
    d_part)``, with ``d`` its own distance and ``d_part`` its nearest part's: it matches through
    its whole or through one of its parts. A reference without parts keeps ``d`` exactly.
    """

    embeddings: torch.Tensor  # (P, D), ordered by reference
    references: np.ndarray  # (P,) int64, non-decreasing
    weight: float

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """Rows of the parts of references ``start:stop``."""
        lo, hi = np.searchsorted(self.references, [start, stop])
        return int(lo), int(hi)

    def blend(self, block: np.ndarray, part_block: np.ndarray, first: int, lo: int) -> None:
        """Lower, in place, the distances ``block`` of references ``first:`` by their parts'
        distances ``part_block`` (the parts ``lo:lo + part_block.shape[1]``)."""
        if part_block.shape[1] == 0:
            return
        owners = self.references[lo : lo + part_block.shape[1]]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        columns = owners[starts] - first
        nearest = np.minimum.reduceat(part_block, starts, axis=1)
        own = block[:, columns]
        gain = np.maximum(own - nearest, 0)
        gain *= block.dtype.type(self.weight)
        block[:, columns] = own - gain


def check_reference_parts(
    parts: Any, references: torch.Tensor, weight: Any, name: str = "reference_parts"
) -> ReferenceParts | None:
    """``parts = (part_embeddings, part_references)`` checked against ``references`` (``(M, D)``):
    ``(P, D)`` floats and ``(P,)`` integer rows in ``[0, M)``; ``weight`` in ``[0, 1]``.
    ``None`` stays ``None``.

    >>> part_embeddings = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    >>> parts = check_reference_parts((part_embeddings, [1, 0]), torch.ones(2, 2), 0.5)
    >>> parts.references.tolist(), parts.embeddings.tolist()
    ([0, 1], [[1.0, 0.0], [0.0, 1.0]])
    """
    if parts is None:
        return None
    if not isinstance(parts, (tuple, list)) or len(parts) != 2:
        raise ValueError(f"{name} must be a pair (part_embeddings, part_rows)")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(f"part_weight must be a number in [0, 1]; got {weight!r}")
    embeddings = as_embeddings(parts[0], f"{name} embeddings")
    check_same_dim(references, embeddings, "references", f"{name} embeddings")
    rows = np.asarray(parts[1])
    if rows.shape != (embeddings.shape[0],) or not (
        rows.size == 0 or np.issubdtype(rows.dtype, np.integer)
    ):
        raise ValueError(
            f"{name} rows have shape {rows.shape} and dtype {rows.dtype}; expected "
            f"({embeddings.shape[0]},) integer rows of the references, one per part"
        )
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= references.shape[0]):
        raise ValueError(f"{name} rows must be in [0, {references.shape[0] - 1}]")
    order = np.argsort(rows, kind="stable")
    # In the references' precision too (float64 if either is), on their device.
    dtype = torch.promote_types(embeddings.dtype, references.dtype)
    embeddings = embeddings[torch.from_numpy(order)].to(references.device, dtype)
    return ReferenceParts(embeddings, rows[order], float(weight))


def _check_search_inputs(
    queries: Any, references: Any, distance: str
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    check_choice(distance, METRICS, "distance")
    queries = as_embeddings(queries, "queries")
    if references is None:
        return queries, queries, True
    references = as_embeddings(references, "references")
    check_same_dim(queries, references, "queries", "references")
    return queries, references, False


def _normalized_once(
    queries: torch.Tensor, references: torch.Tensor, same: bool, distance: str
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """For the cosine distance, every row scaled to unit length here, once, instead of in each
    tile it takes part in; returns ``(queries, references, normalized)``."""
    if distance != "cosine":
        return queries, references, False
    queries = unit_rows(queries)
    return queries, queries if same else unit_rows(references), True


def _distance_dtype(queries: torch.Tensor, references: torch.Tensor) -> np.dtype:
    dtype = torch.promote_types(queries.dtype, references.dtype)
    return np.dtype(np.float64) if dtype == torch.float64 else np.dtype(np.float32)


class _TileBuffer:
    """One reusable buffer for the tiles of a search: computing each tile into fresh memory
    costs page faults that take as long as a good part of the matrix product."""

    def __init__(self) -> None:
        self.storage: torch.Tensor | None = None

    def view(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        if (
            self.storage is None
            or self.storage.dtype != dtype
            or self.storage.numel() < rows * cols
        ):
            self.storage = torch.empty(rows * cols, dtype=dtype)
        return self.storage[: rows * cols].view(rows, cols)


def _tile(
    queries: torch.Tensor,
    references: torch.Tensor,
    metric: str,
    dtype: np.dtype,
    signed_zero: bool = True,
    buffer: _TileBuffer | None = None,
    normalized: bool = False,
) -> np.ndarray:
    """Distances of a block of queries to a block of references, as a writable numpy array
    (with ``buffer``, a view of it, valid until the next tile of that buffer; ``normalized``: the
    rows come from :func:`_normalized_once`)."""
    with torch.no_grad():
        out = None
        if buffer is not None and queries.device.type == "cpu":
            compute = torch.promote_types(
                torch.promote_types(queries.dtype, references.dtype), torch.float32
            )
            out = buffer.view(queries.shape[0], references.shape[0], compute)
        block = pairwise_distances_unchecked(
            queries, references, metric, out=out, normalized=normalized
        )
    values = np.ascontiguousarray(block.cpu().numpy(), dtype=dtype)
    if not signed_zero:
        # + 0.0 turns -0.0 into +0.0, so that the two zeros rank as equal in the packed sort keys.
        values += dtype.type(0.0)
    return values


def _check_complete(indices: np.ndarray) -> None:
    if indices.size and bool((indices < 0).any()):
        raise ValueError(
            "some distances overflowed to Inf although the embeddings are finite: their magnitude "
            "is too large for the dtype. L2-normalise the embeddings (or use float64)."
        )


def _query_block_rows(columns: int, bytes_per_element: int, tile_bytes: int) -> int:
    return max(1, int(tile_bytes // (max(columns, 1) * bytes_per_element)))


def iter_knn(
    queries: Any,
    references: Any = None,
    k: int = 10,
    *,
    distance: Metric | str = "cosine",
    tile_bytes: int = DEFAULT_TILE_BYTES,
    reference_offsets: Any = None,
    reference_parts: Any = None,
    part_weight: float = 0.5,
    pair_offsets: Any = None,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Exact k nearest references, one block of queries at a time (see :func:`knn`).

    Yields:
        ``(start, stop, distances, indices)`` for queries ``start:stop``: numpy arrays of shape
        ``(stop - start, k)``. Consuming the blocks one by one keeps memory at a few tiles however
        many queries there are.

    >>> x = torch.tensor([[0.0], [1.0], [3.0]])
    >>> [(s, e, i.tolist()) for s, e, _, i in iter_knn(x, k=1, distance="euclidean")]
    [(0, 3, [[1], [0], [1]])]
    """
    queries, references, same = _check_search_inputs(queries, references, distance)
    num_refs = references.shape[0] - int(same)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k must be an integer >= 0; got {k!r}")
    if k > num_refs:
        raise ValueError(
            f"k={k} but there are only {num_refs} references to return per query"
            + (" (a set searched against itself excludes each query)" if same else "")
        )
    dtype = _distance_dtype(queries, references)
    offsets = check_reference_offsets(reference_offsets, references.shape[0], "reference_offsets")
    if offsets is not None:
        offsets = offsets.astype(dtype)
    parts = check_reference_parts(reference_parts, references, part_weight)
    pairs = check_pair_offsets(pair_offsets, queries.shape[0], references.shape[0], "pair_offsets")
    k = int(k)
    n = queries.shape[0]
    if k == 0 or n == 0:
        for start in range(0, n, max(n, 1)):
            yield start, n, np.empty((n, 0), dtype=dtype), np.empty((n, 0), dtype=np.int64)
        return
    queries, references, normalized = _normalized_once(queries, references, same, distance)
    part_embeddings = None
    if parts is not None:
        dtype = np.promote_types(dtype, _distance_dtype(queries, parts.embeddings))
        part_embeddings = unit_rows(parts.embeddings) if normalized else parts.embeddings
    # Offsets and parts make the distances of a set to itself asymmetric: the blocked search
    # handles that.
    symmetric = same and offsets is None and parts is None and pairs is None
    if symmetric and n * k * (dtype.itemsize + 4) <= _SYMMETRIC_HEAP_BYTES:
        values, indices = _symmetric_knn(queries, k, distance, dtype, tile_bytes, normalized)
        # The consumer's per-block work (sorting, relevance, metrics) takes ~64 bytes an entry.
        rows = _query_block_rows(k, 64, tile_bytes)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            block_values, block_indices = sorted_heaps(values[start:stop], indices[start:stop])
            yield start, stop, block_values, block_indices.astype(np.int64)
        return
    ref_tile = min(max(references.shape[0], 1), _MAX_REFERENCE_TILE)
    query_rows = min(
        _query_block_rows(ref_tile, dtype.itemsize + _TOPK_BYTES_PER_ELEMENT, tile_bytes),
        _query_block_rows(k, dtype.itemsize + 8, tile_bytes),
    )
    buffer, part_buffer = _TileBuffer(), _TileBuffer()
    for start in range(0, n, query_rows):
        stop = min(start + query_rows, n)
        values = np.full((stop - start, k), np.inf, dtype=dtype)
        indices = np.full((stop - start, k), -1, dtype=np.int64)
        sizes = np.zeros(stop - start, dtype=np.int64)
        for ref_start in range(0, references.shape[0], ref_tile):
            ref_stop = min(ref_start + ref_tile, references.shape[0])
            block = _tile(
                queries[start:stop],
                references[ref_start:ref_stop],
                distance,
                dtype,
                buffer=buffer,
                normalized=normalized,
            )
            if parts is not None:
                lo, hi = parts.span(ref_start, ref_stop)
                if hi > lo:
                    part_block = _tile(
                        queries[start:stop],
                        part_embeddings[lo:hi],
                        distance,
                        dtype,
                        buffer=part_buffer,
                        normalized=normalized,
                    )
                    parts.blend(block, part_block, ref_start, lo)
            if offsets is not None:
                block += offsets[ref_start:ref_stop]
            if pairs is not None:
                pairs.add_to_tile(block, start, ref_start)
            skip = np.arange(start - ref_start, stop - ref_start, dtype=np.int64)
            if not same:
                skip[:] = -1
            heap_merge_tile(block, False, 0, ref_start, skip, values, indices, sizes)
        _check_finite(values)
        yield start, stop, *sorted_heaps(values, indices)


def _check_finite(values: np.ndarray) -> None:
    if not bool(np.isfinite(values).all()):
        _check_complete(np.array([-1]))


def _symmetric_knn(
    x: torch.Tensor, k: int, metric: str, dtype: np.dtype, tile_bytes: int, normalized: bool
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of a set within itself, computing each distance once.

    The distance matrix of a set with itself is symmetric: tile ``(I, J)`` feeds the heaps of the
    rows of block ``I`` and, read column by column, those of block ``J``, so only the tiles with
    ``J >= I`` are computed (half the matrix products of the blocked search). The heaps of all
    ``N`` rows are kept until the end: ``N k (itemsize + 4)`` bytes (int32 indices).
    """
    n = x.shape[0]
    side = max(1, min(n, math.isqrt(max(tile_bytes // (dtype.itemsize + 4), 1))))
    values = np.full((n, k), np.inf, dtype=dtype)
    indices = np.full((n, k), -1, dtype=np.int32 if n < 2**31 else np.int64)
    sizes = np.zeros(n, dtype=np.int64)
    no_skip = np.full(side, -1, dtype=np.int64)
    diagonal = np.arange(side, dtype=np.int64)
    buffer = _TileBuffer()
    for first in range(0, n, side):
        first_stop = min(first + side, n)
        rows = first_stop - first
        for second in range(first, n, side):
            second_stop = min(second + side, n)
            block = _tile(
                x[first:first_stop],
                x[second:second_stop],
                metric,
                dtype,
                buffer=buffer,
                normalized=normalized,
            )
            skip = diagonal[:rows] if second == first else no_skip[:rows]
            heap_merge_tile(block, False, first, second, skip, values, indices, sizes)
            if second != first:
                skip = no_skip[: second_stop - second]
                heap_merge_tile(block, True, second, first, skip, values, indices, sizes)
    _check_finite(values)
    return values, indices


def knn(
    queries: Any,
    references: Any = None,
    k: int = 10,
    *,
    distance: Metric | str = "cosine",
    tile_bytes: int = DEFAULT_TILE_BYTES,
    reference_offsets: Any = None,
    reference_parts: Any = None,
    part_weight: float = 0.5,
    pair_offsets: Any = None,
) -> Neighbours:
    """Exact k nearest references of every query, without an ``(N, M)`` distance matrix.

    Args:
        queries: ``(N, D)`` float embeddings (tensor or numpy array).
        references: ``(M, D)`` float embeddings; ``None`` searches ``queries`` against itself,
            excluding each query from its own results.
        k: neighbours per query, at most the number of references (``M - 1`` without a
            reference set).
        distance: one of ``tripletkit.distances.METRICS`` (smaller means closer); ``"cosine"`` suits
            L2-normalised embeddings.
        tile_bytes: memory for one tile of distances and its bookkeeping.
        reference_offsets: ``(M,)`` numbers added to every distance to each reference before
            ranking (and in the returned distances), e.g. the hubness correction of
            :func:`tripletkit.evaluation.hubness.hubness_offsets`; ``None`` for none.
        reference_parts: ``(part_embeddings, part_rows)``: ``(P, D)`` embeddings of parts of
            references (a document's chunks, each word of a list of synonyms; e.g. from
            :func:`tripletkit.evaluation.text.text_parts`) and ``(P,)`` the reference row each
            belongs to. A reference is then as far as ``(1 - part_weight) * d + part_weight *
            min(d, d_part)`` (``d`` its own distance, ``d_part`` its nearest part's; before the
            offsets), and the returned distances are these. The parts of one tile of references
            are compared at once: a reference with a huge number of parts makes a big tile.
        part_weight: in ``[0, 1]``, the weight of the nearest part.
        pair_offsets: ``(query_rows, reference_rows, values)``, three ``(N,)`` arrays:
            ``values[i]`` is added to the distance of query ``query_rows[i]`` to reference
            ``reference_rows[i]`` (after the parts and ``reference_offsets``; in the returned
            distances too), e.g. a penalty for the references a query names word for word
            (:func:`tripletkit.mining.lexical.mention_pairs`).

    Returns:
        :class:`Neighbours` ordered by ``(distance, reference index)`` (see the module docstring).

    >>> x = torch.tensor([[0.0], [1.0], [1.0], [5.0]])
    >>> result = knn(x, k=2, distance="euclidean")
    >>> result.indices.tolist()
    [[1, 2], [2, 0], [1, 0], [1, 2]]
    """
    blocks = list(
        iter_knn(
            queries,
            references,
            k,
            distance=distance,
            tile_bytes=tile_bytes,
            reference_offsets=reference_offsets,
            reference_parts=reference_parts,
            part_weight=part_weight,
            pair_offsets=pair_offsets,
        )
    )
    if not blocks:
        dtype = torch.float32
        return Neighbours(torch.empty(0, k, dtype=dtype), torch.empty(0, k, dtype=torch.int64))
    distances = np.concatenate([b[2] for b in blocks])
    indices = np.concatenate([b[3] for b in blocks])
    return Neighbours(torch.from_numpy(distances), torch.from_numpy(indices))


def _packed_order(block: np.ndarray) -> np.ndarray:
    """Column order of each row by ``(value, column)``: one sort of packed 64-bit keys.

    A float32's bit pattern, read as a signed integer with the magnitude bits of negative numbers
    flipped, orders like the float; the column fills the low 32 bits and breaks ties.
    """
    bits = block.view(np.int32)
    ordered = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    keys = ordered.astype(np.int64) << 32
    keys |= np.arange(block.shape[1], dtype=np.int64)
    keys.sort(axis=1)
    keys &= np.int64(0xFFFFFFFF)
    return keys


def _ranking_order(block: np.ndarray) -> np.ndarray:
    if block.dtype == np.float32 and block.shape[1] < 2**31:
        return _packed_order(block)
    return np.argsort(block, axis=1, kind="stable")


def iter_rankings(
    queries: Any,
    references: Any = None,
    *,
    distance: Metric | str = "cosine",
    tile_bytes: int = DEFAULT_TILE_BYTES,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Every reference ranked for each query, one block of queries at a time.

    Costs one sort of the ``M`` references per query (``O(N M log M)``): for the metrics that need
    the whole ranking (mean average precision, mINP, CMC). Memory: a block of ``B`` full rows with
    ``B · M · 96`` bytes ≤ ``tile_bytes`` (at least one row; the consumers' arrays included).

    Yields:
        ``(start, stop, order)``: ``order`` is an int64 numpy array ``(stop - start, M')`` of
        reference indices by ``(distance, index)``; ``M' = M - 1`` without a reference set (each
        query's own index is removed from its row), else ``M``.

    >>> x = torch.tensor([[0.0], [2.0], [1.0]])
    >>> [order.tolist() for _, _, order in iter_rankings(x, distance="euclidean")]
    [[[2, 1], [2, 0], [0, 1]]]
    """
    queries, references, same = _check_search_inputs(queries, references, distance)
    dtype = _distance_dtype(queries, references)
    num_refs = references.shape[0]
    queries, references, normalized = _normalized_once(queries, references, same, distance)
    query_rows = _query_block_rows(num_refs, _RANKING_BYTES_PER_ELEMENT, tile_bytes)
    ref_tile = min(max(num_refs, 1), _MAX_REFERENCE_TILE)
    for start in range(0, queries.shape[0], query_rows):
        stop = min(start + query_rows, queries.shape[0])
        block = np.empty((stop - start, num_refs), dtype=dtype)
        for ref_start in range(0, num_refs, ref_tile):
            ref_stop = min(ref_start + ref_tile, num_refs)
            block[:, ref_start:ref_stop] = _tile(
                queries[start:stop],
                references[ref_start:ref_stop],
                distance,
                dtype,
                False,
                normalized=normalized,
            )
        if not bool(np.isfinite(block).all()):
            _check_complete(np.array([-1]))
        order = _ranking_order(block)
        del block
        if same:
            own = np.arange(start, stop)[:, None]
            order = order[order != own].reshape(stop - start, num_refs - 1)
        yield start, stop, order
