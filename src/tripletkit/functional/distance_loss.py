"""A scalar loss of the anchor-reference distance matrix, with its gradient written by the loss.

The pair losses (contrastive, multi-similarity, InfoNCE) are simple functions of the ``(B, M)``
distance matrix whose gradient with respect to the distances is known in closed form. Computing it
during the forward pass, as the core's mining kernels do, replaces an autograd graph over a handful
of ``(B, M)`` intermediates (each kept in memory and walked again backwards) by one ``(B, M)``
gradient; the backward pass is then only the distance's own VJP
(:func:`~tripletkit.distances.pairwise_distances_vjp`: two matrix products).

A loss provides ``compute(dist) -> (value, grad, scale)`` on the detached matrix: the scalar loss
and ``d value / d dist = scale * grad`` (a scalar factor is applied to the ``(B, D)`` results of
the VJP rather than to the ``(B, M)`` matrix). With a user distance function, the gradient is
pushed through that function by autograd instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tripletkit.distances import (
    DistanceFn,
    Metric,
    euclidean_grad_to_squared_,
    pairwise_distances_unchecked,
    pairwise_distances_vjp,
    pairwise_distances_vjp_self,
    resolve_distance,
)
from tripletkit.functional.reference_set import ReferenceSet

__all__ = ["DistanceLossFn", "loss_of_distances"]

#: ``compute(dist) -> (value, grad, scale)``: the loss of a detached ``(B, M)`` distance matrix (a
#: 0-d tensor) and its gradient with respect to the matrix, ``scale * grad`` (``grad`` is
#: ``(B, M)`` in the matrix's dtype and a buffer of its own, which the caller may overwrite,
#: ``scale`` a float).
DistanceLossFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, float]]


class _LossOfDistances(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, y, metric: str, same: bool, compute: DistanceLossFn):
        dist = pairwise_distances_unchecked(x, None if same else y, metric)
        value, grad, scale = compute(dist)
        if metric == "euclidean":
            # Through the squared distance, now, in place: the backward pass needs neither
            # ``dist`` nor a copy of ``grad`` (dD/dD² = 1/(2D), the 1/2 folded into the scale).
            grad = euclidean_grad_to_squared_(grad, dist)
            metric, scale = "squared_euclidean", 0.5 * scale
        del dist
        ctx.metric, ctx.scale, ctx.same = metric, scale, same
        ctx.save_for_backward(x, None if same else y, grad)
        return value

    @staticmethod
    def backward(ctx: Any, grad_value: torch.Tensor):
        x, y, grad = ctx.saved_tensors
        scale = grad_value.to(torch.float64) * ctx.scale
        if ctx.same:
            # x is also the reference set: both roles in one product (autograd adds the
            # gradients of the two arguments, which are the same tensor).
            grad_x = pairwise_distances_vjp_self(x, grad, ctx.metric)
            return grad_x * scale.to(grad_x.dtype), None, None, None, None
        grad_x, grad_y = pairwise_distances_vjp(x, y, grad, ctx.metric)
        return grad_x * scale.to(grad_x.dtype), grad_y * scale.to(grad_y.dtype), None, None, None


def loss_of_distances(
    refs: ReferenceSet, distance: Metric | str | DistanceFn, compute: DistanceLossFn
) -> torch.Tensor:
    """``compute``'s value on the anchors' distances to the references, differentiable with
    respect to both (through ``compute``'s own gradient).

    Args:
        refs: the checked inputs.
        distance: a metric name or a function ``(x, y) -> (N, M)``.
        compute: ``dist -> (value, grad, scale)`` with ``d value / d dist = scale * grad``,
            called once on the detached matrix.

    Returns:
        The 0-d loss, connected to ``refs.embeddings`` and ``refs.ref_embeddings``.
    """
    if callable(distance):
        dist = refs.distances(distance)[0]
        value, grad, scale = compute(dist.detach())
        # Same value, and the gradient ``scale * grad`` with respect to the user's distances.
        surrogate = (dist * grad.to(dist.dtype)).sum() * scale
        return value + (surrogate - surrogate.detach()).to(value.dtype)
    metric = resolve_distance(distance)[0]
    return _LossOfDistances.apply(
        refs.embeddings, refs.ref_embeddings, metric, not refs.refs_given, compute
    )
