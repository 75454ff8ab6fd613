"""The anchors and the reference set a batch loss compares them with, checked once for every loss.

Every batch loss of the family takes ``(embeddings, labels, ref_embeddings=None, ref_labels=None,
self_ref_index=None)``: each anchor (a row of ``embeddings``) is compared with every reference (a
row of ``ref_embeddings``, or of ``embeddings`` itself when None). ``self_ref_index[i]`` is the
reference that is anchor ``i``'s own copy (-1: none); it is never a positive of anchor ``i``. It
defaults to ``arange(B)`` when the anchors are their own references, and is how a cross-batch
memory that already holds the current batch avoids pairing an item with itself.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from tripletkit.distances import DistanceFn, Metric, pairwise_distances_unchecked, resolve_distance
from tripletkit.errors import NoPairsWarning
from tripletkit.pairs import LabelGroups, pair_masks, self_indices
from tripletkit.validation import check_embeddings, check_labels, check_same_dim

__all__ = ["ReferenceSet", "resolve_reference_set", "warn_no_pairs"]


@dataclass(frozen=True)
class ReferenceSet:
    """Checked inputs of a batch loss.

    Attributes:
        embeddings: ``(B, D)`` float anchors, as given (graph-connected).
        labels: ``(B,)`` int64.
        ref_embeddings: ``(M, D)`` float references; ``embeddings`` itself when none were given.
        ref_labels: ``(M,)`` int64.
        self_ref_index: ``(B,)`` int64 reference index of each anchor's own copy (-1: none), or
            None when no anchor has one.
        refs_given: whether the references are a separate tensor.
    """

    embeddings: torch.Tensor
    labels: torch.Tensor
    ref_embeddings: torch.Tensor
    ref_labels: torch.Tensor
    self_ref_index: torch.Tensor | None
    refs_given: bool

    @property
    def num_anchors(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def num_refs(self) -> int:
        return int(self.ref_embeddings.shape[0])

    @property
    def out_dtype(self) -> torch.dtype:
        """The dtype of the loss: float32 for half-precision inputs, else the inputs' dtype."""
        return torch.promote_types(self.embeddings.dtype, torch.float32)

    def distances(self, distance: Metric | str | DistanceFn) -> tuple[torch.Tensor, str | None]:
        """``(B, M)`` anchor-reference distances (graph-connected) and the metric's name.

        The name is None for a user function. Anchors that are their own references get an exact
        0 diagonal for the euclidean metrics.
        """
        if callable(distance):
            return resolve_distance(distance)[1](self.embeddings, self.ref_embeddings), None
        metric = resolve_distance(distance)[0]
        refs = self.ref_embeddings if self.refs_given else None
        return pairwise_distances_unchecked(self.embeddings, refs, metric), metric

    def positive_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each anchor's positives as ``(index, valid)``, both ``(B, P)`` with P >= 1.

        ``index`` holds reference indices (0 in padding slots, so it can be used to gather
        directly) and ``valid`` marks the real positives; own copies are excluded.
        """
        table = self.groups().positives(self.labels, self.self_ref_index)
        index = table.index.clamp_min(0)
        if index.shape[1] == 0:
            index = torch.zeros(self.num_anchors, 1, dtype=torch.int64, device=index.device)
        slots = torch.arange(index.shape[1], device=index.device)
        return index, slots.unsqueeze(0) < table.count.unsqueeze(1)

    def negative_counts(self) -> torch.Tensor:
        """``(B,)`` int64: each anchor's number of negatives (from the labels alone, no mask)."""
        return self.groups().negative_counts(self.labels)

    def same_label_entries(
        self, pos_index: torch.Tensor, pos_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, cols)`` of every anchor-reference entry with equal labels: the positives
        (``pos_index`` at ``pos_valid``, from :meth:`positive_slots`) and the own copies of the
        same label. Every other entry is a negative pair; each entry appears once."""
        rows = torch.arange(self.num_anchors, device=pos_index.device).unsqueeze(1)
        rows, cols = rows.expand_as(pos_index)[pos_valid], pos_index[pos_valid]
        if self.self_ref_index is not None:
            own = self.self_ref_index
            same = (own >= 0) & (self.ref_labels[own.clamp_min(0)] == self.labels)
            own_rows = torch.nonzero(same).flatten()
            rows, cols = torch.cat([rows, own_rows]), torch.cat([cols, own[own_rows]])
        return rows, cols

    def negative_distance_sum(
        self, dist: torch.Tensor, same_rows: torch.Tensor, same_cols: torch.Tensor
    ) -> torch.Tensor:
        """Sum of ``dist`` over the negative pairs, in one pass over the matrix and without a mask
        (the same-label entries, from :meth:`same_label_entries`, are subtracted)."""
        return dist.sum() - dist[same_rows, same_cols].sum()

    def masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense ``(B, M)`` boolean ``(positive, negative)`` masks (own copies excluded)."""
        return pair_masks(self.labels, self.ref_labels, self.self_ref_index)

    def groups(self) -> LabelGroups:
        """The reference labels grouped, for per-anchor positive tables and counts."""
        return LabelGroups(self.ref_labels)

    def zero_loss(self) -> torch.Tensor:
        """0.0 connected to the graph of every input, so ``backward()`` gives zero gradients."""
        zero = (self.embeddings * 0).sum().to(self.out_dtype)
        if self.refs_given:
            zero = zero + (self.ref_embeddings * 0).sum().to(self.out_dtype)
        return zero


def resolve_reference_set(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    self_ref_index: torch.Tensor | None = None,
) -> ReferenceSet:
    """Check a batch loss's inputs and fill in the defaults (see the module docstring).

    Raises ``ValueError``/``TypeError`` with what was wrong: shapes, dtypes, NaN rows, a reference
    set given without its labels, ``self_ref_index`` out of range.

    >>> refs = resolve_reference_set(torch.zeros(3, 2), torch.tensor([0, 0, 1]))
    >>> refs.self_ref_index, refs.num_refs
    (tensor([0, 1, 2]), 3)
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
    refs_given = ref_embeddings is not None
    if refs_given:
        refs = check_embeddings(ref_embeddings, "ref_embeddings")
        check_same_dim(embeddings, refs, "embeddings", "ref_embeddings")
        ref_labels = check_labels(ref_labels, refs.shape[0], device, "ref_labels")
    else:
        refs, ref_labels = embeddings, labels
        if self_ref_index is None:
            self_ref_index = self_indices(num_anchors, device)
    if self_ref_index is not None:
        self_ref_index = check_labels(self_ref_index, num_anchors, device, "self_ref_index")
        if bool((self_ref_index >= refs.shape[0]).any()) or bool((self_ref_index < -1).any()):
            raise ValueError(
                f"self_ref_index must hold reference indices in [0, {refs.shape[0]}) or -1 "
                "(no own copy)"
            )
    return ReferenceSet(embeddings, labels, refs, ref_labels, self_ref_index, refs_given)


def warn_no_pairs(message: str, stacklevel: int = 3) -> None:
    """Emit :class:`~tripletkit.errors.NoPairsWarning` with the advice every loss gives."""
    warnings.warn(
        f"{message}; the loss is 0. Use a P×K sampler (tripletkit.data.PKSampler) so that every "
        "batch holds several classes with several items each.",
        NoPairsWarning,
        stacklevel=stacklevel,
    )
