"""Every distance tripletkit uses, in one place.

Four metrics, all "smaller means closer", so every loss and miner can treat them alike:

=====================  ===========================  ====================================
metric                 d(x, y)                      range for L2-normalised embeddings
=====================  ===========================  ====================================
``squared_euclidean``  ||x - y||²                   [0, 4]
``euclidean``          ||x - y||                    [0, 2]
``cosine``             1 - x·y / (||x|| ||y||)      [0, 2]
``dot``                -x·y                         [-1, 1]
=====================  ===========================  ====================================

Numerical safety, which hand-rolled triplet losses usually get wrong:

* ``euclidean`` takes the square root of a clamped squared distance, and its gradient is 0 (not NaN
  or Inf) where the distance is 0: duplicated rows and an item compared with itself are safe.
* Squared distances computed as ``|x|² + |y|² - 2 x·y`` can come out slightly negative through
  rounding; they are clamped at 0, and an item's distance to itself is exactly 0.
* ``cosine`` of a zero vector is defined (its normalised form is the zero vector), with finite
  gradients.
* float16 and bfloat16 inputs are computed, and returned, in float32.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from tripletkit.validation import check_choice, check_embeddings, check_same_dim

__all__ = [
    "METRICS",
    "UNIT_SPHERE_RANGES",
    "DistanceFn",
    "Metric",
    "indexed_paired_distances",
    "paired_distances",
    "pairwise_distances",
    "pairwise_distances_unchecked",
    "pairwise_distances_vjp",
    "pairwise_distances_vjp_self",
    "resolve_distance",
    "unit_rows",
    "unit_sphere_range",
]

Metric = Literal["squared_euclidean", "euclidean", "cosine", "dot"]
METRICS: tuple[str, ...] = ("squared_euclidean", "euclidean", "cosine", "dot")

#: A pairwise distance: ``(x: (N, D), y: (M, D)) -> (N, M)``, smaller meaning closer.
DistanceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Squared distances at or below this are treated as exactly 0 by the euclidean square root, so that
# the gradient there is 0 rather than 1 / (2 sqrt(rounding noise)).
_SQRT_FLOOR = 1e-12


def _as_compute_dtype(x: torch.Tensor) -> torch.Tensor:
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def _safe_sqrt(squared: torch.Tensor, *, owned: bool = False) -> torch.Tensor:
    """sqrt with 0 (value and gradient) at and below :data:`_SQRT_FLOOR`.

    ``owned``: ``squared`` is a buffer of the caller's that may be overwritten; when no gradient
    is recorded the square root is then taken in place (two passes, no new ``(N, M)`` buffers).
    """
    if owned and not (torch.is_grad_enabled() and squared.requires_grad):
        return torch.threshold_(squared, _SQRT_FLOOR, 0.0).sqrt_()
    positive = squared > _SQRT_FLOOR
    return torch.where(positive, squared.clamp_min(_SQRT_FLOOR).sqrt(), torch.zeros_like(squared))


def euclidean_grad_to_squared_(grad: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Turns ``dL/dD`` into ``2 dL/d(D²)`` in place (``grad / D``; 0 where ``D = 0``).

    The euclidean distance's backward pass through the squared one: ``dD/d(D²) = 1 / (2D)``,
    the factor 2 left to the caller (it folds into the squared distance's own factor 2). At
    ``D = 0`` the gradient is 0, as everywhere in this module. ``distances`` must come from
    :func:`pairwise_distances_unchecked` (0 or at least ``sqrt(_SQRT_FLOOR)``, so the division
    cannot overflow a finite gradient).
    """
    # D = 0 gives ±inf or NaN (0/0); both become 0, in the same pass.
    return grad.div_(distances).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def _squared_euclidean(
    x: torch.Tensor, y: torch.Tensor, same: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    x_sq = (x * x).sum(dim=1)
    y_sq = x_sq if same else (y * y).sum(dim=1)
    # addmm fuses the product with one of the norm terms: fewer passes over the (N, M) result.
    squared = torch.addmm(y_sq.unsqueeze(0), x, y.T, alpha=-2.0, out=out)
    squared = squared.add_(x_sq.unsqueeze(1)).clamp_min_(0.0)
    if same:
        squared.diagonal().zero_()
    return squared


def pairwise_distances(
    x: torch.Tensor, y: torch.Tensor | None = None, metric: Metric | str = "squared_euclidean"
) -> torch.Tensor:
    """Distances between every row of ``x`` and every row of ``y``.

    Args:
        x: ``(N, D)`` float embeddings.
        y: ``(M, D)`` float embeddings; ``None`` means ``x`` itself (then the diagonal of the
            euclidean metrics is exactly 0).
        metric: one of :data:`METRICS`.

    Returns:
        ``(N, M)`` distances, float32 for half-precision inputs, else the input dtype.

    >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    >>> pairwise_distances(x, metric="euclidean")
    tensor([[0., 5.],
            [5., 0.]])
    """
    check_choice(metric, METRICS, "metric")
    x = check_embeddings(x, "x")
    if y is not None:
        y = check_embeddings(y, "y")
        check_same_dim(x, y, "x", "y")
    return pairwise_distances_unchecked(x, y, metric)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` scaled to unit length, in the compute dtype (a zero row stays zero):
    what the cosine distance compares.

    >>> unit_rows(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]])
    """
    return F.normalize(_as_compute_dtype(x), dim=1)


def pairwise_distances_unchecked(
    x: torch.Tensor,
    y: torch.Tensor | None,
    metric: str,
    out: torch.Tensor | None = None,
    *,
    normalized: bool = False,
) -> torch.Tensor:
    """:func:`pairwise_distances` without input checks, for callers that validated already.

    ``out``: a contiguous ``(N, M)`` tensor of the result's dtype to write into, for callers that
    compute many blocks in a loop (a fresh multi-megabyte buffer per block costs page faults);
    not for inputs that require gradients. ``normalized`` (cosine only): ``x`` and ``y`` come from
    :func:`unit_rows` already, so a caller computing many blocks normalises each row once.
    """
    x = _as_compute_dtype(x)
    same = y is None
    if same:
        y = x
    else:
        y = _as_compute_dtype(y)
        if y.dtype != x.dtype:
            common = torch.promote_types(x.dtype, y.dtype)
            x, y = x.to(common), y.to(common)
    if metric == "squared_euclidean":
        return _squared_euclidean(x, y, same, out)
    if metric == "euclidean":
        return _safe_sqrt(_squared_euclidean(x, y, same, out), owned=True)
    if metric == "cosine":
        x_unit = x if normalized else unit_rows(x)
        y_unit = x_unit if same else (y if normalized else unit_rows(y))
        one = torch.ones((), dtype=x.dtype, device=x.device)
        return torch.addmm(one, x_unit, y_unit.T, alpha=-1.0, out=out)
    if out is not None:
        return torch.mm(x, y.T, out=out).neg_()
    return -(x @ y.T)


def _normalize_vjp(x: torch.Tensor, grad_unit: torch.Tensor) -> torch.Tensor:
    """Gradient through ``F.normalize(x, dim=1)`` (x / max(||x||, eps)), given d/d(unit)."""
    norm = x.norm(dim=1, keepdim=True)
    eps = 1e-12
    unit = x / norm.clamp_min(eps)
    radial = (unit * grad_unit).sum(dim=1, keepdim=True)
    return torch.where(
        norm > eps, (grad_unit - unit * radial) / norm.clamp_min(eps), grad_unit / eps
    )


def pairwise_distances_vjp(
    x: torch.Tensor,
    y: torch.Tensor,
    grad: torch.Tensor,
    metric: str,
    distances: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward pass of :func:`pairwise_distances`, by hand: ``(dL/dx, dL/dy)`` from ``dL/dD``.

    Lets a loss that computes the gradient with respect to the distances itself (the mining
    kernels) skip the autograd graph of an ``(N, M)`` matrix: two matrix products instead.

    Args:
        x: ``(N, D)`` and ``y``: ``(M, D)``, the inputs of the distance (``y`` may be ``x``).
        grad: ``(N, M)`` gradient of the loss with respect to the distances, dense or sparse COO
            (a sparse gradient, e.g. from picked pairs, costs O(nonzeros · D)).
        metric: one of :data:`METRICS`.
        distances: the ``(N, M)`` euclidean distances, if at hand (recomputed otherwise).

    Returns:
        Gradients with respect to ``x`` and ``y``, in their dtypes.

    >>> x = torch.tensor([[0.0, 0.0]]); y = torch.tensor([[3.0, 4.0]])
    >>> pairwise_distances_vjp(x, y, torch.ones(1, 1), "euclidean")
    (tensor([[-0.6000, -0.8000]]), tensor([[0.6000, 0.8000]]))
    """
    xc, yc = _as_compute_dtype(x), _as_compute_dtype(y)
    if yc.dtype != xc.dtype:
        common = torch.promote_types(xc.dtype, yc.dtype)
        xc, yc = xc.to(common), yc.to(common)
    grad = grad.to(xc.dtype)
    sparse = grad.is_sparse
    if sparse:
        grad = grad.coalesce()
    if metric == "euclidean":
        if sparse:
            rows, cols = grad.indices()
            at = _safe_sqrt(((xc[rows] - yc[cols]) ** 2).sum(dim=1))
            values = grad.values()
            values = torch.where(at > 0, values / (2.0 * at).clamp_min(_SQRT_FLOOR), 0.0)
            grad = torch.sparse_coo_tensor(
                grad.indices(), values, grad.shape, is_coalesced=True, check_invariants=False
            )
        else:
            if distances is None:
                distances = pairwise_distances_unchecked(xc, yc, "euclidean")
            grad = euclidean_grad_to_squared_(grad * 0.5, distances)

    def times_y(g: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(g, y_) if sparse else g @ y_

    def times_x(g: torch.Tensor, x_: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(g.t(), x_) if sparse else g.T @ x_

    if metric in ("squared_euclidean", "euclidean"):
        if sparse:
            row_sum = torch.sparse.sum(grad, dim=1).to_dense()
            col_sum = torch.sparse.sum(grad, dim=0).to_dense()
        else:
            row_sum, col_sum = grad.sum(dim=1), grad.sum(dim=0)
        grad_x = 2.0 * (row_sum.unsqueeze(1) * xc - times_y(grad, yc))
        grad_y = 2.0 * (col_sum.unsqueeze(1) * yc - times_x(grad, xc))
    elif metric == "cosine":
        grad_x = _normalize_vjp(xc, -times_y(grad, unit_rows(yc)))
        grad_y = _normalize_vjp(yc, -times_x(grad, unit_rows(xc)))
    elif metric == "dot":
        grad_x = -times_y(grad, yc)
        grad_y = -times_x(grad, xc)
    else:
        check_choice(metric, METRICS, "metric")
    return grad_x.to(x.dtype), grad_y.to(y.dtype)


def pairwise_distances_vjp_self(
    x: torch.Tensor,
    grad: torch.Tensor,
    metric: str,
    distances: torch.Tensor | None = None,
    *,
    grad_owned: bool = False,
) -> torch.Tensor:
    """The backward pass of ``pairwise_distances(x)`` (x against itself): ``dL/dx`` from ``dL/dD``.

    Equals the sum of both results of :func:`pairwise_distances_vjp` with ``y = x`` (``D``
    depends on ``x`` through its rows and its columns), accumulated into one buffer, with the
    row normalisation of the cosine distance done once.

    Args:
        x: ``(N, D)`` embeddings.
        grad: ``(N, N)`` dense gradient with respect to the distances.
        metric: one of :data:`METRICS`.
        distances: the ``(N, N)`` euclidean distances, if at hand.
        grad_owned: ``grad`` may be overwritten (saves a copy for the euclidean metric).

    Returns:
        The gradient with respect to ``x``, in its dtype.

    >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    >>> pairwise_distances_vjp_self(x, torch.tensor([[0.0, 1.0], [0.0, 0.0]]), "euclidean")
    tensor([[-0.6000, -0.8000],
            [ 0.6000,  0.8000]])
    """
    if grad.is_sparse:
        grad_x, grad_y = pairwise_distances_vjp(x, x, grad, metric, distances)
        return grad_x + grad_y
    xc = _as_compute_dtype(x)
    grad = grad.to(xc.dtype)
    if metric == "euclidean":
        if distances is None:
            distances = pairwise_distances_unchecked(xc, None, "euclidean")
        grad = euclidean_grad_to_squared_(grad if grad_owned else grad * 1.0, distances)
        factor = 1.0  # 2 (squared distance) x 1/2 (the square root)
    else:
        factor = 2.0

    def times_symmetric(v: torch.Tensor) -> torch.Tensor:
        # (G + Gᵀ) v as two products into one buffer: BLAS reads Gᵀ in place, which is
        # cheaper than materialising G + Gᵀ (a cache-unfriendly transposed pass).
        return torch.mm(grad, v).addmm_(grad.T, v)

    if metric in ("squared_euclidean", "euclidean"):
        weight = (grad.sum(dim=1) + grad.sum(dim=0)).unsqueeze(1)
        grad_x = factor * (weight * xc - times_symmetric(xc))
    elif metric == "cosine":
        grad_x = _normalize_vjp(xc, -times_symmetric(unit_rows(xc)))
    elif metric == "dot":
        grad_x = -times_symmetric(xc)
    else:
        check_choice(metric, METRICS, "metric")
    return grad_x.to(x.dtype)


def paired_distances(
    x: torch.Tensor, y: torch.Tensor, metric: Metric | str = "squared_euclidean"
) -> torch.Tensor:
    """Distance between row ``i`` of ``x`` and row ``i`` of ``y``, for every ``i``.

    Args:
        x, y: ``(N, D)`` float embeddings.
        metric: one of :data:`METRICS`.

    Returns:
        ``(N,)`` distances (computed as differences, so exact for identical rows).

    >>> paired_distances(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), "euclidean")
    tensor([5.])
    """
    check_choice(metric, METRICS, "metric")
    x = _as_compute_dtype(check_embeddings(x, "x"))
    y = _as_compute_dtype(check_embeddings(y, "y"))
    check_same_dim(x, y, "x", "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; they must match")
    if y.dtype != x.dtype:
        common = torch.promote_types(x.dtype, y.dtype)
        x, y = x.to(common), y.to(common)
    return _paired_unchecked(x, y, metric)


def _paired_unchecked(
    x: torch.Tensor, y: torch.Tensor, metric: str, normalized: bool = False
) -> torch.Tensor:
    if metric in ("squared_euclidean", "euclidean"):
        squared = ((x - y) ** 2).sum(dim=1)
        return squared if metric == "squared_euclidean" else _safe_sqrt(squared)
    if metric == "cosine":
        if not normalized:
            x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
        return 1.0 - (x * y).sum(dim=1)
    return -(x * y).sum(dim=1)


def indexed_paired_distances(
    x: torch.Tensor,
    first: torch.Tensor,
    second: torch.Tensor,
    metric: Metric | str = "squared_euclidean",
    *,
    chunk_elements: int = 2**20,
    strategy: str = "auto",
) -> torch.Tensor:
    """``paired_distances(x[first], x[second], metric)`` without gathering all the pairs' rows.

    For many pairs of a few rows (verification pairs drawn from a labelled set), gathering the
    rows of every pair at once takes ``2 × pairs × D`` floats: gigabytes for millions of pairs.
    Here ``x`` is checked (and, for cosine, normalised) once, and the pairs are measured one
    cache-sized chunk at a time, in one of two ways:

    * ``"gather"``: the rows of a chunk of pairs, then their paired distances
      (``2 × pairs × D`` memory reads in all);
    * ``"blocks"``: blocks of rows of the ``N × N`` distance matrix (matrix products, ``N² × D``
      multiply-adds in all), from which the pairs whose first row is in the block are read.
      Much faster when the pairs are many compared with the rows: 2,000,000 pairs of 6,000
      rows of 2,048 features take 1.7 s this way against 11 s gathered, on 2 cores.

    ``"auto"`` takes the blocks when ``N² ≤ 32 × pairs``.

    Args:
        x: ``(N, D)`` float embeddings.
        first, second: ``(P,)`` integer row indices into ``x``.
        metric: one of :data:`METRICS`.
        chunk_elements: floats gathered per side and chunk, or distances per block.
        strategy: ``"auto"``, ``"gather"`` or ``"blocks"``.

    Returns:
        ``(P,)`` distances, in ``x``'s compute dtype, equal to :func:`paired_distances` of the
        gathered rows up to rounding (the blocks compute the euclidean distances through
        ``|x|² + |y|² - 2 x·y``, clamped at 0).

    >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    >>> indexed_paired_distances(x, torch.tensor([0, 1]), torch.tensor([1, 2]), "euclidean")
    tensor([5., 5.])
    """
    check_choice(metric, METRICS, "metric")
    check_choice(strategy, ("auto", "gather", "blocks"), "strategy")
    x = _as_compute_dtype(check_embeddings(x, "x"))
    first, second = torch.as_tensor(first), torch.as_tensor(second)
    if first.shape != second.shape or first.dim() != 1:
        raise ValueError(
            f"first and second must be 1-D index tensors of one length; got shapes "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )
    if first.dtype.is_floating_point or second.dtype.is_floating_point or first.dtype == torch.bool:
        raise ValueError("first and second must hold integer row indices")
    if first.numel() and (
        int(torch.minimum(first.min(), second.min())) < 0
        or int(torch.maximum(first.max(), second.max())) >= x.shape[0]
    ):
        raise ValueError(f"first and second must index rows of x, in [0, {x.shape[0]})")
    normalized = metric == "cosine"
    if normalized:
        x = F.normalize(x, dim=1)
    first, second = first.to(x.device), second.to(x.device)
    out = torch.empty(first.shape[0], dtype=x.dtype, device=x.device)
    rows = x.shape[0]
    if strategy == "blocks" or (strategy == "auto" and rows * rows <= 32 * first.shape[0]):
        order = torch.argsort(first)
        first_sorted, second_sorted = first[order], second[order]
        block_rows = max(1, chunk_elements // max(rows, 1))
        starts = torch.arange(0, rows + block_rows, block_rows, device=x.device).clamp_(max=rows)
        bounds = torch.searchsorted(first_sorted, starts).tolist()
        for block, (low, high) in enumerate(itertools.pairwise(bounds)):
            if low == high:
                continue
            top = block * block_rows
            matrix = pairwise_distances_unchecked(
                x[top : top + block_rows], x, metric, normalized=normalized
            )
            out[order[low:high]] = matrix[first_sorted[low:high] - top, second_sorted[low:high]]
        return out
    step = max(1, chunk_elements // max(x.shape[1], 1))
    for start in range(0, first.shape[0], step):
        stop = min(start + step, first.shape[0])
        out[start:stop] = _paired_unchecked(
            x[first[start:stop]], x[second[start:stop]], metric, normalized=normalized
        )
    return out


def resolve_distance(distance: Metric | str | DistanceFn) -> tuple[str, DistanceFn]:
    """Turn a metric name or a user function into ``(name, fn)`` with ``fn(x, y) -> (N, M)``.

    Losses accept either; a custom function must return distances where smaller means closer.

    >>> name, fn = resolve_distance("cosine")
    >>> name
    'cosine'
    """
    if callable(distance):
        name = getattr(distance, "__name__", type(distance).__name__)
        return name, distance
    metric = check_choice(distance, METRICS, "distance")

    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pairwise_distances(x, y, metric)

    return metric, fn


#: ``(smallest, largest)`` value of each metric between L2-normalised embeddings (the table above).
UNIT_SPHERE_RANGES: dict[str, tuple[float, float]] = {
    "squared_euclidean": (0.0, 4.0),
    "euclidean": (0.0, 2.0),
    "cosine": (0.0, 2.0),
    "dot": (-1.0, 1.0),
}


def unit_sphere_range(metric: Metric | str) -> tuple[float, float]:
    """The ``(smallest, largest)`` distance between two L2-normalised embeddings under ``metric``.

    ``cosine`` has this range for any embeddings; the others only on the unit sphere. The width
    ``largest - smallest`` bounds ``d(a, n) - d(a, p)``, so a triplet margin at or above it can never
    be satisfied.

    >>> unit_sphere_range("squared_euclidean")
    (0.0, 4.0)
    """
    return UNIT_SPHERE_RANGES[check_choice(metric, METRICS, "metric")]
