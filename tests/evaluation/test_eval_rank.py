"""Rank of the one correct item (ties, duplicates) and the metrics over ranks, hand-checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.evaluation.reference import blended_distances
from tripletkit.evaluation.search import DEFAULT_TILE_BYTES
from tripletkit.evaluation.text import rank_metrics, rank_of_correct, text_parts


def test_strictly_higher_only_counts() -> None:
    q = torch.tensor([[1.0, 0.0]])
    # cos to q: 0.6, 1.0, 0.6, 0.8
    corpus = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.6, -0.8], [0.8, 0.6]])
    assert rank_of_correct(q, corpus, [1]).tolist() == [1]
    assert rank_of_correct(q, corpus, [3]).tolist() == [2]
    # Items 0 and 2 tie at 0.6: neither pushes the other down.
    assert rank_of_correct(q, corpus, [0]).tolist() == [3]
    assert rank_of_correct(q, corpus, [2]).tolist() == [3]


def test_rank_does_not_depend_on_corpus_order_or_tile_size() -> None:
    rng = np.random.default_rng(0)
    q = torch.from_numpy(rng.normal(size=(37, 8)).astype(np.float32))
    corpus = torch.from_numpy(rng.normal(size=(101, 8)).astype(np.float32))
    targets = rng.integers(0, 101, size=37)
    ranks = rank_of_correct(q, corpus, targets)
    # Brute force in float64.
    qn = q.double() / q.double().norm(dim=1, keepdim=True)
    cn = corpus.double() / corpus.double().norm(dim=1, keepdim=True)
    sims = (qn @ cn.T).numpy()
    expected = 1 + (sims > sims[np.arange(37), targets][:, None]).sum(axis=1)
    assert ranks.tolist() == expected.tolist()
    permutation = rng.permutation(101)
    inverse = np.argsort(permutation)
    again = rank_of_correct(q, corpus[permutation], inverse[targets], tile_bytes=1000)
    assert again.tolist() == ranks.tolist()


def test_metrics_by_hand() -> None:
    metrics = rank_metrics([1, 3, 10, 11])
    assert metrics["recall_at_1"] == 0.25
    assert metrics["recall_at_10"] == 0.75
    assert metrics["mrr_at_10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 4)


def test_bad_targets() -> None:
    q, corpus = torch.ones(2, 3), torch.ones(4, 3)
    with pytest.raises(ValueError, match="targets"):
        rank_of_correct(q, corpus, [0])
    with pytest.raises(ValueError, match="corpus rows"):
        rank_of_correct(q, corpus, [0, 4])
    with pytest.raises(ValueError, match="ranks"):
        rank_metrics([0, 1])


# Items with parts (corpus_parts): (1 - w) * d + w * min(d, nearest part's d) ---------------------


def _reference_part_ranks(q, corpus, targets, part_embeddings, part_items, weight):
    """Brute force in float64, one query and one item at a time."""

    def cosine_distance(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return 1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    ranks, margins = [], []
    for query, target in zip(q, targets, strict=True):
        combined = []
        for row, item in enumerate(corpus):
            own = cosine_distance(query, item)
            nearest = own
            for part, owner in zip(part_embeddings, part_items, strict=True):
                if owner == row:
                    nearest = min(nearest, cosine_distance(query, part))
            combined.append((1 - weight) * own + weight * nearest)
        combined = np.array(combined)
        ranks.append(1 + int((combined < combined[target]).sum()))
        others = np.delete(combined, target)
        margins.append(np.abs(others - combined[target]).min() if others.size else np.inf)
    return np.array(ranks), np.array(margins)


def test_parts_by_hand() -> None:
    q = torch.tensor([[1.0, 0.0]])
    # Cosine distances to q: item 0: 1.0 (orthogonal), its part: 0.0; item 1: 0.2; item 2: 0.4.
    corpus = torch.tensor([[0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    parts = (torch.tensor([[1.0, 0.0], [0.0, -1.0]]), [0, 0])
    assert rank_of_correct(q, corpus, [0]).tolist() == [3]  # without parts item 0 is last
    # w = 0.5: item 0 is 0.5 * 1.0 + 0.5 * 0.0 = 0.5, behind 0.2 and 0.4.
    assert rank_of_correct(q, corpus, [0], corpus_parts=parts).tolist() == [3]
    # w = 0.7: 0.3, between 0.2 and 0.4. w = 0.9: 0.1, first; item 1 second.
    assert rank_of_correct(q, corpus, [0], corpus_parts=parts, part_weight=0.7).tolist() == [2]
    assert rank_of_correct(q, corpus, [0], corpus_parts=parts, part_weight=0.9).tolist() == [1]
    assert rank_of_correct(q, corpus, [1], corpus_parts=parts, part_weight=0.9).tolist() == [2]
    # w = 1: the nearest of whole and parts alone; item 0 first, item 2 (0.4) third.
    assert rank_of_correct(q, corpus, [2], corpus_parts=parts, part_weight=1.0).tolist() == [3]
    # A part farther than its item never moves it: only item 0's far part (distance 1.0).
    far = (torch.tensor([[0.0, -1.0]]), [1])
    for target in range(3):
        assert (
            rank_of_correct(q, corpus, [target], corpus_parts=far, part_weight=1.0).tolist()
            == rank_of_correct(q, corpus, [target]).tolist()
        )


@given(
    seed=st.integers(0, 2**32 - 1),
    num_items=st.integers(1, 12),
    num_parts=st.integers(0, 20),
    weight=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    tile_bytes=st.sampled_from([64, 10_000, DEFAULT_TILE_BYTES]),
)
@settings(max_examples=60, deadline=None)
def test_parts_match_the_brute_force_reference(seed, num_items, num_parts, weight, tile_bytes):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(5, 4))
    corpus = rng.normal(size=(num_items, 4))
    # Parts repeat items (several parts per item), and some parts are exact copies of their
    # item or of another part: ties between whole and part, and between parts.
    part_items = rng.integers(0, num_items, size=num_parts)
    part_embeddings = rng.normal(size=(num_parts, 4))
    if num_parts >= 2:
        part_embeddings[0] = corpus[part_items[0]]
        part_embeddings[1] = part_embeddings[0] * 2.0
        part_items[1] = part_items[0]
    targets = rng.integers(0, num_items, size=5)
    ranks = rank_of_correct(
        torch.from_numpy(q),
        torch.from_numpy(corpus),
        targets,
        corpus_parts=(torch.from_numpy(part_embeddings), part_items),
        part_weight=weight,
        tile_bytes=tile_bytes,
    )
    expected, margins = _reference_part_ranks(
        q, corpus, targets, part_embeddings, part_items, weight
    )
    clear = margins > 1e-9  # a near-tie may round either way; exact ties are checked by hand
    assert ranks[clear].tolist() == expected[clear].tolist()
    if weight == 0.0:  # no weight on the parts: the plain ranks
        assert ranks.tolist() == rank_of_correct(q, corpus, targets).tolist()


def test_text_parts_and_bad_parts() -> None:
    parts, items = text_parts(["dog, domestic dog", "cat", "a, , b", ""])
    assert parts == ["dog", "domestic dog", "a", "b"] and items.tolist() == [0, 0, 2, 2]
    assert text_parts(["x | y"], separator=" | ")[0] == ["x", "y"]
    with pytest.raises(ValueError, match="separator"):
        text_parts(["a"], separator="")
    q, corpus = torch.ones(2, 3), torch.ones(4, 3)
    good = torch.ones(2, 3)
    for bad, message in [
        ((good,), "pair"),
        ((torch.ones(2, 2), [0, 1]), "dim"),
        ((good, [0]), "corpus_parts rows have shape"),
        ((good, [0.0, 1.0]), "corpus_parts rows have shape"),
        ((good, [0, 4]), r"corpus_parts rows must be in \[0, 3\]"),
        ((good, [-1, 0]), r"corpus_parts rows must be in \[0, 3\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            rank_of_correct(q, corpus, [0, 1], corpus_parts=bad)
    for weight in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="part_weight"):
            rank_of_correct(q, corpus, [0, 1], corpus_parts=(good, [0, 1]), part_weight=weight)


def test_parts_are_compared_in_the_corpus_precision():
    q = torch.tensor([[1.0, 0.0]])
    corpus = torch.tensor([[0.0, 1.0], [1.0, 1e-4]], dtype=torch.float64)  # item 1 at 5e-9
    parts = (torch.tensor([[1.0, 2e-4]]), [0])  # float32; item 0 through it at 2e-8
    assert rank_of_correct(q, corpus, [1], corpus_parts=parts, part_weight=1.0).tolist() == [1]
    assert rank_of_correct(q, corpus, [0], corpus_parts=parts, part_weight=1.0).tolist() == [2]


# Offsets of single (query, item) pairs (pair_offsets) ---------------------------------------------


def test_pair_offsets_by_hand() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cosine distances: query 0 to items 0.0, 0.2, 1.0; query 1 to items 1.0, 0.4, 0.0
    corpus = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    assert rank_of_correct(q, corpus, [1, 1]).tolist() == [2, 2]
    # +0.3 on (query 0, item 0): 0.3 > 0.2, item 1 first for query 0 only
    pairs = ([0], [0], [0.3])
    assert rank_of_correct(q, corpus, [1, 1], pair_offsets=pairs).tolist() == [1, 2]
    # listed twice, a pair gets both: +0.1 +0.1 = 0.2 ties with item 1 (ties do not push down)
    pairs = ([0, 0], [0, 0], [0.1, 0.1])
    assert rank_of_correct(q, corpus, [1, 1], pair_offsets=pairs).tolist() == [1, 2]
    # unsorted query rows, a negative offset, and with a corpus offset on top
    pairs = ([1, 0], [1, 2], [-0.5, -0.9])
    assert rank_of_correct(q, corpus, [2, 1], pair_offsets=pairs).tolist() == [2, 1]
    both = rank_of_correct(
        q, corpus, [2, 1], pair_offsets=pairs, corpus_offsets=[0.0, 0.0, 0.15]
    ).tolist()
    assert both == [3, 1]  # query 0: item 2 at 1.0 - 0.9 + 0.15 = 0.25, behind 0.0 and 0.2


@given(
    seed=st.integers(0, 2**32 - 1),
    num_items=st.integers(1, 10),
    num_pairs=st.integers(0, 30),
    weight=st.sampled_from([0.0, 0.5, 1.0]),
    tile_bytes=st.sampled_from([64, 10_000, DEFAULT_TILE_BYTES]),
)
@settings(max_examples=60, deadline=None)
def test_pair_offsets_match_a_dense_reference(seed, num_items, num_pairs, weight, tile_bytes):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(6, 3))
    corpus = rng.normal(size=(num_items, 3))
    part_items = rng.integers(0, num_items, size=4)
    parts = rng.normal(size=(4, 3))
    query_rows = rng.integers(0, 6, size=num_pairs)
    item_rows = rng.integers(0, num_items, size=num_pairs)  # repeats: offsets add up
    values = rng.choice([-0.5, 0.25, 1.0], size=num_pairs)
    targets = rng.integers(0, num_items, size=6)
    dense = blended_distances(q, corpus, parts, part_items, "cosine", weight)
    np.add.at(dense, (query_rows, item_rows), values)
    correct = dense[np.arange(6), targets]
    expected = 1 + (dense < correct[:, None] - 1e-9).sum(axis=1)
    # skip layouts whose order hangs on float rounding
    gaps = np.abs(dense - correct[:, None])
    gaps[np.arange(6), targets] = np.inf
    if (gaps < 1e-5).any():
        return
    got = rank_of_correct(
        torch.from_numpy(q).float(),
        torch.from_numpy(corpus).float(),
        targets,
        corpus_parts=(torch.from_numpy(parts).float(), part_items),
        part_weight=weight,
        pair_offsets=(query_rows, item_rows, values),
        tile_bytes=tile_bytes,
    )
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize(
    "pairs, message",
    [
        (([0], [0]), "three arrays"),
        (([0, 1], [0], [1.0]), "shapes"),
        (([2], [0], [1.0]), r"query_rows must lie in \[0, 1\]"),
        (([0], [5], [1.0]), r"reference_rows must lie in \[0, 2\]"),
        (([0.5], [0], [1.0]), "integers"),
        (([0], [0], [float("nan")]), "finite"),
    ],
)
def test_bad_pair_offsets(pairs, message) -> None:
    with pytest.raises(ValueError, match=message):
        rank_of_correct(torch.ones(2, 3), torch.ones(3, 3), [0, 1], pair_offsets=pairs)
