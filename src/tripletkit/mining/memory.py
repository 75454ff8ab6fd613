"""Cross-batch memory (Wang et al. 2020, "Cross-Batch Memory for Embedding Learning", XBM).

Embeddings drift slowly once training has warmed up, so the embeddings of the last few thousand
batches are still good references. A FIFO ring buffer keeps them (detached: no gradient flows into
the past), and each batch is mined against the whole memory instead of against itself: many more
positives and hard negatives per anchor for the price of one ``(B, M)`` distance matrix.

Any batch loss of tripletkit works as the wrapped loss, since they all take ``(embeddings, labels,
ref_embeddings, ref_labels, self_ref_index)``. With :class:`~tripletkit.losses.BatchTripletLoss`
the mining is exact and costs O(B·M log M) time and O(B·M) memory (chunked further with its
``chunk_size``): a memory of 65,536 embeddings with batches of 256 is a 16.7 M-entry matrix, where
enumerating the batch-all triplets against it would take B·M² = 10^12.
"""

from __future__ import annotations

import torch
from torch import nn

from tripletkit.validation import check_embeddings, check_labels

__all__ = ["CrossBatchMemory"]


class CrossBatchMemory(nn.Module):
    """Wrap a batch loss so that it mines each batch against a FIFO memory of past embeddings.

    Each call first enqueues the batch (detached) into the ring buffer, then returns
    ``loss(embeddings, labels, memory_embeddings, memory_labels, self_ref_index=slots)`` where
    ``slots`` are the memory rows the batch was just written to: the memory already holds the
    current batch (so in-batch pairs count), but an item's own copy is never its positive. Until
    the memory is full, only its filled part is used. Gradients flow into the current batch as
    anchors only; the memory is a constant.

    The memory is a pair of buffers (``memory_embeddings``, ``memory_labels``): it moves with
    ``.to(device)``, is saved in ``state_dict()``, and is rebuilt, not modified in place, at each
    call, so several forward passes may share one backward pass (gradient accumulation).

    Under ``torch.distributed``, gather first (:func:`tripletkit.mining.gather_batch`) and give
    the memory the global batch: every rank then keeps the same memory.

    Start it after the embedding has stabilised (the paper waits for the first thousand
    iterations): before that, the stored embeddings are stale and mining against them hurts.

    Args:
        loss: a batch loss module taking ``(embeddings, labels, ref_embeddings, ref_labels,
            self_ref_index=...)``, e.g. ``BatchTripletLoss(mining="all")`` or
            ``ContrastiveLoss()``.
        size: M, the number of embeddings kept (at least the batch size).
        embedding_dim: D.
        dtype: dtype of the stored embeddings (float32 by default, whatever the batch's).

    Example:
        >>> import torch
        >>> from tripletkit.losses import BatchTripletLoss
        >>> xbm = CrossBatchMemory(BatchTripletLoss(mining="hard"), size=64, embedding_dim=8)
        >>> for step in range(3):
        ...     embeddings = torch.randn(16, 8, requires_grad=True)
        ...     loss = xbm(embeddings, torch.arange(4).repeat_interleave(4))
        >>> xbm.num_filled, xbm.last_stats.num_selected
        (48, 16)
    """

    def __init__(
        self,
        loss: nn.Module,
        size: int,
        embedding_dim: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        for name, value in (("size", size), ("embedding_dim", embedding_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype; got {dtype}")
        self.loss = loss
        self.size = size
        self.embedding_dim = embedding_dim
        self.register_buffer("memory_embeddings", torch.zeros(size, embedding_dim, dtype=dtype))
        self.register_buffer("memory_labels", torch.zeros(size, dtype=torch.int64))
        self.register_buffer("next_slot", torch.zeros((), dtype=torch.int64))
        self.register_buffer("filled", torch.zeros((), dtype=torch.int64))

    @property
    def num_filled(self) -> int:
        """How many memory rows hold an embedding."""
        return int(self.filled)

    @property
    def last_stats(self):
        """The wrapped loss's statistics of the last call."""
        return getattr(self.loss, "last_stats", None)

    def reset(self) -> None:
        """Empty the memory."""
        self.memory_embeddings = torch.zeros_like(self.memory_embeddings)
        self.memory_labels = torch.zeros_like(self.memory_labels)
        self.next_slot = torch.zeros_like(self.next_slot)
        self.filled = torch.zeros_like(self.filled)

    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Write a batch into the memory (detached), overwriting the oldest rows.

        Returns:
            ``(B,)`` int64, the memory rows the batch was written to.
        """
        embeddings = check_embeddings(embeddings, "embeddings")
        batch = embeddings.shape[0]
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(
                f"embeddings has dimension {embeddings.shape[1]}; this memory holds "
                f"{self.embedding_dim}-dimensional embeddings"
            )
        if batch > self.size:
            raise ValueError(
                f"a batch of {batch} does not fit a memory of size {self.size}; use size >= batch"
            )
        device = self.memory_embeddings.device
        if embeddings.device != device:
            raise ValueError(
                f"embeddings are on {embeddings.device} but the memory is on {device}; "
                "move the module with .to(device)"
            )
        labels = check_labels(labels, batch, device, "labels")
        slots = (self.next_slot + torch.arange(batch, device=device)) % self.size
        stored = embeddings.detach().to(self.memory_embeddings.dtype)
        # Out of place: a previous call's graph may still hold the old memory for its backward.
        self.memory_embeddings = self.memory_embeddings.index_copy(0, slots, stored)
        self.memory_labels = self.memory_labels.index_copy(0, slots, labels)
        self.next_slot = (self.next_slot + batch) % self.size
        self.filled = torch.clamp(self.filled + batch, max=self.size)
        return slots

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        slots = self.enqueue(embeddings, labels)
        filled = self.num_filled
        return self.loss(
            embeddings,
            labels,
            self.memory_embeddings[:filled],
            self.memory_labels[:filled],
            self_ref_index=slots,
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, embedding_dim={self.embedding_dim}, filled={self.num_filled}"
