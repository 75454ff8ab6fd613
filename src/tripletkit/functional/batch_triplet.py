"""The batch triplet loss with exact online mining, in O(B·M) memory or O(chunk·M) with chunking.

No triplet is ever materialised. The anchors' distances to the references are computed (in chunks
of anchors when a memory budget asks for it), and a per-anchor kernel
(:mod:`~tripletkit.functional.triplet_kernels_numba` on CPU,
:mod:`~tripletkit.functional.triplet_kernels_torch` elsewhere) mines every anchor's row exactly and
writes the gradient with respect to the distances by hand. The loss is a sum over anchors, so
each chunk's share of the gradient is final as soon as the chunk is mined: when a gradient is
wanted it is carried to the embeddings right there, in the forward pass, and only the ``(B, D)``
and ``(M, D)`` results are kept for the backward pass. Peak memory stays O(chunk × M), and no
distance is computed or mined twice.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tripletkit.distances import (
    DistanceFn,
    Metric,
    euclidean_grad_to_squared_,
    pairwise_distances_unchecked,
    pairwise_distances_vjp,
    resolve_distance,
)
from tripletkit.errors import NoTripletsWarning
from tripletkit.functional import triplet_kernels_torch
from tripletkit.functional.mining_modes import MINING_CODES, MINING_MODES
from tripletkit.functional.triplet_stats import TripletStats
from tripletkit.pairs import LabelGroups, PositiveTable, self_indices
from tripletkit.validation import (
    check_choice,
    check_embeddings,
    check_finite_distances,
    check_labels,
    check_nonnegative,
    check_same_dim,
)

try:  # numba is a dependency; the torch kernels cover its absence and non-CPU devices.
    from tripletkit.functional import triplet_kernels_numba
    from tripletkit.functional.triplet_kernels_numba import DENSE_MAX_POSITIVES
except ImportError:  # pragma: no cover - exercised only without numba
    triplet_kernels_numba = None
    DENSE_MAX_POSITIVES = 48

__all__ = ["BACKENDS", "CPU_TILE_ELEMENTS", "DEFAULT_CHUNK_ELEMENTS", "batch_triplet_loss"]

BACKENDS: tuple[str, ...] = ("auto", "numba", "torch")

#: Default memory budget: anchors are processed in chunks of at most this many anchor-reference
#: distances (2**24 float32 = 64 MiB per distance matrix chunk).
DEFAULT_CHUNK_ELEMENTS = 2**24
#: On the CPU the default chunks are tiles of about this many distances (8 MiB in float32): a tile
#: stays in the shared cache while it is computed, mined and its gradient applied, which measured
#: 15-30% faster at B = 4,096 than one 4,096 x 4,096 matrix. No B x B matrix exists above
#: B = 2,048.
CPU_TILE_ELEMENTS = 2**21
#: ... but at least this many anchors per tile (within DEFAULT_CHUNK_ELEMENTS): thinner tiles make
#: the (M, chunk) x (chunk, D) product of the references' gradient inefficient (B = 16,384: 256
#: rows were faster than 128).
CPU_TILE_MIN_ROWS = 256

STAT_COLUMNS = 8
(
    _LOSS_SUM,
    _SELECTED,
    _ACTIVE,
    _POS_SUM,
    _NEG_SUM,
    _NEG_COUNT,
    _POS_MAX,
    _NEG_MIN,
) = range(STAT_COLUMNS)


@dataclass(frozen=True)
class _MiningSpec:
    margin: float
    mode: int
    soft: bool
    backend: str
    dense_max: int


#: Selection modes whose picks fit this many (anchor, slot) entries keep them from the forward pass
#: and back-propagate through the picked pairs only, never touching the distance matrix again.
PICKS_BUDGET = 2**22

#: Selection modes take the dense ``"eager"`` path instead (the kernel writes the picks into a
#: ``(B, M)`` gradient, applied with two plain matrix products in the forward pass) when the picked
#: pairs would fill at least this fraction of it and it fits one chunk: measured at D = 128, sparse
#: products cost ~2.5x more per entry, e.g. semi-hard with K = 32 at B = 1,024 (6% of the pairs
#: picked): 8.4 ms sparse, 3.3 ms dense.
DENSE_PICKS_FRACTION = 1 / 32


@dataclass
class _Picks:
    """The triplets a selection mode picked: ``(anchor row, positive ref, negative ref, slope)``;
    for the euclidean metric also the picked pairs' distances (``pos_dist``, ``neg_dist``), so that
    the backward pass goes through the squared distance without gathering embedding rows."""

    rows: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor
    slope: torch.Tensor
    pos_dist: torch.Tensor | None = None
    neg_dist: torch.Tensor | None = None

    @staticmethod
    def from_kernel(
        start: int, pick_pos, pick_neg, pick_slope, dist: torch.Tensor | None = None
    ) -> _Picks:
        keep = pick_slope != 0
        local = torch.arange(pick_pos.shape[0], device=pick_pos.device).unsqueeze(1)
        local = local.expand_as(pick_pos)[keep]
        pos, neg = pick_pos[keep], pick_neg[keep]
        picks = _Picks(local + start, pos, neg, pick_slope[keep])
        if dist is not None:
            picks.pos_dist, picks.neg_dist = dist[local, pos], dist[local, neg]
        return picks

    @staticmethod
    def cat(parts: list[_Picks]) -> _Picks:
        def joined(field: str) -> torch.Tensor | None:
            tensors = [getattr(p, field) for p in parts]
            return None if tensors[0] is None else torch.cat(tensors)

        return _Picks(*(joined(f) for f in _PICKS_FIELDS))

    def to_dense(self, start: int, shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """d(loss sum)/d(dist) of a chunk whose first anchor row is ``start`` (``like``'s dtype
        and device; a pair picked twice adds up)."""
        rows = torch.cat([self.rows, self.rows]) - start
        cols = torch.cat([self.pos, self.neg])
        values = torch.cat([self.slope, -self.slope]).to(like.dtype)
        grad = torch.zeros(shape, dtype=like.dtype, device=like.device)
        return grad.index_put_((rows, cols), values, accumulate=True)


_PICKS_FIELDS = ("rows", "pos", "neg", "slope", "pos_dist", "neg_dist")


def _kernel_input(dist: torch.Tensor) -> torch.Tensor:
    work = dist.detach()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    return work.contiguous()


def _kernel_grad(
    work: torch.Tensor, want_grad: bool, grad_out: torch.Tensor | None
) -> torch.Tensor:
    """The numba kernels' gradient output: ``(c, M)`` (``grad_out`` when it fits; the kernels
    overwrite every entry), or ``(0, M)`` for no gradient."""
    if not want_grad:
        return torch.empty((0, work.shape[1]), dtype=work.dtype)
    if grad_out is not None and grad_out.shape == work.shape and grad_out.dtype == work.dtype:
        return grad_out
    return torch.empty(work.shape, dtype=work.dtype)


def _mine_ranges(
    dist: torch.Tensor,
    anchor_labels: torch.Tensor,
    ref_labels: torch.Tensor,
    table: PositiveTable,
    spec: _MiningSpec,
    want_grad: bool,
    grad_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Range modes: per-anchor statistics ``(c, STAT_COLUMNS)`` float64 and, if ``want_grad``,
    d(sum of the chunk's losses)/d(dist) (numba: written into ``grad_out`` when given)."""
    work = _kernel_input(dist)
    if spec.backend == "numba":
        stats = np.empty((work.shape[0], STAT_COLUMNS), dtype=np.float64)
        grad = _kernel_grad(work, want_grad, grad_out)
        triplet_kernels_numba.mine_ranges(
            work.numpy(),
            anchor_labels.numpy(),
            ref_labels.numpy(),
            table.index.numpy(),
            table.count.numpy(),
            spec.margin,
            spec.mode,
            spec.soft,
            spec.dense_max,
            stats,
            grad.numpy(),
        )
        return torch.from_numpy(stats), (grad if want_grad else None)
    return triplet_kernels_torch.mine_ranges(
        work,
        anchor_labels,
        ref_labels,
        table.index,
        table.count,
        spec.margin,
        spec.mode,
        spec.soft,
        want_grad,
    )


def _mine_picks(
    dist: torch.Tensor,
    anchor_labels: torch.Tensor,
    ref_labels: torch.Tensor,
    table: PositiveTable,
    spec: _MiningSpec,
    start: int,
    keep_picks: bool,
    keep_distances: bool = False,
    want_grad: bool = False,
    grad_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, _Picks | None, torch.Tensor | None]:
    """Selection modes: per-anchor statistics, if ``keep_picks`` the picked triplets (rows offset
    by ``start``; with ``keep_distances``, the picked pairs' distances too) and, if
    ``want_grad``, the picks as d(sum of the chunk's losses)/d(dist)."""
    work = _kernel_input(dist)
    grad = None
    if spec.backend == "numba":
        rows = work.shape[0]
        width = max(table.index.shape[1], 1) if spec.mode == SEMIHARD else 1
        stats = np.empty((rows, STAT_COLUMNS), dtype=np.float64)
        pick_pos = np.empty((rows, width), dtype=np.int64)
        pick_neg = np.empty((rows, width), dtype=np.int64)
        pick_slope = np.empty((rows, width), dtype=np.float64)
        grad = _kernel_grad(work, want_grad, grad_out)
        triplet_kernels_numba.mine_picks(
            work.numpy(),
            anchor_labels.numpy(),
            ref_labels.numpy(),
            table.index.numpy(),
            table.count.numpy(),
            spec.margin,
            spec.mode,
            spec.soft,
            spec.dense_max,
            stats,
            pick_pos,
            pick_neg,
            pick_slope,
            grad.numpy(),
        )
        tensors = [torch.from_numpy(a) for a in (stats, pick_pos, pick_neg, pick_slope)]
        grad = grad if want_grad else None
    else:
        tensors = triplet_kernels_torch.mine_picks(
            work,
            anchor_labels,
            ref_labels,
            table.index,
            table.count,
            spec.margin,
            spec.mode,
            spec.soft,
        )
    stats, pick_pos, pick_neg, pick_slope = tensors
    picks = None
    if keep_picks or (want_grad and grad is None):
        kept = dist.detach() if keep_distances else None
        picks = _Picks.from_kernel(start, pick_pos, pick_neg, pick_slope, kept)
    if want_grad and grad is None:
        grad = picks.to_dense(start, work.shape, work)
    return stats, (picks if keep_picks else None), grad


@dataclass
class _Plan:
    """Everything the autograd function needs besides the two embedding tensors."""

    chunks: list[tuple[int, int, PositiveTable]]
    labels: torch.Tensor
    ref_labels: torch.Tensor
    metric: str | None  # a named metric (hand-written backward), or None for ``distance_fn``
    distance_fn: DistanceFn
    spec: _MiningSpec
    dtype: torch.dtype
    # "picks": keep the picked pairs for the backward pass; "eager": apply each chunk's dense
    # gradient in the forward pass and keep only the (B, D) and (M, D) results.
    strategy: str
    want_grad: bool  # grad mode is on and an input requires grad
    input_dtypes: tuple[torch.dtype, torch.dtype]

    def distances(
        self, anchors: torch.Tensor, refs: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A chunk's distances; ``out``: a buffer to write them into (named metrics only)."""
        if self.metric is not None:
            return pairwise_distances_unchecked(anchors, refs, self.metric, out=out)
        return self.distance_fn(anchors, refs)

    def mine(self, dist, start, stop, table, want_grad, grad_out=None):
        """Statistics and (picks or dense gradient or None) of one chunk; ``grad_out``: a buffer
        for the numba kernels' dense gradient."""
        labels = self.labels[start:stop]
        if self.spec.mode in _PICK_MODES:
            keep_picks = self.strategy == "picks"
            stats, picks, grad = _mine_picks(
                dist,
                labels,
                self.ref_labels,
                table,
                self.spec,
                start,
                keep_picks,
                keep_distances=keep_picks and self.metric == "euclidean",
                want_grad=want_grad and not keep_picks,
                grad_out=grad_out,
            )
            return stats, (picks if keep_picks else grad)
        return _mine_ranges(dist, labels, self.ref_labels, table, self.spec, want_grad, grad_out)

    def dense_vjp(self, anchors, refs, grad_dist, dist, need_anchors, need_refs):
        """Gradients of a chunk's loss sum with respect to (anchors, refs), from d/d(dist)."""
        if self.metric is not None:
            return pairwise_distances_vjp(anchors, refs, grad_dist, self.metric, dist)
        with torch.enable_grad():
            anchors_leaf = anchors.detach().requires_grad_(need_anchors)
            refs_leaf = refs.detach().requires_grad_(need_refs)
            dist = self.distance_fn(anchors_leaf, refs_leaf)
            inputs = [t for t in (anchors_leaf, refs_leaf) if t.requires_grad]
            grads = list(torch.autograd.grad(dist, inputs, grad_dist.to(dist.dtype)))
        grad_anchors = grads.pop(0) if need_anchors else None
        grad_refs = grads.pop(0) if need_refs else None
        return grad_anchors, grad_refs

    def pairs_vjp(self, anchors, refs, picks: _Picks):
        """Gradients of sum(slope * (d(a, p) - d(a, n))) over the picked pairs, through a sparse
        gradient (picks that fill more of the matrix take the ``"eager"`` dense path instead)."""
        pos_grad, neg_grad, metric = picks.slope, -picks.slope, self.metric
        if picks.pos_dist is not None:  # euclidean, via D²: dL/d(D²) = dL/dD / (2D)
            pos_grad = euclidean_grad_to_squared_(pos_grad * 0.5, picks.pos_dist)
            neg_grad = euclidean_grad_to_squared_(neg_grad * 0.5, picks.neg_dist)
            metric = "squared_euclidean"
        rows = torch.cat([picks.rows, picks.rows])
        cols = torch.cat([picks.pos, picks.neg])
        values = torch.cat([pos_grad, neg_grad])
        shape = (anchors.shape[0], refs.shape[0])
        indices = torch.stack([rows, cols])
        grad = torch.sparse_coo_tensor(indices, values, shape, check_invariants=False)
        return pairwise_distances_vjp(anchors, refs, grad, metric)


_PICK_MODES = (MINING_CODES["hard"], MINING_CODES["easy-positive"], MINING_CODES["semihard"])
SEMIHARD = MINING_CODES["semihard"]


def _tile_view(tile: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    """The first ``rows`` rows of a reusable tile (None when there is none or it is too small)."""
    return tile[:rows] if tile is not None and rows <= tile.shape[0] else None


class _MinedTripletLossSum(torch.autograd.Function):
    """Sum of the mined triplet losses of all anchors, chunk by chunk (see ``_Plan.strategy``)."""

    @staticmethod
    def forward(ctx: Any, anchors: torch.Tensor, refs: torch.Tensor, plan: _Plan):
        need_anchors, need_refs = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        eager = plan.strategy == "eager" and plan.want_grad and (need_anchors or need_refs)
        chunk_stats, kept = [], []
        grad_anchors = grad_refs = None
        # The first chunk's distance and gradient tensors are reused as buffers by the later
        # (equal or smaller) chunks: nothing outlives its chunk, and a fresh multi-megabyte
        # tile per chunk costs page faults and fragments the allocator's heap.
        dist_tile = grad_tile = None
        for start, stop, table in plan.chunks:
            chunk = anchors[start:stop]
            rows = stop - start
            dist = plan.distances(chunk, refs, _tile_view(dist_tile, rows))
            if dist_tile is None and plan.metric is not None and len(plan.chunks) > 1:
                dist_tile = dist
            stats, grad_or_picks = plan.mine(
                dist, start, stop, table, eager, _tile_view(grad_tile, rows)
            )
            if (
                grad_tile is None
                and isinstance(grad_or_picks, torch.Tensor)
                and plan.spec.backend == "numba"
                and len(plan.chunks) > 1
            ):
                grad_tile = grad_or_picks
            chunk_stats.append(stats)
            if plan.strategy == "picks":
                kept.append(grad_or_picks)
            elif eager:
                # The loss is a sum: each chunk's share of the gradient is final once mined, so
                # it is applied now, while the distances are at hand, instead of recomputing
                # them (and mining again) in the backward pass.
                grad_chunk, grad_ref_part = plan.dense_vjp(
                    chunk, refs, grad_or_picks, dist, need_anchors, need_refs
                )
                del dist, grad_or_picks
                if need_anchors:
                    if grad_anchors is None:
                        grad_anchors = grad_chunk.new_zeros(anchors.shape)
                    grad_anchors[start:stop] = grad_chunk
                if need_refs:
                    grad_refs = grad_ref_part if grad_refs is None else grad_refs + grad_ref_part
        stats = torch.cat(chunk_stats)
        if plan.strategy == "picks":
            ctx.kept = _Picks.cat(kept)
            ctx.save_for_backward(anchors, refs)
        else:
            ctx.kept = (grad_anchors, grad_refs)
        ctx.plan = plan
        ctx.mark_non_differentiable(stats)
        return stats[:, _LOSS_SUM].sum().to(plan.dtype), stats

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_stats: torch.Tensor):
        # The loss is linear in the kernels' gradients: scale the (n, D) results, not (n, M).
        scale = grad_loss.to(torch.float64)
        if ctx.plan.strategy == "picks":
            anchors, refs = ctx.saved_tensors
            grads = ctx.plan.pairs_vjp(anchors, refs, ctx.kept)
            dtypes = (anchors.dtype, refs.dtype)
        else:
            grads = ctx.kept
            dtypes = ctx.plan.input_dtypes
        scaled = tuple(
            None if g is None else (g * scale.to(g.dtype)).to(dtype)
            for g, dtype in zip(grads, dtypes, strict=True)
        )
        return (*scaled, None)


def _default_chunk_size(num_refs: int, device: torch.device) -> int:
    """Anchors per chunk when the caller gives no ``chunk_size``."""
    num_refs = max(num_refs, 1)
    budget = max(1, DEFAULT_CHUNK_ELEMENTS // num_refs)
    if device.type == "cpu":
        # The minimum rows never take a chunk past the memory budget.
        return max(1, CPU_TILE_ELEMENTS // num_refs, min(CPU_TILE_MIN_ROWS, budget))
    return budget


def _resolve_backend(backend: str, device: torch.device) -> str:
    check_choice(backend, BACKENDS, "backend")
    if backend == "auto":
        return "numba" if device.type == "cpu" and triplet_kernels_numba is not None else "torch"
    if backend == "numba":
        if triplet_kernels_numba is None:
            raise ValueError("backend 'numba' needs the numba package: pip install numba")
        if device.type != "cpu":
            raise ValueError(f"backend 'numba' runs on CPU tensors only; got {device.type} tensors")
    return backend


def _aggregate(
    stats: torch.Tensor, num_valid: int, num_pos_pairs: int, per_triplet: bool
) -> TripletStats:
    column = stats.sum(dim=0)
    selected = int(column[_SELECTED])
    active = int(column[_ACTIVE])
    # Modes that select triplets by their loss (all, windows) have every selected triplet active:
    # their telling fraction is of all valid triplets. Modes that pick per anchor or pair report
    # the share of their picks that still violate the margin.
    considered = num_valid if per_triplet else selected
    neg_count = float(column[_NEG_COUNT])
    pos_max = float(stats[:, _POS_MAX].max()) if stats.shape[0] else float("nan")
    neg_min = float(stats[:, _NEG_MIN].min()) if stats.shape[0] else float("nan")
    return TripletStats(
        num_valid_triplets=num_valid,
        num_selected=selected,
        num_active=active,
        active_triplet_fraction=active / considered if considered else 0.0,
        mean_positive_distance=float(column[_POS_SUM]) / num_pos_pairs
        if num_pos_pairs
        else float("nan"),
        mean_negative_distance=float(column[_NEG_SUM]) / neg_count if neg_count else float("nan"),
        hardest_positive_distance=pos_max if pos_max > -np.inf else float("nan"),
        hardest_negative_distance=neg_min if neg_min < np.inf else float("nan"),
    )


def batch_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    margin: float = 0.2,
    mining: str = "all",
    distance: Metric | str | DistanceFn = "squared_euclidean",
    soft: bool = False,
    self_ref_index: torch.Tensor | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
    dense_max_positives: int = DENSE_MAX_POSITIVES,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TripletStats]:
    """Triplet loss over the triplets mined online from a batch, exactly, without enumerating them.

    Every anchor in ``embeddings`` is mined against the reference set (``embeddings`` itself when
    ``ref_embeddings`` is None). With ``d`` the distance, α the margin and ``[x]+ = max(x, 0)``, each
    selected triplet contributes ``[d(a,p) - d(a,n) + α]+``, or ``softplus(d(a,p) - d(a,n))`` with
    ``soft=True`` (the soft margin of Hermans et al. 2017; α then only bounds the windows). The loss
    is the mean over what the mode selects:

    * ``"all"``: every valid triplet with a loss > 0 (batch-all; with ``soft``, every valid triplet).
    * ``"hard"``: per anchor, its farthest positive and closest negative; mean over anchors with
      both (batch-hard, Hermans et al. 2017, "In Defense of the Triplet Loss").
    * ``"semihard"``: per positive pair (a, p), the closest negative with d(a,n) > d(a,p), or the
      farthest negative if none is; mean over positive pairs (FaceNet, Schroff et al. 2015, as in
      TensorFlow Addons).
    * ``"semihard-window"``: every triplet with d(a,p) < d(a,n) < d(a,p) + α.
    * ``"hard-window"``: every triplet with d(a,n) <= d(a,p).
    * ``"easy-positive"``: per anchor, its closest positive and closest negative (Xuan et al. 2020,
      "Improved Embeddings with Easy Positive Triplet Mining").

    Ties between equal distances select the reference with the lowest index. A batch with no valid
    triplet (no positive pair, or no negative) returns 0.0, still connected to the graph, and warns
    with :class:`~tripletkit.errors.NoTripletsWarning`.

    Cost: time O(B·M·(D + log P)) for B anchors, M references, P positives per anchor (the soft
    forms of ``all`` and the windows: O(B·M·P)); memory O(B·M), or O(chunk_size·M) when chunked.

    Args:
        embeddings: ``(B, D)`` float anchor embeddings.
        labels: ``(B,)`` integer labels.
        ref_embeddings: ``(M, D)`` float reference embeddings, or None for ``embeddings``.
        ref_labels: ``(M,)`` integer labels; required exactly when ``ref_embeddings`` is given.
        margin: α >= 0.
        mining: one of :data:`~tripletkit.functional.mining_modes.MINING_MODES`.
        distance: a metric name from :data:`~tripletkit.distances.METRICS`, or a function
            ``(x, y) -> (N, M)`` distances.
        soft: use the soft margin ``softplus(d_ap - d_an)`` instead of the hinge.
        self_ref_index: ``(B,)`` int64, the reference index that is each anchor's own copy (-1:
            none); it is never a positive. Defaults to ``arange(B)`` when mining against itself.
        chunk_size: anchors per chunk; None picks, on the CPU, tiles of about 2**21 distances
            (at least 256 anchors), elsewhere chunks of about 2**24. Each chunk's gradient is
            carried to the embeddings in the forward pass when one is wanted.
        backend: ``"auto"`` (numba on CPU, torch elsewhere), ``"numba"`` or ``"torch"``.
        dense_max_positives: numba kernel tuning: anchors with at most this many positives are
            mined with one vectorised pass per positive, others by binary search (same result).
        return_stats: also return a :class:`~tripletkit.functional.triplet_stats.TripletStats`.

    Returns:
        The scalar loss (float32 for half-precision inputs), and the statistics if asked.

    Example:
        >>> import torch
        >>> from tripletkit.functional import batch_triplet_loss
        >>> embeddings = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.1]])
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> loss, stats = batch_triplet_loss(embeddings, labels, margin=1.0, mining="hard",
        ...                                  return_stats=True)
        >>> round(float(loss), 4), stats.num_selected  # per anchor: 1, 0.19, 0.01, 0
        (0.3, 4)
    """
    embeddings = check_embeddings(embeddings, "embeddings")
    device = embeddings.device
    num_anchors = embeddings.shape[0]
    labels = check_labels(labels, num_anchors, device, "labels")
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError(
            "ref_embeddings and ref_labels must be given together (or both left None); got only "
            + ("ref_embeddings" if ref_labels is None else "ref_labels")
        )
    if ref_embeddings is None:
        refs, ref_labels = embeddings, labels
        if self_ref_index is None:
            self_ref_index = self_indices(num_anchors, device)
    else:
        refs = check_embeddings(ref_embeddings, "ref_embeddings")
        check_same_dim(embeddings, refs, "embeddings", "ref_embeddings")
        ref_labels = check_labels(ref_labels, refs.shape[0], device, "ref_labels")
    if self_ref_index is not None:
        self_ref_index = check_labels(self_ref_index, num_anchors, device, "self_ref_index")
        if bool((self_ref_index >= refs.shape[0]).any()):
            raise ValueError(f"self_ref_index has values >= the {refs.shape[0]} references")
    margin = check_nonnegative(margin, "margin")
    mode = MINING_CODES[check_choice(mining, MINING_MODES, "mining")]
    metric, distance_fn = resolve_distance(distance)
    if callable(distance):
        metric = None
    backend = _resolve_backend(backend, device)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}")

    groups = LabelGroups(ref_labels)
    pos_counts = groups.positive_counts(labels, self_ref_index)
    neg_counts = groups.negative_counts(labels)
    num_valid = int((pos_counts * neg_counts).sum())
    num_pos_pairs = int(pos_counts.sum())
    out_dtype = torch.promote_types(embeddings.dtype, torch.float32)
    if num_valid == 0:
        warnings.warn(
            f"no valid triplet in this batch of {num_anchors} anchors and {refs.shape[0]} "
            f"references ({num_pos_pairs} positive pairs, {int((neg_counts > 0).sum())} anchors "
            "with a negative); the loss is 0. Use a P×K sampler (tripletkit.data.PKSampler) so "
            "that every batch holds several classes with several items each.",
            NoTripletsWarning,
            stacklevel=2,
        )
        zero = (embeddings * 0).sum().to(out_dtype)
        if ref_embeddings is not None:
            zero = zero + (refs * 0).sum().to(out_dtype)
        if not return_stats:
            return zero
        nan = float("nan")
        return zero, TripletStats(0, 0, 0, 0.0, nan, nan, nan, nan)

    spec = _MiningSpec(margin, mode, bool(soft), backend, dense_max_positives)
    num_refs = refs.shape[0]
    if chunk_size is None:
        chunk_size = _default_chunk_size(num_refs, device)
    chunks = []
    for start in range(0, num_anchors, chunk_size):
        stop = min(start + chunk_size, num_anchors)
        own = None if self_ref_index is None else self_ref_index[start:stop]
        chunks.append((start, stop, groups.positives(labels[start:stop], own)))
    if mode in _PICK_MODES and metric is not None:
        width = int(pos_counts.max()) if mode == SEMIHARD else 1
        picks_fit = num_anchors * max(width, 1) <= PICKS_BUDGET
        # Two gradient entries per pick; a sparse product costs more per entry than a dense one.
        entries = 2 * (num_pos_pairs if mode == SEMIHARD else num_anchors)
        cells = num_anchors * num_refs
        dense_pays = cells <= DEFAULT_CHUNK_ELEMENTS and entries >= DENSE_PICKS_FRACTION * cells
        picks_fit = picks_fit and not dense_pays
    else:
        picks_fit = False
    want_grad = torch.is_grad_enabled() and (embeddings.requires_grad or refs.requires_grad)
    plan = _Plan(
        chunks,
        labels,
        ref_labels,
        metric,
        distance_fn,
        spec,
        out_dtype,
        "picks" if picks_fit else "eager",
        want_grad,
        (embeddings.dtype, refs.dtype),
    )
    loss_sum, stats = _MinedTripletLossSum.apply(embeddings, refs, plan)

    # A sum over every anchor's positive and negative distances is finite exactly when all are.
    check_finite_distances(stats[:, [_POS_SUM, _NEG_SUM, _LOSS_SUM]])
    summary = _aggregate(stats, num_valid, num_pos_pairs, mode not in _PICK_MODES)
    loss = loss_sum.to(out_dtype) / max(summary.num_selected, 1)
    if return_stats:
        return loss, summary
    return loss
