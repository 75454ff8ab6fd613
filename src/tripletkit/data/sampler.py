"""P×K batch sampling: every batch holds P distinct classes × K items, so it always has triplets.

Random batches over many classes often contain no positive pair (the loss is 0, or NaN in tools
that divide by the number of triplets), and one large class can fill whole batches.
:class:`PKSampler` builds each batch from *groups* of K items of one class, P groups of P distinct
classes per batch.

What an epoch is
----------------
``mode="cover"`` (the default): every sampled item is drawn **at least once per epoch**, and all
but a few exactly once. Each class's items are shuffled and cut into groups of K; the last,
partial group is filled with other items of the same class (distinct ones when the class has at
least K items, repeats when it has fewer). The epoch has ``B = max(ceil(G / P), g_max)`` batches,
where ``G`` is the number of groups and ``g_max`` the groups of the largest class (a batch holds at
most one group of a class, so a class with 300 groups needs 300 batches); ``B`` is then rounded up
to a multiple of ``world_size``. The ``B · P - G`` slots left over are filled with extra groups,
spread at random over the classes that still have room, so long-tailed data is never half-skipped
and small classes are re-used rather than large ones cut. The classes of each batch are drawn at
random (weighted by the groups they have left), so over an epoch a class meets most other
classes, rather than the same few neighbours of a fixed layout.

``mode="balanced"``: every class gives the same number of groups per epoch
(``groups_per_class``, by default the median of ``ceil(n_c / K)``), so rare classes are seen as
often as common ones. Within a class, items are drawn in shuffled passes (no item twice before all
were drawn once); a class larger than ``groups_per_class · K`` is sampled, not covered, each epoch.

Which items are never drawn
---------------------------
A class with a single item can never give a positive pair; it is left out and reported once (a
:class:`ExcludedItemsWarning`). With ``small_classes="drop"``, classes with fewer than K items
are left out too (by default they are filled by drawing their items again). The left-out items
are in :attr:`PKSampler.excluded_indices`.

Determinism and distributed training
------------------------------------
The batches of an epoch depend only on ``(seed, epoch)`` and the labels. ``set_epoch(e)`` selects
the epoch; after a complete pass over the sampler the epoch advances by one on its own, so a plain
loop gets new batches each epoch and a trainer that calls ``set_epoch`` gets exactly epoch ``e``.
Under ``torch.distributed`` every rank builds the same epoch and takes every ``world_size``-th
batch from ``rank`` on: the ranks get disjoint batches (a partition of the epoch) and the same
number of them, which is what DDP needs to avoid a hang at the last step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch

from tripletkit.data.labels import encode_labels
from tripletkit.errors import TripletkitWarning
from tripletkit.validation import check_choice

__all__ = ["ExcludedItemsWarning", "PKSampler"]


class ExcludedItemsWarning(TripletkitWarning):
    """Some items can never be sampled into a useful batch (single-item classes, dropped classes)."""


def _check_int_at_least(value: Any, name: str, minimum: int, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} ({why}); got {value!r}")
    return int(value)


def _distributed_defaults(rank: int | None, world_size: int | None) -> tuple[int, int]:
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if world_size is None:
        world_size = torch.distributed.get_world_size() if initialised else 1
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    world_size = _check_int_at_least(world_size, "world_size", 1, "the number of processes")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise ValueError(f"rank must be an integer in [0, {world_size}); got {rank!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
    return int(rank), world_size


def _draw_groups(items: np.ndarray, k: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` groups of ``k`` items of one class, as ``(count, k)``.

    Items are drawn in passes; each pass is a fresh permutation cut into groups of ``k``, its last
    partial group filled with other items of the pass (distinct when the class has >= k items,
    with replacement when it has fewer). The first pass therefore covers every item exactly once
    apart from the filler.
    """
    n = items.shape[0]
    passes = []
    drawn = 0
    while drawn < count:
        perm = rng.permutation(items)
        full, rest = divmod(n, k)
        groups = [perm[: full * k].reshape(full, k)]
        if rest:
            if full:
                filler = rng.choice(perm[: full * k], size=k - rest, replace=False)
            else:
                filler = rng.choice(perm, size=k - rest, replace=True)
            groups.append(np.concatenate([perm[full * k :], filler])[None, :])
        one_pass = np.concatenate(groups, axis=0)
        passes.append(one_pass)
        drawn += one_pass.shape[0]
    return np.concatenate(passes, axis=0)[:count]


def _choose_classes(
    remaining: np.ndarray, batches_left: int, p: int, rng: np.random.Generator
) -> np.ndarray:
    """The ``p`` distinct classes of the next batch, in random order.

    ``remaining[c]`` is how many groups class ``c`` still has to place, with
    ``remaining.sum() == p * batches_left`` and every ``remaining[c] <= batches_left``. A class
    with exactly ``batches_left`` groups left must be in every remaining batch, so it is taken;
    the other places go to classes drawn without replacement with probability proportional to
    their remaining groups. Both conditions then hold for the next batch, so every batch can be
    filled, and which classes meet in a batch is random (not a fixed layout), which matters for
    mining hard negatives across all pairs of classes.
    """
    forced = np.flatnonzero(remaining == batches_left)
    need = p - forced.shape[0]
    if need == 0:
        return rng.permutation(forced)
    open_classes = remaining > 0
    open_classes[forced] = False
    candidates = np.flatnonzero(open_classes)
    weights = remaining[candidates].astype(np.float64)
    picked = rng.choice(candidates, size=need, replace=False, p=weights / weights.sum())
    return rng.permutation(np.concatenate([forced, picked]))


class PKSampler(torch.utils.data.Sampler[list[int]]):
    """A batch sampler whose batches hold ``p`` distinct classes × ``k`` items each.

    Pass it as ``batch_sampler`` to a :class:`torch.utils.data.DataLoader`; iterating yields
    lists of ``p * k`` dataset indices, the ``k`` items of each class next to each other. See the
    module documentation for the exact definition of an epoch.

    Args:
        labels: ``(N,)`` class labels of the dataset (ints or strings; a dataset's ``labels``).
        p: classes per batch, >= 2 (a triplet needs a negative from another class).
        k: items per class in a batch, >= 2 (a triplet needs a positive pair).
        seed: the seed; batches depend only on ``(seed, epoch)``.
        mode: ``"cover"`` (every item at least once per epoch) or ``"balanced"`` (the same number
            of groups from every class).
        groups_per_class: groups of ``k`` per class per epoch in ``"balanced"`` mode; default the
            median of ``ceil(n_c / k)`` over the sampled classes.
        small_classes: what to do with classes of 2..k-1 items: ``"fill"`` (draw their items
            again to make ``k``) or ``"drop"`` (leave them out, reported once).
        rank: this process's rank; default ``torch.distributed.get_rank()`` when initialised,
            else 0.
        world_size: number of processes; default ``torch.distributed.get_world_size()`` when
            initialised, else 1.

    Attributes:
        classes: the distinct labels; class ids below index into it.
        sampled_classes: ids of the classes that are sampled.
        excluded_indices: ``(E,)`` int64 dataset indices that are never sampled.
        batches_per_epoch: batches of the whole epoch, over all ranks (``len(self)`` per rank).

    Example:
        >>> labels = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
        >>> sampler = PKSampler(labels, p=2, k=2, seed=0)
        >>> len(sampler)  # 6 groups of 2 (classes of 3, 4, 3 items), 2 groups per batch
        3
        >>> batch = next(iter(sampler))
        >>> len(batch), len({labels[i] for i in batch})
        (4, 2)
        >>> sorted({i for b in sampler.batches(epoch=0) for i in b}) == list(range(10))
        True
    """

    def __init__(
        self,
        labels: Sequence[Any] | np.ndarray | torch.Tensor,
        p: int,
        k: int,
        seed: int = 0,
        *,
        mode: Literal["cover", "balanced"] = "cover",
        groups_per_class: int | None = None,
        small_classes: Literal["fill", "drop"] = "fill",
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.p = _check_int_at_least(p, "p", 2, "a triplet needs a negative from another class")
        self.k = _check_int_at_least(k, "k", 2, "a triplet needs two items of the anchor's class")
        self.seed = _check_int_at_least(seed, "seed", 0, "numpy seeds are non-negative")
        self.mode = check_choice(mode, ("cover", "balanced"), "mode")
        self.small_classes = check_choice(small_classes, ("fill", "drop"), "small_classes")
        self.rank, self.world_size = _distributed_defaults(rank, world_size)
        self.epoch = 0

        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        encoded = encode_labels(labels, "labels")
        self.classes = encoded.classes
        self.num_items = int(encoded.ids.shape[0])
        if self.num_items == 0:
            raise ValueError("labels is empty; PKSampler needs a labelled dataset")
        order = np.argsort(encoded.ids, kind="stable")
        sizes = np.bincount(encoded.ids, minlength=len(self.classes))
        members = np.split(order, np.cumsum(sizes)[:-1])

        min_size = self.k if self.small_classes == "drop" else 2
        sampled = np.flatnonzero(sizes >= min_size)
        self.sampled_classes = sampled
        self._members = [members[c] for c in sampled]
        excluded = [members[c] for c in np.flatnonzero(sizes < min_size)]
        self.excluded_indices = (
            np.sort(np.concatenate(excluded)) if excluded else np.zeros(0, dtype=np.int64)
        )
        self._report_excluded(sizes)
        if sampled.shape[0] < self.p:
            raise ValueError(
                f"p={self.p} classes per batch, but only {sampled.shape[0]} of {len(self.classes)} "
                f"classes have at least {min_size} items; use a smaller p, more data"
                + (", or small_classes='fill'" if self.small_classes == "drop" else "")
            )

        natural = np.array([math.ceil(m.shape[0] / self.k) for m in self._members])
        if self.mode == "cover":
            if groups_per_class is not None:
                raise ValueError("groups_per_class applies to mode='balanced' only")
            self._primary_groups = natural
        else:
            if groups_per_class is None:
                groups_per_class = max(1, int(np.median(natural)))
            groups_per_class = _check_int_at_least(
                groups_per_class, "groups_per_class", 1, "groups of k per class per epoch"
            )
            self._primary_groups = np.full(natural.shape, groups_per_class)
        self.groups_per_class = groups_per_class
        total = int(self._primary_groups.sum())
        batches = max(math.ceil(total / self.p), int(self._primary_groups.max()))
        self.batches_per_epoch = math.ceil(batches / self.world_size) * self.world_size

    def _report_excluded(self, sizes: np.ndarray) -> None:
        singles = np.flatnonzero(sizes == 1)
        small = (
            np.flatnonzero((sizes >= 2) & (sizes < self.k)) if self.small_classes == "drop" else []
        )
        parts = []
        if len(singles):
            names = ", ".join(repr(self.classes[c]) for c in singles[:5])
            more = ", ..." if len(singles) > 5 else ""
            parts.append(
                f"{len(singles)} classes have a single item and can never give a positive pair "
                f"({names}{more})"
            )
        if len(small):
            names = ", ".join(repr(self.classes[c]) for c in small[:5])
            more = ", ..." if len(small) > 5 else ""
            parts.append(
                f"{len(small)} classes have fewer than k={self.k} items and small_classes='drop' "
                f"({names}{more})"
            )
        if parts:
            warnings.warn(
                "; ".join(parts)
                + f": their {self.excluded_indices.shape[0]} of {self.num_items} items are never "
                "sampled (see PKSampler.excluded_indices)",
                ExcludedItemsWarning,
                stacklevel=3,
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = _check_int_at_least(epoch, "epoch", 0, "epochs count from 0")

    def __len__(self) -> int:
        return self.batches_per_epoch // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)
        self.epoch += 1

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch``, in order: ``len(self)`` lists of ``p * k`` indices."""
        epoch = _check_int_at_least(epoch, "epoch", 0, "epochs count from 0")
        grid = self._epoch_grid(epoch)
        mine = grid[self.rank :: self.world_size]
        return [row.reshape(-1).tolist() for row in mine]

    def _epoch_grid(self, epoch: int) -> np.ndarray:
        """The whole epoch over all ranks as ``(B, p, k)`` dataset indices."""
        rng = np.random.default_rng([self.seed, epoch])
        num_batches, p, k = self.batches_per_epoch, self.p, self.k
        primary = self._primary_groups
        extra_total = num_batches * p - int(primary.sum())
        room = num_batches - primary
        extra = (
            rng.multivariate_hypergeometric(room, extra_total)
            if extra_total
            else np.zeros_like(primary)
        )
        counts = primary + extra
        groups = [
            _draw_groups(members, k, int(count), rng)
            for members, count in zip(self._members, counts, strict=True)
        ]
        taken = np.zeros_like(counts)
        remaining = counts.copy()
        grid = np.empty((num_batches, p, k), dtype=np.int64)
        for batch in range(num_batches):
            chosen = _choose_classes(remaining, num_batches - batch, p, rng)
            for slot, c in enumerate(chosen):
                grid[batch, slot] = groups[c][taken[c]]
            taken[chosen] += 1
            remaining[chosen] -= 1
        return grid

    def __repr__(self) -> str:
        return (
            f"PKSampler(p={self.p}, k={self.k}, seed={self.seed}, mode={self.mode!r}, "
            f"classes={self.sampled_classes.shape[0]}, batches_per_epoch={self.batches_per_epoch}, "
            f"rank={self.rank}, world_size={self.world_size})"
        )
