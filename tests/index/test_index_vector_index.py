"""The vector index: exactness of flat search, recall of HNSW / IVF-PQ, metadata, persistence."""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tripletkit.evaluation import knn
from tripletkit.files import sha256_of_file

faiss = pytest.importorskip("faiss")
VectorIndex = pytest.importorskip("tripletkit.index").VectorIndex
storage = pytest.importorskip("tripletkit.index.storage")
Record = pytest.importorskip("tripletkit.index.metadata").Record


def clustered(n: int, dim: int = 16, per_cluster: int = 20, seed: int = 0) -> np.ndarray:
    """Gaussian clusters of about ``per_cluster`` points around random centres."""
    rng = np.random.default_rng(seed)
    centres = max(1, n // per_cluster)
    means = rng.standard_normal((centres, dim)).astype(np.float32)
    noise = 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return means[rng.integers(0, centres, n)] + noise


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact, strict=True)])
    )


@pytest.mark.parametrize("metric", ["cosine", "dot", "squared_euclidean", "euclidean"])
def test_flat_search_equals_exact_search(metric):
    x = torch.from_numpy(clustered(500)).double()
    queries = torch.from_numpy(clustered(40, seed=1)).double()
    index = VectorIndex.build(x, kind="flat", metric=metric)
    result = index.search(queries, k=5, with_metadata=False)
    exact = knn(queries, x, 5, distance=metric)
    np.testing.assert_array_equal(result.ids, exact.indices.numpy())
    np.testing.assert_allclose(result.distances, exact.distances.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_kinds_reach_high_recall(kind):
    data = clustered(12_200, dim=32, seed=2)
    x, queries = data[:12_000], data[12_000:]
    params = {"nlist": 64, "nprobe": 16} if kind == "ivfpq" else {}
    index = VectorIndex.build(x, kind=kind, **params)
    exact = VectorIndex.build(x, kind="flat").search(queries, 10, with_metadata=False)
    found = index.search(queries, 10, with_metadata=False)
    assert recall_at_k(found.ids, exact.ids) >= 0.95
    np.testing.assert_allclose(found.distances[:, 0], exact.distances[:, 0], atol=1e-4)


def test_auto_kind_follows_size(monkeypatch):
    import tripletkit.index.vector_index as module

    assert VectorIndex.build(np.eye(4, dtype=np.float32)).kind == "flat"
    monkeypatch.setattr(module, "AUTO_FLAT_MAX", 3)
    assert VectorIndex.build(np.eye(4, dtype=np.float32)).kind == "hnsw"


def test_metadata_is_returned_with_results():
    x = np.eye(4, dtype=np.float32)
    index = VectorIndex.build(
        x,
        ids=[10, 20, 30, 40],
        labels=[1, 2, None, 4],
        sources=["a.jpg", "b.jpg", "some text", None],
        extras=[{"k": 1}, None, {"nested": [1, 2]}, {}],
    )
    result = index.search(x[2:3], k=2)
    assert result.ids.tolist()[0][0] == 30
    assert result.metadata[0][0] == Record(30, None, "some text", {"nested": [1, 2]})
    assert index.get([40, 99]) == [Record(40, 4, None, {}), None]


def test_ids_are_assigned_in_sequence_and_checked():
    index = VectorIndex(3, kind="flat")
    assert index.add(np.eye(3, dtype=np.float32)).tolist() == [0, 1, 2]
    assert index.add(np.eye(3, dtype=np.float32)[:1], ids=[7]).tolist() == [7]
    assert index.add(np.eye(3, dtype=np.float32)[:1]).tolist() == [8]
    with pytest.raises(ValueError, match="already in the index"):
        index.add(np.eye(3, dtype=np.float32)[:1], ids=[7])
    with pytest.raises(ValueError, match="duplicates"):
        index.add(np.eye(3, dtype=np.float32)[:2], ids=[50, 50])
    with pytest.raises(ValueError, match="labels has 1 entries"):
        index.add(np.eye(3, dtype=np.float32)[:2], labels=[1])
    with pytest.raises(ValueError, match="JSON"):
        index.add(np.eye(3, dtype=np.float32)[:1], extras=[{"x": object()}])
    assert len(index) == 5


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_removed_items_are_never_returned(kind, tmp_path):
    x = clustered(10_000, dim=16, seed=4)
    params = {"nlist": 32} if kind == "ivfpq" else {}
    index = VectorIndex.build(x, kind=kind, **params)
    removed = np.arange(0, 10_000, 7)
    assert index.remove(removed) == removed.size
    assert index.remove([removed[0]]) == 0
    assert len(index) == 10_000 - removed.size
    result = index.search(x[:50], k=10)
    assert not np.isin(result.ids, removed).any()
    assert result.ids[1, 0] == 1  # an item's own vector is its nearest
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx")
    np.testing.assert_array_equal(loaded.search(x[:50], k=10).ids, result.ids)
    # Removing more than half compacts: the vectors are dropped, ids and metadata stay right.
    index.remove(np.arange(0, 10_000, 2))
    live = np.setdiff1d(np.arange(10_000), np.concatenate([removed, np.arange(0, 10_000, 2)]))
    assert len(index) == live.size and index._faiss.ntotal == live.size
    result = index.search(x[live[:20]], k=10)
    assert result.ids[:, 0].tolist() == live[:20].tolist()
    assert [r[0].id for r in result.metadata] == live[:20].tolist()


def test_save_and_load_round_trip(tmp_path):
    x = clustered(300)
    index = VectorIndex.build(x, labels=list(range(300)), metric="euclidean", kind="hnsw")
    path = index.save(tmp_path / "idx")
    loaded = VectorIndex.load(path)
    assert (loaded.kind, loaded.metric, loaded.dim, len(loaded)) == ("hnsw", "euclidean", 16, 300)
    a, b = index.search(x[:20], 5), loaded.search(x[:20], 5)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.distances, b.distances)
    assert a.metadata == b.metadata
    # Saving again over it replaces the files and leaves no stale ones behind.
    loaded.add(x[:1])
    loaded.save(path)
    assert len(VectorIndex.load(path)) == 301
    names = sorted(p.name for p in path.iterdir())
    assert len(names) == 3 and "manifest.json" in names


def test_an_interrupted_save_leaves_the_previous_index_intact(tmp_path, monkeypatch):
    path = tmp_path / "idx"
    VectorIndex.build(np.eye(3, dtype=np.float32), sources=["a", "b", "c"]).save(path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    bigger = VectorIndex.build(np.eye(4, dtype=np.float32))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(storage.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        bigger.save(path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert VectorIndex.load(path).get([2])[0].source == "c"


def test_corrupt_or_foreign_directories_give_clear_errors(tmp_path):
    path = VectorIndex.build(np.eye(3, dtype=np.float32)).save(tmp_path / "idx")
    manifest = json.loads((path / "manifest.json").read_text())
    vectors = path / manifest["files"]["vectors"]["name"]

    original = vectors.read_bytes()
    vectors.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ValueError, match="SHA-256"):
        VectorIndex.load(path)
    vectors.write_bytes(original[:10])
    with pytest.raises(ValueError, match="truncated"):
        VectorIndex.load(path)
    vectors.write_bytes(original)
    assert len(VectorIndex.load(path)) == 3

    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        VectorIndex.load(path)
    newer = dict(manifest, format_version=99)
    (path / "manifest.json").write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="format version 99"):
        VectorIndex.load(path)
    escaping = json.loads(json.dumps(manifest))
    escaping["files"]["vectors"]["name"] = "../elsewhere"
    (path / "manifest.json").write_text(json.dumps(escaping))
    with pytest.raises(ValueError, match="invalid vectors file"):
        VectorIndex.load(path)

    with pytest.raises(ValueError, match="not a directory"):
        VectorIndex.load(tmp_path / "missing")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"no manifest\.json"):
        VectorIndex.load(foreign)
    with pytest.raises(ValueError, match="refusing to write"):
        VectorIndex.build(np.eye(3, dtype=np.float32)).save(foreign)


class _Payload:
    """Unpickling this would create a marker file: loading must never unpickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "executed"))


def test_a_pickle_with_a_valid_checksum_is_rejected_without_running_it(tmp_path):
    path = VectorIndex.build(np.eye(3, dtype=np.float32)).save(tmp_path / "idx")
    manifest = json.loads((path / "manifest.json").read_text())
    marker = tmp_path / "marker"
    for role in ("vectors", "metadata"):
        target = path / manifest["files"][role]["name"]
        saved = target.read_bytes()
        target.write_bytes(pickle.dumps(_Payload(marker)))
        entry = manifest["files"][role]
        entry["bytes"] = target.stat().st_size
        entry["sha256"] = sha256_of_file(target)
        (path / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=r"not a readable faiss index|not an SQLite"):
            VectorIndex.load(path)
        assert not marker.exists()
        target.write_bytes(saved)
        entry["bytes"], entry["sha256"] = len(saved), sha256_of_file(target)


def test_eight_threads_of_queries_agree_with_serial_search():
    x = clustered(3_000, dim=16, seed=5)
    queries = clustered(400, dim=16, seed=6)
    for kind in ("flat", "hnsw"):
        index = VectorIndex.build(x, kind=kind, labels=list(range(3_000)))
        expected = index.search(queries, 8)
        outcomes: dict[int, object] = {}

        def run(worker: int, index=index, outcomes=outcomes) -> None:
            try:
                for _ in range(5):
                    mine = index.search(queries[worker::8], 8)
                    outcomes.setdefault(worker, mine)
                    if not np.array_equal(mine.ids, outcomes[worker].ids):
                        raise AssertionError("results changed between calls")
            except BaseException as err:
                outcomes[worker] = err

        threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for worker in range(8):
            got = outcomes[worker]
            assert not isinstance(got, BaseException), got
            np.testing.assert_array_equal(got.ids, expected.ids[worker::8])
            assert got.metadata == expected.metadata[worker::8]


def test_writers_wait_for_readers():
    x = clustered(2_000, dim=8, seed=7)
    index = VectorIndex.build(x, kind="flat")
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                result = index.search(x[:16], 4)
                assert (result.ids >= 0).all()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for start in range(0, 1_000, 100):
        index.add(x[start : start + 100])
        index.remove(np.arange(start, start + 50))
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == 2_000 + 1_000 - 500


def test_input_errors():
    index = VectorIndex.build(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="dimension 2"):
        index.search(np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((1, 3), dtype=np.float32), k=0)
    with pytest.raises(ValueError, match="unknown kind"):
        VectorIndex(3, kind="annoy")
    with pytest.raises(ValueError, match="unknown index parameter"):
        VectorIndex(3, kind="hnsw", efsearch=3)
    with pytest.raises(ValueError, match="at least 10,000"):
        VectorIndex.build(np.eye(3, dtype=np.float32), kind="ivfpq")
    result = index.search(np.eye(3, dtype=np.float32)[:1], k=5)
    assert result.ids[0, 0] == 0 and sorted(result.ids[0, 1:3]) == [1, 2]
    assert result.ids[0, 3:].tolist() == [-1, -1]
    assert np.isinf(result.distances[0, 3:]).all() and result.metadata[0][3] is None


def test_works_after_faiss_torch_utils_patched_faiss():
    # pytorch-metric-learning imports faiss.contrib.torch_utils, which swaps faiss's methods for
    # torch versions process-wide; the index must keep working in the same process.
    pytest.importorskip("faiss.contrib.torch_utils")
    x = clustered(400)
    for kind in ("flat", "hnsw"):
        index = VectorIndex.build(x, kind=kind)
        index.remove(np.arange(250))  # compacts: reconstructs and re-adds the vectors
        result = index.search(x[300:310], k=3)
        assert result.ids[:, 0].tolist() == list(range(300, 310))
