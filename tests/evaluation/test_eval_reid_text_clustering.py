"""Re-identification, text retrieval and clustering metrics against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tripletkit.evaluation import (
    adjusted_mutual_information,
    evaluate_clustering,
    evaluate_reid,
    evaluate_text_retrieval,
    kmeans,
    normalized_mutual_information,
    text_ranking_metrics,
)

from . import reference


def integer_embeddings(seed: int, n: int, dim: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (n, dim), generator=generator).float()


# Re-identification -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    q=st.integers(1, 25),
    g=st.integers(1, 40),
    ids=st.integers(1, 5),
    cams=st.integers(1, 3),
    ignore=st.sampled_from([(), (0,)]),
    tile_bytes=st.sampled_from([1, 10**8]),
)
def test_reid_matches_brute_force(seed, q, g, ids, cams, ignore, tile_bytes):
    rng = np.random.default_rng(seed)
    queries, gallery = integer_embeddings(seed, q), integer_embeddings(seed + 1, g)
    q_ids, g_ids = rng.integers(0, ids, q), rng.integers(0, ids, g)
    q_cams, g_cams = rng.integers(0, cams, q), rng.integers(0, cams, g)
    distances = reference.dense_distances(queries, gallery, "euclidean")
    expected = reference.reid(distances, q_ids, q_cams, g_ids, g_cams, ignore)
    kwargs = dict(distance="euclidean", ignore_ids=ignore, tile_bytes=tile_bytes, max_rank=5)
    if all(e is None for e in expected):
        with pytest.raises(ValueError, match="no query has a match"):
            evaluate_reid(queries, q_ids, q_cams, gallery, g_ids, g_cams, **kwargs)
        return
    result = evaluate_reid(queries, q_ids, q_cams, gallery, g_ids, g_cams, **kwargs)
    defined = [e for e in expected if e is not None]
    assert result.metrics["map"] == pytest.approx(np.mean([e["ap"] for e in defined]))
    assert result.metrics["minp"] == pytest.approx(np.mean([e["inp"] for e in defined]))
    for r in (1, 5, 10):
        want = np.mean([e["first"] <= r for e in defined])
        assert result.metrics[f"cmc_rank_{r}"] == pytest.approx(want)
    assert result.cmc.shape == (5,)
    assert result.metrics["queries_without_match"] == len(expected) - len(defined)


def test_reid_market_rule_by_hand():
    query = torch.tensor([[0.0]])
    # Gallery: same id & same camera at distance 0 (ignored), other id at 1, same id other camera
    # at 2 and 4, ignored id -1 at 3.
    gallery = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    g_ids = [5, 6, 5, -1, 5]
    g_cams = [0, 1, 1, 1, 2]
    result = evaluate_reid(
        query, [5], [0], gallery, g_ids, g_cams, distance="euclidean", ignore_ids=(-1,)
    )
    # Remaining ranking: id6 (rank 1), match (rank 2), match (rank 3).
    assert result.metrics["cmc_rank_1"] == 0.0
    assert result.metrics["cmc_rank_5"] == 1.0
    assert result.metrics["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result.metrics["minp"] == pytest.approx(2 / 3)


# Text retrieval --------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), q=st.integers(1, 12), docs=st.integers(1, 40))
def test_text_metrics_match_brute_force(seed, q, docs):
    rng = np.random.default_rng(seed)
    queries, documents = integer_embeddings(seed, q), integer_embeddings(seed + 1, docs)
    qrels = {}
    for i in range(q):
        judged = rng.choice(docs, size=min(docs, int(rng.integers(0, 6))), replace=False)
        qrels[f"q{i}"] = {f"d{j}": int(rng.integers(0, 3)) for j in judged}
    query_ids = [f"q{i}" for i in range(q)]
    doc_ids = [f"d{j}" for j in range(docs)]
    ks = (1, 3, 100)
    ranked = reference.ranking(reference.dense_distances(queries, documents, "squared_euclidean"))
    rankings = {query_ids[i]: [doc_ids[j] for j in order] for i, order in enumerate(ranked)}
    expected = reference.text(rankings, qrels, ks)
    if not expected["mrr_at_10"]:
        with pytest.raises(ValueError, match="no query in qrels"):
            evaluate_text_retrieval(
                queries, documents, qrels, query_ids=query_ids, document_ids=doc_ids, ks=ks
            )
        return
    result = evaluate_text_retrieval(
        queries.double(),
        documents.double(),
        qrels,
        query_ids=query_ids,
        document_ids=doc_ids,
        ks=ks,
        distance="squared_euclidean",
    )
    for name, values in expected.items():
        assert result.per_query[name] == pytest.approx(values), name
        assert result.metrics[name] == pytest.approx(np.mean(list(values.values())))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    q=st.integers(1, 10),
    docs=st.integers(1, 30),
    num_parts=st.integers(0, 40),
    weight=st.sampled_from([0.0, 0.25, 0.5, 1.0]),  # exact in binary: ties stay ties
)
def test_text_metrics_with_document_parts_match_brute_force(seed, q, docs, num_parts, weight):
    rng = np.random.default_rng(seed)
    queries, documents = integer_embeddings(seed, q), integer_embeddings(seed + 1, docs)
    parts = integer_embeddings(seed + 2, num_parts)
    owners = rng.integers(0, docs, size=num_parts)
    qrels = {
        i: {int(j): 1 for j in rng.choice(docs, size=min(docs, 3), replace=False)} for i in range(q)
    }
    ks = (1, 3, 100)
    dense = reference.blended_distances(
        queries, documents, parts, owners.tolist(), "squared_euclidean", weight
    )
    rankings = dict(enumerate(reference.ranking(dense)))
    expected = reference.text(rankings, qrels, ks)
    result = evaluate_text_retrieval(
        queries,
        documents,
        qrels,
        ks=ks,
        distance="squared_euclidean",
        document_parts=(parts, owners),
        part_weight=weight,
    )
    for name, values in expected.items():
        assert result.per_query[name] == pytest.approx(values), name


def test_text_document_parts_by_hand():
    # Cosine: document 0 is 1.0 from the query, one of its parts 0.0; document 1 is 0.2.
    q = torch.tensor([[1.0, 0.0]])
    documents = torch.tensor([[0.0, 1.0], [0.8, 0.6]])
    parts = (torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), [0, 0])
    qrels = {0: {0: 1}}
    plain = evaluate_text_retrieval(q, documents, qrels, ks=[1])
    assert plain.metrics["recall_at_1"] == 0.0 and plain.metrics["mrr_at_10"] == 0.5
    # Weight 0.5: document 0 at 0.5 * 1.0 + 0.5 * 0.0 = 0.5, still behind document 1's 0.2.
    half = evaluate_text_retrieval(q, documents, qrels, ks=[1], document_parts=parts)
    assert half.metrics["recall_at_1"] == 0.0
    # Weight 0.9: document 0 at 0.1, now first.
    most = evaluate_text_retrieval(
        q, documents, qrels, ks=[1], document_parts=parts, part_weight=0.9
    )
    assert most.metrics["recall_at_1"] == 1.0
    with pytest.raises(ValueError, match="part_weight"):
        evaluate_text_retrieval(q, documents, qrels, document_parts=parts, part_weight=1.5)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    q=st.integers(1, 10),
    docs=st.integers(1, 30),
    num_pairs=st.integers(0, 30),
    with_parts=st.booleans(),
)
def test_text_metrics_with_pair_offsets_match_brute_force(seed, q, docs, num_pairs, with_parts):
    rng = np.random.default_rng(seed)
    queries, documents = integer_embeddings(seed, q), integer_embeddings(seed + 1, docs)
    parts = integer_embeddings(seed + 2, 6)
    owners = rng.integers(0, docs, size=6)
    # Only some queries are judged, under ids in another order than the rows: the offsets name
    # rows of the embeddings, whichever queries the qrels keep.
    query_ids = [f"q{i}" for i in rng.permutation(q)]
    judged = rng.choice(q, size=int(rng.integers(1, q + 1)), replace=False)
    qrels = {
        query_ids[i]: {int(j): 1 for j in rng.choice(docs, size=min(docs, 2), replace=False)}
        for i in judged
    }
    pairs = (
        rng.integers(0, q, size=num_pairs),
        rng.integers(0, docs, size=num_pairs),
        rng.integers(-3, 4, size=num_pairs).astype(np.float64),
    )
    ks = (1, 3, 100)
    weight = 0.5 if with_parts else 0.0
    dense = reference.blended_distances(
        queries, documents, parts, owners.tolist(), "squared_euclidean", weight
    )
    np.add.at(dense, (pairs[0], pairs[1]), pairs[2])
    rankings = {query_ids[i]: order for i, order in enumerate(reference.ranking(dense))}
    expected = reference.text(rankings, qrels, ks)
    result = evaluate_text_retrieval(
        queries,
        documents,
        qrels,
        query_ids=query_ids,
        ks=ks,
        distance="squared_euclidean",
        document_parts=(parts, owners) if with_parts else None,
        pair_offsets=pairs,
    )
    for name, values in expected.items():
        assert result.per_query[name] == pytest.approx(values), name


def test_text_pair_offsets_by_hand_and_errors():
    # Cosine: the query is 0.0 from document 0 and 0.2 from document 1.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    documents = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    qrels = {0: {1: 1}}
    assert evaluate_text_retrieval(q, documents, qrels, ks=[1]).metrics["recall_at_1"] == 0.0
    # A penalty of 0.3 on (query 0, document 0) puts document 1 first; one on query 1 changes
    # nothing (query 1 is not judged).
    moved = evaluate_text_retrieval(
        q, documents, qrels, ks=[1], pair_offsets=([1, 0], [1, 0], [5.0, 0.3])
    )
    assert moved.metrics["recall_at_1"] == 1.0
    with pytest.raises(ValueError, match=r"pair_offsets: query_rows must lie in \[0, 1\]"):
        evaluate_text_retrieval(q, documents, qrels, pair_offsets=([2], [0], [1.0]))


def test_text_hand_checked_ndcg():
    qrels = {"q": {"a": 3, "b": 1, "c": 0}}
    result = text_ranking_metrics({"q": ["c", "b", "x", "a"]}, qrels, ks=[2, 4])
    dcg = 1 / np.log2(3) + 3 / np.log2(5)
    idcg = 3 / np.log2(2) + 1 / np.log2(3)
    assert result.metrics["ndcg_at_10"] == pytest.approx(dcg / idcg)
    assert result.metrics["mrr_at_10"] == 0.5
    assert result.metrics["recall_at_2"] == 0.5 and result.metrics["recall_at_4"] == 1.0


def test_text_errors():
    with pytest.raises(ValueError, match="no ranking"):
        text_ranking_metrics({}, {"q": {"a": 1}})
    with pytest.raises(ValueError, match="have no embedding"):
        evaluate_text_retrieval(torch.eye(2), torch.eye(2), {"zz": {0: 1}})


# Clustering ------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 200),
    a=st.integers(1, 12),
    b=st.integers(1, 12),
)
def test_nmi_and_ami_equal_scikit_learn(seed, n, a, b):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    labels, clusters = rng.integers(0, a, n), rng.integers(0, b, n)
    assert normalized_mutual_information(labels, clusters) == pytest.approx(
        metrics.normalized_mutual_info_score(labels, clusters), abs=1e-10
    )
    assert adjusted_mutual_information(labels, clusters) == pytest.approx(
        metrics.adjusted_mutual_info_score(labels, clusters), abs=1e-9
    )


def test_ami_with_many_terms_uses_chunks():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels, clusters = rng.integers(0, 40, 3_000), rng.integers(0, 35, 3_000)
    expected = metrics.adjusted_mutual_info_score(labels, clusters)
    from tripletkit.evaluation.clustering import _contingency, _expected_mutual_information

    table = _contingency(labels, clusters)
    assert _expected_mutual_information(table, max_terms=1_000) == pytest.approx(
        _expected_mutual_information(table)
    )
    assert adjusted_mutual_information(labels, clusters) == pytest.approx(expected, abs=1e-9)


def test_hand_checked_partitions():
    assert normalized_mutual_information([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert normalized_mutual_information([0, 0, 1, 1], [0, 1, 0, 1]) == 0.0
    assert adjusted_mutual_information([0, 0, 0], [1, 1, 1]) == 1.0


def test_kmeans_is_a_lloyd_fixed_point_and_deterministic():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(300, 5, generator=generator, dtype=torch.float64)
    result = kmeans(x, 6, seed=3, max_iterations=100, tile_bytes=20_000)
    distances = reference.dense_distances(x, result.centroids, "squared_euclidean")
    np.testing.assert_array_equal(result.assignments.numpy(), distances.argmin(axis=1))
    for c in range(6):
        members = x[result.assignments == c]
        torch.testing.assert_close(result.centroids[c], members.mean(dim=0))
    assert result.inertia == pytest.approx(distances.min(axis=1).sum())
    again = kmeans(x, 6, seed=3, max_iterations=100)
    assert torch.equal(again.assignments, result.assignments)


def test_clustering_recovers_separated_classes():
    generator = torch.Generator().manual_seed(2)
    labels = torch.arange(200) % 4
    centres = 10 * torch.randn(4, 8, generator=generator)
    x = centres[labels] + torch.randn(200, 8, generator=generator)
    scores = evaluate_clustering(x, labels)
    assert scores["nmi"] == pytest.approx(1.0) and scores["ami"] == pytest.approx(1.0)


def test_kmeans_with_duplicates_and_errors():
    x = torch.zeros(5, 2)
    assert kmeans(x, 3).assignments.shape == (5,)
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans(x, 6)
