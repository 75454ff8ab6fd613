"""Mining across processes: gather every rank's batch, with gradients flowing back to each rank.

With data-parallel training each process sees only its own batch; mining within it finds only the
triplets of B items. :func:`gather_batch` collects the embeddings and labels of every rank (in
rank order), so that mining sees the global batch of ``world_size × B`` items (the effective batch
for mining is ``world_size × batch``, and so is the size of the distance matrix's side), while
gradients flow back to the rows each rank computed.

Backward rule: the gradient that reaches each rank's rows is the *sum over ranks* of the gradients
of their losses with respect to those rows, as if all ranks' losses were one program. Two ways to
use it:

* **global anchors**: every rank computes the loss of the whole gathered batch,
  ``loss_fn(batch.embeddings, batch.labels)``. The loss is the same on every rank, and equal to
  the single-process loss on the concatenated batch. Each rank's rows receive ``world_size`` times
  the single-process gradient, which DistributedDataParallel's gradient *averaging* turns back into
  exactly the single-process gradient.
* **local anchors** (less compute: B × world_size·B distances per rank): each rank mines its own
  anchors against the gathered references,
  ``loss_fn(embeddings, labels, batch.embeddings, batch.labels, self_ref_index=batch.self_ref_index)``.
  The gradients are those of the sum of the ranks' losses (DDP's averaging: of their mean).

Every rank must call the gather and run the backward pass (both are collective operations).
Ranks may hold batches of different sizes. Without an initialised process group (or with a world
of one) the functions return their input unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tripletkit.validation import check_embeddings, check_labels

__all__ = ["GatheredBatch", "gather_batch", "gather_with_grad"]


def _world(group: Any) -> tuple[int, int]:
    """``(world size, rank)``, or ``(1, 0)`` without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _all_sizes(rows: int, device: torch.device, group: Any, world: int) -> list[int]:
    size = torch.tensor([rows], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    return [int(s) for s in sizes]


def _gather_rows(tensor: torch.Tensor, sizes: list[int], group: Any) -> torch.Tensor:
    """All ranks' ``tensor`` concatenated along dim 0 (padded to a common size for the transfer)."""
    largest = max(sizes)
    padded = tensor
    if tensor.shape[0] < largest:
        padding = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, padding])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:rows] for part, rows in zip(parts, sizes, strict=True)])


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, sizes: list[int], rank: int, group: Any):
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        return _gather_rows(tensor, sizes, group)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None


def gather_with_grad(tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Concatenate ``tensor`` (``(n_r, ...)`` on rank r) from every rank along dim 0, in rank order.

    Differentiable for floating tensors: the backward pass sums the gradient over ranks (an
    all-reduce) and hands each rank the rows it contributed (see the module docstring for what
    that means for the two ways of using it). Integer tensors (labels) are gathered the same way.

    Args:
        tensor: this rank's rows; the trailing dimensions must agree across ranks.
        group: the process group (None: the default group).

    Returns:
        ``(Σ_r n_r, ...)``, or ``tensor`` itself without a process group.

    >>> gather_with_grad(torch.ones(2, 3)).shape    # no process group: unchanged
    torch.Size([2, 3])
    """
    world, rank = _world(group)
    if world == 1:
        return tensor
    sizes = _all_sizes(tensor.shape[0], tensor.device, group, world)
    if tensor.is_floating_point() and tensor.requires_grad:
        return _GatherWithGrad.apply(tensor, sizes, rank, group)
    return _gather_rows(tensor, sizes, group)


@dataclass(frozen=True)
class GatheredBatch:
    """The global batch of every rank, and where this rank's rows sit in it.

    Attributes:
        embeddings: ``(N, D)`` every rank's embeddings in rank order (graph-connected to this
            rank's rows), N = Σ over ranks of their batch sizes.
        labels: ``(N,)`` int64.
        offset: the global row of this rank's first item.
        local_size: this rank's batch size.
    """

    embeddings: torch.Tensor
    labels: torch.Tensor
    offset: int
    local_size: int

    @property
    def self_ref_index(self) -> torch.Tensor:
        """``(local_size,)``: the global row of each local item, for mining local anchors against
        the gathered references (an item is not its own positive)."""
        return torch.arange(
            self.offset, self.offset + self.local_size, device=self.embeddings.device
        )


def gather_batch(
    embeddings: torch.Tensor, labels: torch.Tensor, group: Any = None
) -> GatheredBatch:
    """Gather embeddings (with gradients) and labels from every rank; see the module docstring.

    Args:
        embeddings: ``(B_r, D)`` this rank's embeddings.
        labels: ``(B_r,)`` this rank's integer labels.
        group: the process group (None: the default group).

    Returns:
        A :class:`GatheredBatch`.

    Example:
        >>> batch = gather_batch(torch.randn(4, 8), torch.tensor([0, 0, 1, 1]))
        >>> batch.embeddings.shape, batch.self_ref_index   # one process: the batch itself
        (torch.Size([4, 8]), tensor([0, 1, 2, 3]))
    """
    embeddings = check_embeddings(embeddings, "embeddings")
    labels = check_labels(labels, embeddings.shape[0], embeddings.device, "labels")
    world, rank = _world(group)
    if world == 1:
        return GatheredBatch(embeddings, labels, 0, embeddings.shape[0])
    sizes = _all_sizes(embeddings.shape[0], embeddings.device, group, world)
    if embeddings.requires_grad:
        gathered = _GatherWithGrad.apply(embeddings, sizes, rank, group)
    else:
        gathered = _gather_rows(embeddings, sizes, group)
    gathered_labels = _gather_rows(labels, sizes, group)
    return GatheredBatch(gathered, gathered_labels, sum(sizes[:rank]), embeddings.shape[0])
