"""PKSampler: batch structure, epoch coverage, determinism, distributed split, bad input."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tests.data.sampler_reference import (
    data_has_valid_triplet,
    distinct_items_per_class,
    has_valid_triplet,
    pk_structure,
)

from tripletkit.data import ExcludedItemsWarning, PKSampler

# Class sizes: many small classes, singletons, and a long tail of a few large ones.
class_sizes = st.lists(
    st.one_of(st.integers(1, 6), st.integers(7, 40), st.integers(41, 120)), min_size=2, max_size=14
)


def labels_from_sizes(sizes: list[int], seed: int) -> list[int]:
    """Labels with the given class sizes, in a shuffled order (ids are not sorted by class)."""
    labels = [c for c, size in enumerate(sizes) for _ in range(size)]
    order = np.random.default_rng(seed).permutation(len(labels))
    return [labels[i] for i in order]


def build(labels, p, k, **kwargs) -> PKSampler:
    """A sampler; the report of excluded classes (tested on its own below) is silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedItemsWarning)
        return PKSampler(labels, p, k, **kwargs)


def test_hand_checked_small_case():
    # Classes 0: 3 items, 1: 4 items, 2: 3 items; K=2 -> groups 2, 2, 2 -> 6 groups, P=2 -> 3.
    labels = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    sampler = PKSampler(labels, p=2, k=2, seed=0)
    batches = sampler.batches(0)
    assert len(batches) == len(sampler) == 3
    used = Counter(i for b in batches for i in b)
    # Each item once; class 0 and class 2 each fill their partial group with one repeat.
    assert set(used) == set(range(10))
    assert sum(used.values()) == 12
    assert sorted(n for n in used.values() if n > 1) == [2, 2]
    for batch in batches:
        assert pk_structure(batch, labels, 2, 2) == (2, {2})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=class_sizes,
    p=st.integers(2, 5),
    k=st.integers(2, 6),
    seed=st.integers(0, 2**16),
    small=st.sampled_from(["fill", "drop"]),
    mode=st.sampled_from(["cover", "balanced"]),
)
def test_batches_have_p_classes_k_items_and_a_triplet(sizes, p, k, seed, small, mode):
    labels = labels_from_sizes(sizes, seed)
    counts = Counter(labels)
    min_size = k if small == "drop" else 2
    eligible = {c for c, n in counts.items() if n >= min_size}
    if len(eligible) < p:
        with pytest.raises(ValueError, match="classes per batch"):
            build(labels, p, k, seed=seed, small_classes=small, mode=mode)
        return
    sampler = build(labels, p, k, seed=seed, small_classes=small, mode=mode)
    batches = sampler.batches(0)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == p * k
        assert pk_structure(batch, labels, p, k) == (p, {k})
        assert {labels[i] for i in batch} <= eligible
        # Every class in a batch has >= 2 distinct items (never k copies of one item), and k
        # distinct items when it has >= k items.
        for c, distinct in distinct_items_per_class(batch, labels).items():
            assert distinct >= min(2, counts[c]) and distinct >= min(k, counts[c])
        if data_has_valid_triplet(labels):
            assert has_valid_triplet([labels[i] for i in batch])
    excluded = set(sampler.excluded_indices.tolist())
    assert excluded == {i for i, c in enumerate(labels) if c not in eligible}
    if mode == "cover":
        drawn = {i for b in batches for i in b}
        assert drawn == set(range(len(labels))) - excluded


@settings(max_examples=100, deadline=None)
@given(sizes=class_sizes, p=st.integers(2, 4), k=st.integers(2, 5), seed=st.integers(0, 999))
def test_cover_epoch_length_and_exactly_once_up_to_filler(sizes, p, k, seed):
    labels = labels_from_sizes(sizes, seed)
    counts = Counter(labels)
    eligible = {c: n for c, n in counts.items() if n >= 2}
    assume(len(eligible) >= p)
    sampler = build(labels, p, k, seed=seed)
    groups = {c: math.ceil(n / k) for c, n in eligible.items()}
    expected = max(math.ceil(sum(groups.values()) / p), max(groups.values()))
    assert sampler.batches_per_epoch == len(sampler) == expected
    # Without extra groups (all slots taken by the classes' own groups), every item is drawn
    # exactly once except the fillers of partial groups: at most k - 1 extra draws per class.
    if expected * p == sum(groups.values()):
        drawn = Counter(i for b in sampler.batches(0) for i in b)
        for c, n in eligible.items():
            extra = sum(drawn[i] for i, lab in enumerate(labels) if lab == c) - n
            assert extra == groups[c] * k - n


def test_long_tail_is_covered_not_half_skipped():
    # One class of 1,000 items and four of 10: the big class needs 250 batches of K=4, so every
    # one of its items must still be drawn (the epoch grows; small classes are re-drawn).
    labels = [0] * 1000 + [1, 2, 3, 4] * 10
    sampler = PKSampler(labels, p=2, k=4, seed=3)
    batches = sampler.batches(0)
    assert len(batches) == 250
    drawn = Counter(i for b in batches for i in b)
    assert all(drawn[i] == 1 for i in range(1000))
    assert all(drawn[i] >= 1 for i in range(1000, 1040))


def test_classes_meet_many_other_classes_in_an_epoch():
    # 100 classes × 64 items, P=16, K=4: each class is in 16 batches with 15 partners (240
    # partner slots over 99 other classes). Random batches reach about 90 distinct partners;
    # a fixed layout (class i always next to classes i±1..) would reach far fewer.
    labels = np.repeat(np.arange(100), 64)
    sampler = PKSampler(labels, p=16, k=4, seed=0)
    partners: dict[int, set[int]] = {c: set() for c in range(100)}
    for batch in sampler.batches(0):
        classes = {int(labels[i]) for i in batch}
        for c in classes:
            partners[c] |= classes - {c}
    assert np.median([len(v) for v in partners.values()]) >= 80


def test_balanced_mode_gives_every_class_the_same_share():
    labels = [0] * 400 + [1] * 40 + [2] * 8 + [3] * 8
    sampler = PKSampler(labels, p=2, k=4, seed=0, mode="balanced", groups_per_class=5)
    per_class = Counter(labels[i] for b in sampler.batches(0) for i in b)
    assert set(per_class.values()) == {20}
    assert sampler.batches_per_epoch == 10
    # The default is the median of ceil(n / k): (100, 10, 2, 2) -> 6.
    assert PKSampler(labels, p=2, k=4, mode="balanced").groups_per_class == 6


def test_deterministic_for_seed_and_epoch_and_advancing():
    labels = np.repeat(np.arange(12), 9)
    a = PKSampler(labels, p=4, k=3, seed=7)
    b = PKSampler(labels, p=4, k=3, seed=7)
    assert a.batches(2) == b.batches(2)
    assert a.batches(0) != a.batches(1)
    assert PKSampler(labels, p=4, k=3, seed=8).batches(0) != a.batches(0)
    # A full pass advances the epoch; set_epoch selects one.
    assert list(a) == b.batches(0)
    assert list(a) == b.batches(1)
    a.set_epoch(5)
    assert list(a) == b.batches(5)
    # A pass that stops early does not advance.
    a.set_epoch(3)
    next(iter(a))
    assert a.epoch == 3


@settings(max_examples=60, deadline=None)
@given(
    sizes=class_sizes,
    p=st.integers(2, 4),
    k=st.integers(2, 4),
    world=st.integers(1, 4),
    seed=st.integers(0, 999),
)
def test_ranks_get_disjoint_batches_and_the_same_number(sizes, p, k, world, seed):
    labels = labels_from_sizes(sizes, seed)
    assume(sum(n >= 2 for n in Counter(labels).values()) >= p)
    full = build(labels, p, k, seed=seed, rank=0, world_size=1)
    ranks = [build(labels, p, k, seed=seed, rank=r, world_size=world) for r in range(world)]
    lengths = {len(r) for r in ranks}
    assert len(lengths) == 1
    assert ranks[0].batches_per_epoch % world == 0
    assert ranks[0].batches_per_epoch >= full.batches_per_epoch
    per_rank = [r.batches(1) for r in ranks]
    # The ranks' batches are a partition of the epoch: rank r holds batches r, r + W, ...
    grid = ranks[0]._epoch_grid(1).reshape(ranks[0].batches_per_epoch, -1).tolist()
    for r in range(world):
        assert per_rank[r] == grid[r::world]
    # Every sampled item is drawn on some rank.
    drawn = {i for batches in per_rank for b in batches for i in b}
    assert drawn == set(range(len(labels))) - set(full.excluded_indices.tolist())


def test_ranks_are_item_disjoint_without_filler():
    # 8 classes × 12 items, K=4: 24 groups, P=2 -> 12 batches, split over 3 ranks with no filler,
    # so the ranks see disjoint sets of items that together are the whole data set.
    labels = np.repeat(np.arange(8), 12)
    seen = [
        set(i for b in PKSampler(labels, 2, 4, rank=r, world_size=3).batches(0) for i in b)
        for r in range(3)
    ]
    assert all(not (seen[a] & seen[b]) for a in range(3) for b in range(a + 1, 3))
    assert set().union(*seen) == set(range(96))


def test_defaults_come_from_torch_distributed(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)
    sampler = PKSampler(np.repeat(np.arange(6), 5), p=2, k=2)
    assert (sampler.rank, sampler.world_size) == (2, 3)


def test_single_item_classes_reported_once_and_excluded():
    labels = ["a", "a", "b", "b", "c", "d"]
    with pytest.warns(
        ExcludedItemsWarning, match=r"2 classes have a single item.*'c', 'd'.*2 of 6"
    ):
        sampler = PKSampler(labels, p=2, k=2)
    assert sampler.excluded_indices.tolist() == [4, 5]
    assert [sampler.classes[c] for c in sampler.sampled_classes] == ["a", "b"]
    # Iterating does not report again (pytest turns a second warning into an error).
    for _ in range(2):
        list(sampler)


def test_small_classes_fill_or_drop():
    labels = [0] * 8 + [1] * 8 + [2] * 2
    filled = PKSampler(labels, p=2, k=4)
    batches_with_2 = [b for b in filled.batches(0) if any(labels[i] == 2 for i in b)]
    assert batches_with_2
    for batch in batches_with_2:
        items = [i for i in batch if labels[i] == 2]
        assert len(items) == 4 and set(items) == {16, 17}
    with pytest.warns(ExcludedItemsWarning, match="fewer than k=4"):
        dropped = PKSampler(labels, p=2, k=4, small_classes="drop")
    assert dropped.excluded_indices.tolist() == [16, 17]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 1, "k": 2}, "p must be an integer >= 2"),
        ({"p": 2, "k": 1}, "k must be an integer >= 2"),
        ({"p": 2, "k": 2, "seed": -1}, "seed must be an integer >= 0"),
        ({"p": 2, "k": 2, "mode": "random"}, "unknown mode 'random'"),
        ({"p": 2, "k": 2, "small_classes": "keep"}, "unknown small_classes"),
        ({"p": 2, "k": 2, "rank": 2, "world_size": 2}, r"rank must be in \[0, world_size=2\)"),
        ({"p": 4, "k": 2}, "p=4 classes per batch, but only 3 of 3 classes"),
        ({"p": 2, "k": 2, "groups_per_class": 3}, "groups_per_class applies to mode='balanced'"),
    ],
)
def test_bad_arguments_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PKSampler([0, 0, 1, 1, 2, 2], **kwargs)


def test_bad_labels_are_explained():
    with pytest.raises(ValueError, match="labels is empty"):
        PKSampler([], 2, 2)
    with pytest.raises(ValueError, match="missing values"):
        PKSampler([0.0, float("nan"), 1.0, 1.0], 2, 2)
    with pytest.raises(ValueError, match="expected a 1-D array"):
        PKSampler(np.zeros((4, 2), dtype=np.int64), 2, 2)


def test_works_as_a_dataloader_batch_sampler():
    labels = torch.arange(10).repeat_interleave(6)
    dataset = torch.utils.data.TensorDataset(torch.randn(60, 3), labels)
    sampler = PKSampler(labels, p=5, k=3, seed=1)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    seen = 0
    for x, y in loader:
        assert x.shape == (15, 3)
        assert sorted(Counter(y.tolist()).values()) == [3] * 5
        seen += 1
    assert seen == len(sampler) == 4
    assert sampler.epoch == 1
