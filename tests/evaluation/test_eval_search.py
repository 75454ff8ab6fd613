"""The chunked exact search against a dense brute-force ranking, ties included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tripletkit.evaluation.search as search
from tripletkit.evaluation.search import iter_knn, iter_rankings, knn

from . import reference

EXACT_METRICS = ["squared_euclidean", "euclidean", "dot"]


def integer_embeddings(
    seed: int, n: int, dim: int = 3, low: int = -2, high: int = 3
) -> torch.Tensor:
    """Small integer coordinates: float32 distances are exact, and many of them tie."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, dim), generator=generator).float()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 60),
    m=st.integers(1, 70),
    metric=st.sampled_from(EXACT_METRICS),
    tile_bytes=st.sampled_from([1, 2_000, 50_000, 10**8]),
    data=st.data(),
)
def test_knn_matches_brute_force_with_ties(seed, n, m, metric, tile_bytes, data):
    queries = integer_embeddings(seed, n)
    references = integer_embeddings(seed + 1, m)
    k = data.draw(st.integers(0, m))
    result = knn(queries, references, k, distance=metric, tile_bytes=tile_bytes)
    expected = reference.ranking(reference.dense_distances(queries, references, metric))
    assert result.indices.tolist() == [row[:k] for row in expected]
    dense = reference.dense_distances(queries, references, metric)
    gathered = np.take_along_axis(dense, result.indices.numpy(), axis=1)
    np.testing.assert_allclose(result.distances.numpy(), gathered, rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 60),
    metric=st.sampled_from(EXACT_METRICS),
    tile_bytes=st.sampled_from([1, 3_000, 10**8]),
    data=st.data(),
)
def test_knn_of_a_set_against_itself_excludes_each_query(seed, n, metric, tile_bytes, data):
    x = integer_embeddings(seed, n, low=-1, high=2)  # many exact duplicates at distance 0
    k = data.draw(st.integers(0, n - 1))
    result = knn(x, k=k, distance=metric, tile_bytes=tile_bytes)
    expected = reference.ranking(reference.dense_distances(x, x, metric), exclude_self=True)
    assert result.indices.tolist() == [row[:k] for row in expected]


@pytest.mark.parametrize("k", [1, 20, 299])
@pytest.mark.parametrize("metric", EXACT_METRICS)
def test_symmetric_knn_with_wide_tiles_and_ties(metric, k):
    """Tiles 150 wide: the transposed merge splits each into strips of 64, 64 and 22 columns."""
    x = integer_embeddings(7, 300, low=-1, high=2)
    result = knn(x, k=k, distance=metric, tile_bytes=150 * 150 * 8)
    expected = reference.ranking(reference.dense_distances(x, x, metric), exclude_self=True)
    assert result.indices.tolist() == [row[:k] for row in expected]


@pytest.mark.parametrize("tile_bytes", [300 * 300 * 8, 10**8])
@pytest.mark.parametrize("k", [1, 3, 64])
def test_screened_chunks_keep_every_neighbour(k, tile_bytes):
    """Random float32 distances and a small k: once the heaps fill, nearly every chunk of 64
    distances is skipped whole by the SIMD screen, so a wrong skip would lose a neighbour."""
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(700, 16, generator=generator)
    result = knn(x, k=k, distance="euclidean", tile_bytes=tile_bytes)
    expected = reference.ranking(reference.dense_distances(x, x, "euclidean"), exclude_self=True)
    assert result.indices.tolist() == [row[:k] for row in expected]
    queries = torch.randn(50, 16, generator=generator)
    result = knn(queries, x, k=k, distance="euclidean", tile_bytes=tile_bytes)
    expected = reference.ranking(reference.dense_distances(queries, x, "euclidean"))
    assert result.indices.tolist() == [row[:k] for row in expected]


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
def test_knn_on_random_float64_embeddings(metric):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(120, 8, generator=generator, dtype=torch.float64)
    result = knn(x, k=7, distance=metric, tile_bytes=4_000)
    expected = reference.ranking(reference.dense_distances(x, x, metric), exclude_self=True)
    assert result.indices.tolist() == [row[:7] for row in expected]
    assert result.distances.dtype == torch.float64


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 40),
    m=st.integers(1, 50),
    metric=st.sampled_from(EXACT_METRICS),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    same=st.booleans(),
    tile_bytes=st.sampled_from([1, 5_000, 10**8]),
)
def test_full_rankings_match_brute_force(seed, n, m, metric, dtype, same, tile_bytes):
    queries = integer_embeddings(seed, n).to(dtype)
    references = None if same else integer_embeddings(seed + 1, m).to(dtype)
    blocks = list(iter_rankings(queries, references, distance=metric, tile_bytes=tile_bytes))
    order = np.concatenate([b[2] for b in blocks]) if blocks else np.empty((0, 0))
    refs = queries if same else references
    expected = reference.ranking(reference.dense_distances(queries, refs, metric), same)
    assert order.tolist() == expected
    assert [b[0] for b in blocks] == sorted({b[0] for b in blocks})


def test_negative_zero_and_positive_zero_tie():
    # "dot" distances of these are -0.0 and +0.0: equal, so the lower index must win.
    queries = torch.tensor([[1.0, 0.0]])
    references = torch.tensor([[0.0, 5.0], [0.0, -5.0], [-1.0, 0.0]])
    order = next(iter_rankings(queries, references, distance="dot"))[2]
    assert order.tolist() == [[0, 1, 2]]
    assert knn(queries, references, 2, distance="dot").indices.tolist() == [[0, 1]]


def test_tiles_never_hold_the_full_distance_matrix(monkeypatch):
    shapes = []
    original = search.pairwise_distances_unchecked

    def recording(x, y, metric, out=None, normalized=False):
        shapes.append((x.shape[0], y.shape[0]))
        if normalized:  # rows scaled once for the whole search, not once per tile
            norms = torch.linalg.vector_norm(torch.cat([x, y]), dim=1)
            torch.testing.assert_close(norms, torch.ones_like(norms))
        if out is not None:  # the reused tile buffer is no larger than the tile
            assert out.numel() == x.shape[0] * y.shape[0]
            assert (
                out.untyped_storage().nbytes() * (1 + search._TOPK_BYTES_PER_ELEMENT / 4) <= budget
            )
        return original(x, y, metric, out=out, normalized=normalized)

    monkeypatch.setattr(search, "pairwise_distances_unchecked", recording)
    monkeypatch.setattr(search, "_MAX_REFERENCE_TILE", 256)
    x = torch.randn(2_000, 16)
    budget = 200_000
    cases = [(None, "euclidean"), (x[:1_500], "euclidean"), (None, "cosine"), (3 * x, "cosine")]
    for references, metric in cases:  # against itself (symmetric tiles), and a reference set
        shapes.clear()
        blocks = list(iter_knn(x, references, k=5, distance=metric, tile_bytes=budget))
        assert sum(stop - start for start, stop, _, _ in blocks) == 2_000
        assert max(r * c for r, c in shapes) * (4 + search._TOPK_BYTES_PER_ELEMENT) <= budget
        assert max(c for _, c in shapes) <= 256
        assert len(shapes) > 10


def test_numpy_inputs_are_accepted():
    x = np.eye(3, dtype=np.float32)
    assert knn(x, x, 1).indices.tolist() == [[0], [1], [2]]


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="only 4 references"):
        knn(x, k=5)
    with pytest.raises(ValueError, match="k must be an integer"):
        knn(x, k=-1)
    with pytest.raises(ValueError, match="dimension"):
        knn(x, torch.randn(4, 2), 1)
    with pytest.raises(ValueError, match="unknown distance"):
        knn(x, k=1, distance="manhattan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        knn(torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]), k=1)


def test_overflowing_distances_are_reported():
    x = torch.tensor([[3e38, 3e38], [-3e38, -3e38], [1.0, 1.0]])
    with pytest.raises(ValueError, match="overflowed"):
        knn(x, k=2, distance="squared_euclidean")


@settings(max_examples=50, deadline=None)
@given(
    rows=st.integers(0, 5),
    k=st.integers(0, 12),
    seed=st.integers(0, 2**16),
)
def test_sorted_heaps_orders_by_value_then_index(rows, k, seed):
    """Any rows (heaps or not, with ties and repeated indices) against numpy's lexsort."""
    from tripletkit.evaluation.topk_kernel import sorted_heaps

    rng = np.random.default_rng(seed)
    values = rng.integers(0, 4, (rows, k)).astype(np.float32)
    indices = rng.integers(0, 5, (rows, k)).astype(np.int32)
    before = values.copy(), indices.copy()
    got_values, got_indices = sorted_heaps(values, indices)
    order = np.lexsort((indices, values), axis=1)
    np.testing.assert_array_equal(got_values, np.take_along_axis(values, order, axis=1))
    np.testing.assert_array_equal(got_indices, np.take_along_axis(indices, order, axis=1))
    np.testing.assert_array_equal(values, before[0])  # the inputs are left alone
    np.testing.assert_array_equal(indices, before[1])


# References with parts: d - w * max(d - nearest part's d, 0) ------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
    m=st.integers(1, 40),
    num_parts=st.integers(0, 60),
    metric=st.sampled_from(EXACT_METRICS[:1] + EXACT_METRICS[2:]),  # exact: no square root
    weight=st.sampled_from([0.0, 0.25, 0.5, 1.0]),  # exact in binary: ties stay ties
    tile=st.sampled_from([1, 3, 32_768]),
    with_offsets=st.booleans(),
    against_itself=st.booleans(),
    data=st.data(),
)
def test_knn_with_parts_matches_brute_force_with_ties(
    seed, n, m, num_parts, metric, weight, tile, with_offsets, against_itself, data
):
    # Reference tiles of 1 and 3 split the parts of a tile from their neighbours' (the parts come
    # unsorted, so their order is the search's to restore).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search, "_MAX_REFERENCE_TILE", tile)
        _check_knn_with_parts(
            seed, n, m, num_parts, metric, weight, with_offsets, against_itself, data
        )


def _check_knn_with_parts(
    seed, n, m, num_parts, metric, weight, with_offsets, against_itself, data
):
    queries = integer_embeddings(seed, n)
    references = queries if against_itself else integer_embeddings(seed + 1, m)
    m = references.shape[0]
    parts = integer_embeddings(seed + 2, num_parts)
    owners = torch.randint(0, m, (num_parts,), generator=torch.Generator().manual_seed(seed))
    offsets = (
        torch.randint(-2, 3, (m,), generator=torch.Generator().manual_seed(seed + 3)).float()
        if with_offsets
        else None
    )
    k = data.draw(st.integers(0, m - 1 if against_itself else m))
    result = knn(
        queries,
        None if against_itself else references,
        k,
        distance=metric,
        reference_offsets=offsets,
        reference_parts=(parts, owners.numpy()),
        part_weight=weight,
    )
    dense = reference.blended_distances(
        queries, references, parts, owners.tolist(), metric, weight, offsets
    )
    expected = reference.ranking(dense, exclude_self=against_itself)
    assert result.indices.tolist() == [row[:k] for row in expected]
    gathered = np.take_along_axis(dense, result.indices.numpy(), axis=1)
    np.testing.assert_array_equal(result.distances.numpy(), gathered)


def test_knn_with_parts_by_hand_and_cosine():
    q = torch.tensor([[1.0, 0.0]])
    # Cosine distances: reference 0: 1.0, its parts 0.0 and 2.0; reference 1: 0.2.
    references = torch.tensor([[0.0, 3.0], [0.8, 0.6]])
    parts = (torch.tensor([[-1.0, 0.0], [2.0, 0.0]]), [0, 0])
    plain = knn(q, references, 2)
    assert plain.indices.tolist() == [[1, 0]]
    blended = knn(q, references, 2, reference_parts=parts)  # reference 0: 0.5 * 1 + 0.5 * 0
    assert blended.indices.tolist() == [[1, 0]]
    np.testing.assert_allclose(blended.distances.numpy(), [[0.2, 0.5]], atol=1e-6)
    first = knn(q, references, 2, reference_parts=parts, part_weight=0.9)  # 0.1
    assert first.indices.tolist() == [[0, 1]]
    np.testing.assert_allclose(first.distances.numpy(), [[0.1, 0.2]], atol=1e-6)
    none = knn(q, references, 2, reference_parts=(torch.empty(0, 2), []))
    assert torch.equal(none.distances, plain.distances)
    with pytest.raises(ValueError, match="part_weight"):
        knn(q, references, 1, reference_parts=parts, part_weight=2)
    with pytest.raises(ValueError, match=r"reference_parts rows must be in \[0, 1\]"):
        knn(q, references, 1, reference_parts=(parts[0], [0, 2]))


def test_knn_with_parts_computes_in_the_widest_dtype():
    q = torch.tensor([[1.0, 0.0]])
    references = torch.tensor([[0.0, 1.0], [1.0, 1e-4]], dtype=torch.float64)
    parts = (torch.tensor([[1.0, 2e-4]]), [0])  # float32 parts beside float64 references
    result = knn(q, references, 2, reference_parts=parts, part_weight=1.0)
    assert result.distances.dtype == torch.float64
    # Reference 1 at 5e-9 (float64 keeps it), reference 0 through its part at 2e-8.
    assert result.indices.tolist() == [[1, 0]]
    assert 0 < float(result.distances[0, 0]) < float(result.distances[0, 1])


# Offsets of single (query, reference) pairs ------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
    m=st.integers(1, 30),
    num_pairs=st.integers(0, 40),
    metric=st.sampled_from(EXACT_METRICS[:1] + EXACT_METRICS[2:]),  # exact: no square root
    tile=st.sampled_from([1, 3, 32_768]),
    with_parts=st.booleans(),
    against_itself=st.booleans(),
    data=st.data(),
)
def test_knn_with_pair_offsets_matches_brute_force_with_ties(
    seed, n, m, num_pairs, metric, tile, with_parts, against_itself, data
):
    queries = integer_embeddings(seed, n)
    references = queries if against_itself else integer_embeddings(seed + 1, m)
    m = references.shape[0]
    if against_itself and m < 2:
        return
    generator = torch.Generator().manual_seed(seed + 4)
    parts = integer_embeddings(seed + 2, 5 if with_parts else 0)
    owners = torch.randint(0, m, (parts.shape[0],), generator=generator)
    # Integer offsets on repeated pairs (they add up): ties stay exact.
    query_rows = torch.randint(0, n, (num_pairs,), generator=generator).numpy()
    reference_rows = torch.randint(0, m, (num_pairs,), generator=generator).numpy()
    values = torch.randint(-3, 4, (num_pairs,), generator=generator).float().numpy()
    k = data.draw(st.integers(0, m - 1 if against_itself else m))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search, "_MAX_REFERENCE_TILE", tile)
        result = knn(
            queries,
            None if against_itself else references,
            k,
            distance=metric,
            reference_parts=(parts, owners.numpy()) if with_parts else None,
            pair_offsets=(query_rows, reference_rows, values),
        )
    dense = reference.blended_distances(queries, references, parts, owners.tolist(), metric, 0.5)
    np.add.at(dense, (query_rows, reference_rows), values)
    expected = reference.ranking(dense, exclude_self=against_itself)
    assert result.indices.tolist() == [row[:k] for row in expected]
    gathered = np.take_along_axis(dense, result.indices.numpy(), axis=1)
    np.testing.assert_array_equal(result.distances.numpy(), gathered)


def test_knn_with_pair_offsets_by_hand():
    q = torch.tensor([[0.0], [1.0]])
    references = torch.tensor([[0.0], [2.0], [5.0]])
    # squared euclidean: query 0 to 0, 4, 25; query 1 to 1, 1, 16
    plain = knn(q, references, 3, distance="squared_euclidean")
    assert plain.indices.tolist() == [[0, 1, 2], [0, 1, 2]]
    pairs = ([1, 0, 1], [0, 0, 2], [0.5, 5.0, -20.0])  # unsorted, and one query's two pairs
    moved = knn(q, references, 3, distance="squared_euclidean", pair_offsets=pairs)
    assert moved.indices.tolist() == [[1, 0, 2], [2, 1, 0]]
    assert moved.distances.tolist() == [[4.0, 5.0, 25.0], [-4.0, 1.0, 1.5]]
    # a set against itself: an offset on a query's own row never brings the query back
    own = ([0, 1], [0, 2], [-99.0, -10.0])  # query 1 to reference 2: 9 - 10 = -1
    itself = knn(references, None, 1, distance="squared_euclidean", pair_offsets=own)
    assert itself.indices.tolist() == [[1], [2], [1]]
    with pytest.raises(ValueError, match=r"pair_offsets: reference_rows must lie in \[0, 2\]"):
        knn(q, references, 1, pair_offsets=([0], [3], [1.0]))
    with pytest.raises(ValueError, match=r"pair_offsets: query_rows must lie in \[0, 1\]"):
        knn(q, references, 1, pair_offsets=([2], [0], [1.0]))
