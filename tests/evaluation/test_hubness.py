"""Hubness offsets (CSLS over a query bank) and the searches that add per-reference offsets, against
dense float64 brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tripletkit.evaluation import (
    evaluate_text_retrieval,
    hubness_offsets,
    k_occurrence_skewness,
    knn,
)
from tripletkit.evaluation.search import check_reference_offsets, iter_knn
from tripletkit.evaluation.text import rank_of_correct

from . import reference
from .test_eval_search import EXACT_METRICS, integer_embeddings


def brute_force_offsets(references, bank, k: int, metric: str) -> np.ndarray:
    """-1/2 · the mean of each reference's k smallest distances to the bank (ties do not change
    the mean of the k smallest values)."""
    dense = reference.dense_distances(references, bank, metric)  # (C, B) float64
    return -0.5 * np.sort(dense, axis=1)[:, :k].mean(axis=1)


def integer_offsets(seed: int, n: int) -> torch.Tensor:
    """Offsets in halves: exact in float32, so corrected distances tie exactly when they should."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, (n,), generator=generator).float() / 2


def test_hand_checked_cosine_offsets_and_a_hub_pushed_back():
    # The bank: three queries around the x axis, one on the y axis.
    bank = torch.tensor([[1.0, 0.0], [1.0, 0.2], [1.0, -0.2], [0.0, 1.0]])
    # A hub on the x axis (near 3 bank queries) and a loner on the diagonal.
    corpus = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    offsets = hubness_offsets(corpus, bank, k=2)
    cos_hub = [1.0, 1.0 / np.sqrt(1.04)]  # its two nearest bank queries
    # [1, 0.2], then [1, 0] and [0, 1] tied (either gives the same mean).
    cos_loner = [1.2 / np.sqrt(2.0 * 1.04), 1.0 / np.sqrt(2.0)]
    expected = [
        -0.5 * np.mean([1 - c for c in cos_hub]),
        -0.5 * np.mean([1 - c for c in cos_loner]),
    ]
    np.testing.assert_allclose(offsets.numpy(), expected, rtol=1e-6)
    # A query slightly closer to the hub than to the loner: plain cosine ranks the hub first;
    # corrected, the loner wins, since the hub is near everyone.
    query = torch.tensor([[1.0, 0.38]])  # 20.8° from the hub, 24.2° from the loner
    plain = knn(query, corpus, 2)
    corrected = knn(query, corpus, 2, reference_offsets=offsets)
    assert plain.indices.tolist() == [[0, 1]]
    assert corrected.indices.tolist() == [[1, 0]]
    np.testing.assert_allclose(
        corrected.distances.numpy()[0],
        (plain.distances.numpy()[0] + offsets.numpy()[[0, 1]])[[1, 0]],
        rtol=1e-6,
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    c=st.integers(1, 40),
    b=st.integers(1, 40),
    metric=st.sampled_from(["cosine", *EXACT_METRICS]),
    tile_bytes=st.sampled_from([1, 2_000, 10**8]),
    data=st.data(),
)
def test_offsets_match_brute_force(seed, c, b, metric, tile_bytes, data):
    corpus = integer_embeddings(seed, c, low=-1, high=2)  # duplicates: ties among the bank
    bank = integer_embeddings(seed + 1, b, low=-1, high=2)
    if metric == "cosine":  # cosine needs non-zero rows
        corpus[corpus.abs().sum(1) == 0] = 1.0
        bank[bank.abs().sum(1) == 0] = 1.0
    k = data.draw(st.integers(1, b))
    got = hubness_offsets(corpus, bank, k, distance=metric, tile_bytes=tile_bytes)
    expected = brute_force_offsets(corpus, bank, k, metric)
    assert got.shape == (c,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 50),
    m=st.integers(1, 60),
    metric=st.sampled_from(EXACT_METRICS),
    tile_bytes=st.sampled_from([1, 2_000, 10**8]),
    against_itself=st.booleans(),
    data=st.data(),
)
def test_knn_with_offsets_matches_brute_force_with_ties(
    seed, n, m, metric, tile_bytes, against_itself, data
):
    queries = integer_embeddings(seed, n)
    references = queries if against_itself else integer_embeddings(seed + 1, m)
    offsets = integer_offsets(seed + 2, references.shape[0])
    available = references.shape[0] - int(against_itself)
    k = data.draw(st.integers(0, available))
    result = knn(
        queries,
        None if against_itself else references,
        k,
        distance=metric,
        tile_bytes=tile_bytes,
        reference_offsets=offsets,
    )
    dense = reference.dense_distances(queries, references, metric) + offsets.double().numpy()
    expected = reference.ranking(dense, exclude_self=against_itself)
    assert result.indices.tolist() == [row[:k] for row in expected]
    gathered = np.take_along_axis(dense, result.indices.numpy(), axis=1)
    np.testing.assert_allclose(result.distances.numpy(), gathered, rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), q=st.integers(1, 30), c=st.integers(1, 40))
def test_rank_of_correct_with_offsets_matches_brute_force(seed, q, c):
    queries = integer_embeddings(seed, q)
    corpus = integer_embeddings(seed + 1, c)
    offsets = integer_offsets(seed + 2, c)
    targets = np.random.default_rng(seed).integers(0, c, size=q)
    dense = reference.dense_distances(queries, corpus, "squared_euclidean") + offsets.numpy()
    correct = dense[np.arange(q), targets][:, None]
    expected = 1 + (dense < correct).sum(axis=1)  # ties count in the query's favour
    got = rank_of_correct(
        queries, corpus, targets, distance="squared_euclidean", corpus_offsets=offsets
    )
    assert got.tolist() == expected.tolist()


def test_zero_offsets_change_nothing_and_text_evaluation_uses_them():
    generator = torch.Generator().manual_seed(0)
    queries, docs = torch.randn(6, 4, generator=generator), torch.randn(9, 4, generator=generator)
    plain = knn(queries, docs, 5)
    zero = knn(queries, docs, 5, reference_offsets=np.zeros(9))
    assert plain.indices.tolist() == zero.indices.tolist()
    # Query 0's only relevant document is 3: a large offset sends it below the other 8
    # documents (out of the top 5); a large negative one puts it first.
    qrels = {0: {3: 1}}
    offsets = np.zeros(9)
    offsets[3] = 10.0
    pushed = evaluate_text_retrieval(queries, docs, qrels, ks=[1, 5], document_offsets=offsets)
    assert pushed.metrics["recall_at_5"] == 0.0
    pulled = evaluate_text_retrieval(queries, docs, qrels, ks=[1, 5], document_offsets=-offsets)
    assert pulled.metrics["recall_at_1"] == 1.0


def test_offsets_of_float64_embeddings_are_float64():
    generator = torch.Generator().manual_seed(1)
    corpus = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    bank = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    offsets = hubness_offsets(corpus, bank, 3, distance="euclidean")
    assert offsets.dtype == torch.float64
    np.testing.assert_allclose(
        offsets.numpy(), brute_force_offsets(corpus, bank, 3, "euclidean"), rtol=1e-12
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": 2.5}, "k must be an integer >= 1"),
        ({"k": True}, "k must be an integer >= 1"),
        ({"k": 8}, "query bank holds 7 queries"),
        ({"k": 3, "distance": "manhattan"}, "distance"),
    ],
)
def test_hubness_offsets_rejects_bad_arguments(kwargs, message):
    corpus, bank = torch.randn(5, 3), torch.randn(7, 3)
    with pytest.raises(ValueError, match=message):
        hubness_offsets(corpus, bank, **kwargs)


def test_bank_of_another_dimension_is_refused():
    with pytest.raises(ValueError, match="query_bank"):
        hubness_offsets(torch.randn(5, 3), torch.randn(7, 4), k=3)


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        (np.zeros(4), r"shape \(4,\)"),
        (np.zeros((5, 1)), r"shape \(5, 1\)"),
        (np.array(["a"] * 5), "real numbers"),
        (np.array([0, 0, np.nan, 0, 0]), "finite"),
        (np.array([0, 0, np.inf, 0, 0]), "finite"),
    ],
)
def test_bad_offsets_are_refused_by_every_search(offsets, message):
    queries, corpus = torch.randn(2, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match=message):
        knn(queries, corpus, 2, reference_offsets=offsets)
    with pytest.raises(ValueError, match=message):
        list(iter_knn(queries, corpus, 2, reference_offsets=offsets))
    with pytest.raises(ValueError, match=message):
        rank_of_correct(queries, corpus, [0, 1], corpus_offsets=offsets)
    with pytest.raises(ValueError, match=message):
        evaluate_text_retrieval(queries, corpus, {0: {1: 1}}, document_offsets=offsets)
    assert check_reference_offsets(None, 5, "x") is None


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    c=st.integers(1, 30),
    q=st.integers(1, 40),
    metric=st.sampled_from(EXACT_METRICS),
    data=st.data(),
)
def test_k_occurrence_skewness_matches_brute_force(seed, c, q, metric, data):
    references = integer_embeddings(seed, c)
    queries = integer_embeddings(seed + 1, q)
    k = data.draw(st.integers(1, c))
    ranked = reference.ranking(reference.dense_distances(queries, references, metric))
    counts = np.zeros(c)
    for row in ranked:
        for index in row[:k]:
            counts[index] += 1
    spread = counts.std()
    expected = 0.0 if spread == 0 else float(np.mean((counts - counts.mean()) ** 3) / spread**3)
    got = k_occurrence_skewness(references, queries, k, distance=metric)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_one_hub_found_by_every_query_is_strongly_skewed():
    generator = torch.Generator().manual_seed(3)
    references = torch.nn.functional.normalize(torch.randn(50, 8, generator=generator), dim=1)
    hub = references.mean(dim=0, keepdim=True)  # near everything: a hub by construction
    with_hub = torch.cat([references, hub / hub.norm()])
    queries = torch.nn.functional.normalize(torch.randn(400, 8, generator=generator), dim=1)
    assert k_occurrence_skewness(with_hub, queries, 1) > k_occurrence_skewness(
        references, queries, 1
    )
    # Every reference found exactly once: no spread, skewness 0.
    assert k_occurrence_skewness(references, references, 1) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        k_occurrence_skewness(references, queries, 0)
