"""Brute-force checks of P×K batches, written independently of tripletkit.data.sampler."""

from __future__ import annotations

from collections import Counter


def has_valid_triplet(batch_labels: list) -> bool:
    """Whether some positions a != p, n exist with label[a] == label[p] != label[n]."""
    size = len(batch_labels)
    for a in range(size):
        for p in range(size):
            if p == a or batch_labels[p] != batch_labels[a]:
                continue
            for n in range(size):
                if batch_labels[n] != batch_labels[a]:
                    return True
    return False


def data_has_valid_triplet(labels: list) -> bool:
    """Whether the whole data set has a class of >= 2 items and a second class."""
    counts = Counter(labels)
    return len(counts) >= 2 and max(counts.values()) >= 2


def pk_structure(batch: list[int], labels: list, p: int, k: int) -> tuple[int, set[int]]:
    """Number of distinct classes in ``batch`` and the set of per-class counts."""
    counts = Counter(labels[i] for i in batch)
    return len(counts), set(counts.values())


def distinct_items_per_class(batch: list[int], labels: list) -> dict:
    """For each class in the batch, how many distinct dataset items represent it."""
    items: dict = {}
    for i in batch:
        items.setdefault(labels[i], set()).add(i)
    return {c: len(v) for c, v in items.items()}
