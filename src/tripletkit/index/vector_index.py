"""A nearest-neighbour index of embeddings with their metadata, backed by faiss and SQLite.

Three kinds, by name or chosen from the number of vectors (``kind="auto"``):

============  ================================================  =====================================
kind          faiss structure                                   for
============  ================================================  =====================================
``"flat"``    exact search (``IndexFlatIP`` / ``IndexFlatL2``)  up to ~100,000 vectors; exact answers
``"hnsw"``    HNSW graph over the full vectors                  up to millions; fast, high recall
``"ivfpq"``   inverted lists + product-quantised codes,         millions+, trained; the short list is
              the short list re-ranked with the exact vectors   re-ranked exactly (``refine_factor``)
============  ================================================  =====================================

Distances follow :mod:`tripletkit.distances` ("smaller means closer") for the same four metric
names: ``cosine`` (vectors are L2-normalised and compared by inner product: ``1 - cos``), ``dot``
(``-x·y``), ``squared_euclidean`` and ``euclidean``. faiss computes them; the index converts its
inner products and squared L2 values to those conventions.

Items are identified by int64 ids (given, or assigned in sequence) and carry a label, a source (a
path or the text) and an extra JSON dict in SQLite (:mod:`tripletkit.index.metadata`). Removing an
item hides it from searches at once (a faiss ``IDSelector``); its vector is dropped for good when
removed items pass half of the index, or on :meth:`VectorIndex.compact`.

**Threads.** Any number of threads may search at the same time; ``add``, ``remove`` and
``compact`` wait for running searches and block new ones while they run (a readers-writer lock),
so mixing them is safe too, if not concurrent.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tripletkit.distances import METRICS
from tripletkit.evaluation.search import as_embeddings
from tripletkit.index import storage
from tripletkit.index.metadata import MetadataStore, Record
from tripletkit.validation import check_choice

try:
    import faiss
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tripletkit.index needs faiss; install it with: pip install 'tripletkit[index]'"
    ) from err

__all__ = ["INDEX_KINDS", "SearchResult", "VectorIndex"]

INDEX_KINDS = ("auto", "flat", "hnsw", "ivfpq")
#: ``kind="auto"`` uses exact search up to this many vectors ...
AUTO_FLAT_MAX = 100_000
#: ... HNSW up to this many, and IVF-PQ above.
AUTO_HNSW_MAX = 5_000_000
#: IVF-PQ trains 256 codewords per sub-quantiser: it needs at least this many vectors.
IVFPQ_MIN_TRAIN = 10_000

_DEFAULTS: dict[str, int] = {
    "hnsw_m": 32,
    "ef_construction": 80,
    "ef_search": 128,
    "nlist": 0,  # 0: chosen at training, about 4 sqrt(N)
    "nprobe": 64,
    "pq_m": 0,  # 0: chosen from the dimension, about D / 4 sub-quantisers
    "refine_factor": 16,
}


@dataclass(frozen=True)
class SearchResult:
    """The answer to a batch of queries.

    Attributes:
        ids: ``(Q, k)`` int64 item ids, nearest first; -1 where fewer than ``k`` items exist.
        distances: ``(Q, k)`` float32 distances in the index's metric (smaller means closer);
            +inf where ``ids`` is -1.
        metadata: ``Q`` lists of ``k`` :class:`~tripletkit.index.metadata.Record` (None where
            ``ids`` is -1).
    """

    ids: np.ndarray
    distances: np.ndarray
    metadata: list[list[Record | None]]


class _ReadersWriterLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            while self._writer or self._writers_waiting:
                self._condition.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                if self._readers == 0:
                    self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._condition.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._condition:
                self._writer = False
                self._condition.notify_all()


def _check_params(params: dict[str, Any]) -> dict[str, int]:
    unknown = set(params) - set(_DEFAULTS)
    if unknown:
        accepted = ", ".join(sorted(_DEFAULTS))
        raise ValueError(f"unknown index parameter(s) {sorted(unknown)}; accepted: {accepted}")
    merged = dict(_DEFAULTS)
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
        merged[name] = int(value)
    return merged


def _numpy_method(index: Any, name: str) -> Any:
    """faiss's numpy method ``name`` of ``index``.

    ``faiss.contrib.torch_utils`` (imported by pytorch-metric-learning, among others) replaces the
    methods of every faiss index class, process-wide, with torch versions that lack arguments
    such as ``params``; it keeps the originals as ``<name>_numpy``.
    """
    return getattr(index, f"{name}_numpy", None) or getattr(index, name)


def _auto_kind(n: int) -> str:
    if n <= AUTO_FLAT_MAX:
        return "flat"
    return "hnsw" if n <= AUTO_HNSW_MAX else "ivfpq"


def _default_nlist(n: int) -> int:
    # About 4 sqrt(N) lists, a power of two, with the 39 training vectors per list faiss asks for.
    nlist = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
    return int(max(1, min(65_536, nlist, n // 39)))


def _default_pq_m(dim: int) -> int:
    # The largest divisor of D that is at most D / 4 (each sub-quantiser codes >= 4 dimensions).
    target = max(1, dim // 4)
    return max(m for m in range(1, target + 1) if dim % m == 0)


class VectorIndex:
    """Embeddings, searchable by nearest neighbour, with per-item metadata.

    Build one with :meth:`build` (or create an empty one and :meth:`add`), query it with
    :meth:`search`, persist it with :meth:`save` / :meth:`load`.

    Args:
        dim: the vectors' dimension.
        metric: one of ``tripletkit.distances.METRICS``.
        kind: ``"flat"``, ``"hnsw"`` or ``"ivfpq"`` (``"auto"`` needs the vectors: use
            :meth:`build`).
        **params: ``hnsw_m`` (graph degree, 32), ``ef_construction`` (80), ``ef_search``
            (candidates kept while searching, 128), ``nlist`` (IVF lists; 0 = ~4√N), ``nprobe``
            (lists visited, 64), ``pq_m`` (sub-quantisers; 0 = ~D/4), ``refine_factor``
            (IVF-PQ re-ranks ``refine_factor · k`` candidates exactly, 16).

    >>> index = VectorIndex.build(torch.eye(3), labels=[0, 1, 2], sources=["a", "b", "c"])
    >>> result = index.search(torch.tensor([[0.9, 0.1, 0.0]]), k=2)
    >>> result.ids.tolist(), [r.source for r in result.metadata[0]]
    ([[0, 1]], ['a', 'b'])
    """

    def __init__(
        self, dim: int, *, metric: str = "cosine", kind: str = "flat", **params: int
    ) -> None:
        check_choice(metric, METRICS, "metric")
        check_choice(kind, INDEX_KINDS[1:], "kind")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be an integer >= 1; got {dim!r}")
        self.dim = int(dim)
        self.metric = metric
        self.kind = kind
        self.params = _check_params(params)
        self._faiss: Any = None if kind == "ivfpq" else self._new_faiss_index(0)
        self._ids_by_position = np.empty(0, dtype=np.int64)
        self._removed = 0
        self._selector: Any = None
        self._removed_selector: Any = None
        self._metadata = MetadataStore()
        self._lock = _ReadersWriterLock()

    # Construction ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        vectors: Any,
        *,
        ids: Any = None,
        labels: Sequence[Any] | None = None,
        sources: Sequence[Any] | None = None,
        extras: Sequence[Any] | None = None,
        kind: str = "auto",
        metric: str = "cosine",
        **params: int,
    ) -> VectorIndex:
        """A new index holding ``vectors`` and their metadata.

        Args:
            vectors: ``(N, D)`` float (tensor or numpy array).
            ids: ``(N,)`` distinct int64 ids >= 0 (default ``0..N-1``).
            labels: ``N`` ints or None; sources: ``N`` strings (path or text) or None;
                extras: ``N`` JSON-serialisable dicts or None.
            kind: ``"auto"`` (flat up to 100,000 vectors, HNSW up to 5,000,000, then IVF-PQ),
                or ``"flat"``, ``"hnsw"``, ``"ivfpq"``.
            metric, params: see :class:`VectorIndex`.

        >>> VectorIndex.build(torch.randn(10, 4)).kind
        'flat'
        """
        check_choice(kind, INDEX_KINDS, "kind")
        x = as_embeddings(vectors, "vectors")
        if kind == "auto":
            kind = _auto_kind(x.shape[0])
        index = cls(x.shape[1], metric=metric, kind=kind, **params)
        index.add(x, ids=ids, labels=labels, sources=sources, extras=extras)
        return index

    def _faiss_metric(self) -> int:
        if self.metric in ("cosine", "dot"):
            return faiss.METRIC_INNER_PRODUCT
        return faiss.METRIC_L2

    def _new_faiss_index(self, n_train: int) -> Any:
        metric = self._faiss_metric()
        if self.kind == "flat":
            return faiss.index_factory(self.dim, "Flat", metric)
        if self.kind == "hnsw":
            index = faiss.index_factory(self.dim, f"HNSW{self.params['hnsw_m']},Flat", metric)
            index.hnsw.efConstruction = self.params["ef_construction"]
            return index
        if not self.params["nlist"]:
            self.params["nlist"] = _default_nlist(n_train)
        if not self.params["pq_m"]:
            self.params["pq_m"] = _default_pq_m(self.dim)
        if self.dim % self.params["pq_m"]:
            raise ValueError(f"pq_m={self.params['pq_m']} must divide the dimension {self.dim}")
        # "np": no polysemous training (it only helps Hamming-filtered search, and is slow).
        spec = f"IVF{self.params['nlist']},PQ{self.params['pq_m']}x8np,RFlat"
        return faiss.index_factory(self.dim, spec, metric)

    def _prepare(self, vectors: Any, name: str) -> np.ndarray:
        x = as_embeddings(vectors, name)
        if x.shape[1] != self.dim:
            raise ValueError(
                f"{name} has dimension {x.shape[1]}; this index holds vectors of dimension "
                f"{self.dim}"
            )
        x = x.to(device="cpu", dtype=torch.float32)
        if self.metric == "cosine":
            x = F.normalize(x, dim=1)
        return np.ascontiguousarray(x.numpy())

    # Writing --------------------------------------------------------------------------------

    def add(
        self,
        vectors: Any,
        *,
        ids: Any = None,
        labels: Sequence[Any] | None = None,
        sources: Sequence[Any] | None = None,
        extras: Sequence[Any] | None = None,
    ) -> np.ndarray:
        """Add vectors with their metadata; returns their ids (``(N,)`` int64).

        An empty IVF-PQ index is trained on its first batch (at least 10,000 vectors).
        """
        x = self._prepare(vectors, "vectors")
        n = x.shape[0]
        with self._lock.writing():
            if ids is None:
                start = max(self._metadata.max_id(), int(self._ids_by_position.max(initial=-1)))
                new_ids = np.arange(start + 1, start + 1 + n, dtype=np.int64)
            else:
                new_ids = self._check_new_ids(ids, n)
            if self._faiss is None:
                if n < IVFPQ_MIN_TRAIN:
                    raise ValueError(
                        f"an IVF-PQ index is trained on its first batch, which needs at least "
                        f"{IVFPQ_MIN_TRAIN:,} vectors (got {n:,}); use kind='hnsw' or 'flat'"
                    )
                index = self._new_faiss_index(n)
                sample = min(n, max(64 * self.params["nlist"], IVFPQ_MIN_TRAIN))
                chosen = np.random.default_rng(0).choice(n, size=sample, replace=False)
                _numpy_method(index, "train")(x[np.sort(chosen)])
                self._faiss = index
            positions = np.arange(self._faiss.ntotal, self._faiss.ntotal + n, dtype=np.int64)
            # Metadata first: it validates the columns, and a failure leaves faiss untouched.
            self._metadata.insert(new_ids, positions, labels, sources, extras)
            _numpy_method(self._faiss, "add")(x)
            self._ids_by_position = np.concatenate([self._ids_by_position, new_ids])
        return new_ids

    def _check_new_ids(self, ids: Any, n: int) -> np.ndarray:
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        array = np.asarray(ids)
        if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"ids has shape {array.shape} and dtype {array.dtype}; expected {n} integers"
            )
        array = array.astype(np.int64)
        if n and int(array.min()) < 0:
            raise ValueError("ids must be >= 0 (-1 marks a missing result)")
        if np.unique(array).size != n:
            raise ValueError("ids contains duplicates; every item needs its own id")
        taken = self._metadata.existing(array)
        if taken:
            raise ValueError(f"{len(taken)} ids are already in the index (e.g. {taken[0]})")
        return array

    def remove(self, ids: Any) -> int:
        """Remove the items with these ids (unknown ids are ignored); returns how many were."""
        id_list = [int(i) for i in np.asarray(ids).reshape(-1)]
        with self._lock.writing():
            positions = self._metadata.delete(id_list)
            if positions.size == 0:
                return 0
            self._ids_by_position[positions] = -1
            self._removed += int(positions.size)
            if self._removed * 2 > self._ids_by_position.size:
                self._compact_locked()
            else:
                self._refresh_selector()
        return int(positions.size)

    def _refresh_selector(self) -> None:
        removed = np.flatnonzero(self._ids_by_position < 0).astype(np.int64)
        if removed.size == 0:
            self._selector = self._removed_selector = None
            return
        # IDSelectorNot keeps a raw pointer to the batch selector: hold a reference to it too.
        self._removed_selector = faiss.IDSelectorBatch(removed)
        self._selector = faiss.IDSelectorNot(self._removed_selector)

    def compact(self) -> None:
        """Drop the vectors of removed items for good (rebuilds the faiss structure)."""
        with self._lock.writing():
            self._compact_locked()

    def _stored_vectors(self) -> np.ndarray:
        index = self._faiss
        if self.kind == "ivfpq":
            index = faiss.downcast_index(index).refine_index
        out = np.empty((index.ntotal, self.dim), dtype=np.float32)
        _numpy_method(index, "reconstruct_n")(0, index.ntotal, out)
        return out

    def _compact_locked(self) -> None:
        if self._faiss is None or self._removed == 0:
            return
        live = np.flatnonzero(self._ids_by_position >= 0)
        vectors = self._stored_vectors()[live]
        fresh = faiss.clone_index(self._faiss)
        fresh.reset()
        if vectors.shape[0]:
            _numpy_method(fresh, "add")(vectors)
        ids = self._ids_by_position[live]
        self._metadata.renumber({int(i): p for p, i in enumerate(ids)})
        self._faiss = fresh
        self._ids_by_position = ids.copy()
        self._removed = 0
        self._refresh_selector()

    # Reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._ids_by_position.size - self._removed)

    def __repr__(self) -> str:
        return (
            f"VectorIndex(kind={self.kind!r}, metric={self.metric!r}, dim={self.dim}, "
            f"items={len(self)})"
        )

    def _search_parameters(self, ef_search: int | None, nprobe: int | None, k: int) -> Any:
        selector = self._selector
        if self.kind == "flat":
            return faiss.SearchParameters(sel=selector) if selector is not None else None
        if self.kind == "hnsw":
            ef = max(int(ef_search or self.params["ef_search"]), k)
            if selector is not None:
                return faiss.SearchParametersHNSW(efSearch=ef, sel=selector)
            return faiss.SearchParametersHNSW(efSearch=ef)
        probe = int(nprobe or self.params["nprobe"])
        if selector is not None:
            base = faiss.SearchParametersIVF(nprobe=probe, sel=selector)
            return faiss.IndexRefineSearchParameters(
                k_factor=self.params["refine_factor"], base_index_params=base, sel=selector
            )
        base = faiss.SearchParametersIVF(nprobe=probe)
        return faiss.IndexRefineSearchParameters(
            k_factor=self.params["refine_factor"], base_index_params=base
        )

    def _to_distances(self, raw: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return 1.0 - raw
        if self.metric == "dot":
            return -raw
        if self.metric == "euclidean":
            return np.sqrt(np.maximum(raw, 0.0))
        return np.maximum(raw, 0.0)

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
        with_metadata: bool = True,
    ) -> SearchResult:
        """The ``k`` nearest items of each query.

        Args:
            queries: ``(Q, D)`` float (tensor or numpy array).
            k: results per query (rows are padded with id -1 when the index has fewer items).
            ef_search: HNSW candidate list size for this call (default: the index's, >= k).
            nprobe: IVF lists to visit for this call (default: the index's).
            with_metadata: fetch the records from SQLite (``metadata`` is empty lists if not).

        Returns:
            A :class:`SearchResult`.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1; got {k!r}")
        q = self._prepare(queries, "queries")
        with self._lock.reading():
            if self._faiss is None or self._faiss.ntotal == 0:
                raw = np.zeros((q.shape[0], k), dtype=np.float32)
                positions = np.full((q.shape[0], k), -1, dtype=np.int64)
            else:
                params = self._search_parameters(ef_search, nprobe, int(k))
                search = _numpy_method(self._faiss, "search")
                raw, positions = search(q, int(k), params=params)
            found = positions >= 0
            ids = np.where(found, self._ids_by_position[np.where(found, positions, 0)], -1)
            records = self._metadata.records(ids[found].tolist()) if with_metadata else {}
        distances = np.where(found, self._to_distances(raw), np.inf).astype(np.float32)
        metadata = [[records.get(int(i)) for i in row] for row in ids] if with_metadata else []
        return SearchResult(ids, distances, metadata)

    def get(self, ids: Any) -> list[Record | None]:
        """The records of ``ids`` (None for ids not in the index)."""
        id_list = [int(i) for i in np.asarray(ids).reshape(-1)]
        with self._lock.reading():
            records = self._metadata.records(id_list)
        return [records.get(i) for i in id_list]

    # Persistence ----------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Save to ``directory`` atomically (see :mod:`tripletkit.index.storage`); returns it.

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = VectorIndex.build(torch.eye(2), sources=["x", "y"]).save(Path(tmp) / "idx")
        ...     VectorIndex.load(path).get([1])[0].source
        'y'
        """
        directory = Path(directory)
        with self._lock.reading():
            settings = {
                "kind": self.kind,
                "metric": self.metric,
                "dim": self.dim,
                "params": dict(self.params),
                "trained": self._faiss is not None,
                "positions": int(self._ids_by_position.size),
                "items": len(self),
            }
            faiss_index = self._faiss

            def write_vectors(path: Path) -> None:
                if faiss_index is None:
                    path.write_bytes(b"")
                else:
                    faiss.write_index(faiss_index, str(path))

            storage.write_index_directory(directory, settings, write_vectors, self._metadata.write)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> VectorIndex:
        """Load an index saved by :meth:`save`, checking format, version and checksums.

        Raises:
            ValueError: the directory is not a tripletkit index, is of another format version,
                or a file is missing, truncated or corrupt.
        """
        directory = Path(directory)
        manifest = storage.read_manifest(directory)
        try:
            index = cls(
                int(manifest["dim"]),
                metric=manifest["metric"],
                kind=manifest["kind"],
                **manifest["params"],
            )
            positions_total = int(manifest["positions"])
            trained = bool(manifest["trained"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{directory}: the manifest's settings are invalid: {err}") from err
        vectors_path = storage.verified_path(directory, manifest, "vectors")
        metadata_path = storage.verified_path(directory, manifest, "metadata")
        if trained:
            try:
                faiss_index = faiss.read_index(str(vectors_path))
            except RuntimeError as err:
                raise ValueError(f"{vectors_path} is not a readable faiss index: {err}") from err
            if faiss_index.d != index.dim or faiss_index.ntotal != positions_total:
                raise ValueError(
                    f"{vectors_path} holds {faiss_index.ntotal} vectors of dimension "
                    f"{faiss_index.d}; the manifest says {positions_total} of {index.dim}"
                )
            if faiss_index.metric_type != index._faiss_metric():
                raise ValueError(f"{vectors_path} uses another metric than the manifest says")
            index._faiss = faiss_index
        metadata = MetadataStore.read(metadata_path)
        ids, positions = metadata.positions()
        if positions.size and (positions.min() < 0 or positions.max() >= positions_total):
            raise ValueError(f"{metadata_path} refers to vectors the index does not have")
        index._metadata = metadata
        index._ids_by_position = np.full(positions_total, -1, dtype=np.int64)
        index._ids_by_position[positions] = ids
        index._removed = positions_total - int(ids.size)
        index._refresh_selector()
        return index
