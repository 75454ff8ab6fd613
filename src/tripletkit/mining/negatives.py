"""Hard negatives from a corpus (offline mining) for (query, positive) pairs, e.g. for RAG retrieval.

For each pair, the corpus is searched with the query's embedding and the nearest texts that are
*not* known positives become its negatives. Known positives are excluded by identical text and,
when ids are given, by id; all the positives of a query (every pair with the same query text)
are excluded, and so is the query's own text.

The nearest non-positive texts are often *false negatives*: unlabelled texts that are just as
relevant. Two guards, usable together:

* ``rank_range=(first, last)``: only candidates ranked ``first..last`` (1-based, among the
  de-duplicated corpus texts left after the exclusions) are eligible, so ``first=3`` skips the
  two most similar;
* ``max_score_ratio=r``: a candidate whose similarity to the query exceeds ``r`` times the
  similarity of the pair's positive is skipped (``r = 0.95``: within 5% of the positive).

Scores are cosine similarities (the index's cosine distance is ``1 - score``). The negatives of
a pair are the first ``num_negatives`` eligible candidates, hardest first; a pair with fewer
eligible candidates is dropped (counted in :attr:`MinedTriplets.dropped_pairs`).

**Large corpora.** With ``cache_dir``, the corpus (and query) embeddings are stored in chunks of
``chunk_size`` texts and the mined rows in chunks of ``chunk_size`` pairs, each file written
atomically under a folder named by a fingerprint of the texts, the model and the options. A run
that stops (crash, Ctrl-C) continues where it stopped when called again with the same arguments:
finished chunks are read back, not recomputed.

Example:
    >>> import torch
    >>> def encode(texts):  # a toy encoder: one dimension per first letter
    ...     return torch.stack([torch.eye(26)[ord(t[0]) - 97] + 0.01 * len(t) for t in texts])
    >>> mined = mine_hard_negatives(["apple?"], ["apple"], ["apple", "avocado", "banana"],
    ...                             encode, num_negatives=1, progress=False)
    >>> mined.rows()[0]["negative_1"]
    'avocado'
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tripletkit.files import atomic_write_text, write_atomic
from tripletkit.validation import check_texts

__all__ = [
    "MinedTriplets",
    "mine_hard_negatives",
    "read_triplets",
    "write_triplets",
]

#: An encoder: a text model (anything with ``embed(list[str], ...)``) or a function
#: ``list[str] -> (N, D)`` tensor / array.
Encoder = Any
#: Called after each chunk is stored: ``on_chunk(stage, chunk_index)`` with stage ``"corpus"``,
#: ``"queries"`` or ``"mined"`` (for progress reporting, or to stop a run in tests).
ChunkCallback = Callable[[str, int], None]

_FORMAT_VERSION = 1


@dataclass
class MinedTriplets:
    """The mined rows: one per kept pair, with ``num_negatives`` negatives each.

    Attributes:
        queries, positives: ``R`` texts.
        negatives: ``R`` lists of ``num_negatives`` texts, hardest first.
        positive_scores: ``(R,)`` float32 cosine similarity of query and positive.
        negative_scores: ``(R, num_negatives)`` float32 similarities of query and negatives.
        pair_index: ``(R,)`` int64, the input pair each row comes from.
        dropped_pairs: pairs without enough eligible negatives (not in the rows).
    """

    queries: list[str]
    positives: list[str]
    negatives: list[list[str]]
    positive_scores: np.ndarray
    negative_scores: np.ndarray
    pair_index: np.ndarray
    dropped_pairs: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def num_negatives(self) -> int:
        return int(self.negative_scores.shape[1]) if self.negative_scores.ndim == 2 else 0

    def columns(self) -> dict[str, list[Any]]:
        """Column name → values: ``query``, ``positive``, ``negative_1..n``, ``positive_score``,
        ``negative_1_score..n``."""
        columns: dict[str, list[Any]] = {"query": self.queries, "positive": self.positives}
        for j in range(self.num_negatives):
            columns[f"negative_{j + 1}"] = [row[j] for row in self.negatives]
        columns["positive_score"] = self.positive_scores.astype(float).tolist()
        for j in range(self.num_negatives):
            columns[f"negative_{j + 1}_score"] = self.negative_scores[:, j].astype(float).tolist()
        return columns

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts (see :meth:`columns` for the keys)."""
        columns = self.columns()
        return [{name: values[i] for name, values in columns.items()} for i in range(len(self))]


# Encoding ---------------------------------------------------------------------------------------


def _encode(encoder: Encoder, texts: list[str], batch_size: int) -> np.ndarray:
    if hasattr(encoder, "embed"):
        from tripletkit.models.text import embed_texts

        vectors = embed_texts(encoder, texts, batch_size=batch_size)
    elif callable(encoder):
        vectors = encoder(texts)
    else:
        raise TypeError(
            f"encoder must be a text model (with .embed) or a function list[str] -> (N, D); got "
            f"{type(encoder).__name__}"
        )
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(
            f"the encoder returned shape {vectors.shape} for {len(texts)} texts; expected "
            f"({len(texts)}, D)"
        )
    if not np.isfinite(vectors).all():
        raise ValueError("the encoder returned NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _model_fingerprint(encoder: Encoder, model_id: str | None) -> str | None:
    if model_id is not None:
        return str(model_id)
    if isinstance(encoder, torch.nn.Module):
        digest = hashlib.sha256()
        for name, tensor in sorted(encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()
    return None


def _texts_digest(*groups: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for texts in groups:
        digest.update(str(len(texts)).encode())
        for text in texts:
            digest.update(text.encode("utf-8"))
            digest.update(b"\0")
    return digest.hexdigest()


class _Progress:
    """tqdm when it is installed and asked for, else a plain counter on stderr (or nothing)."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.enabled = enabled
        self.total = total
        self.description = description
        self.done = 0
        self._bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=description, unit="text", leave=False)
            except ImportError:  # pragma: no cover - tqdm is a core dependency
                self._bar = None

    def update(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif self.enabled:
            sys.stderr.write(f"\r{self.description}: {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


def _save_array(path: Path, array: np.ndarray) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.save(handle, array)

    write_atomic(path, write)


def _chunked_embeddings(
    texts: list[str],
    encoder: Encoder,
    stage: str,
    folder: Path | None,
    chunk_size: int,
    batch_size: int,
    progress: bool,
    on_chunk: ChunkCallback | None,
) -> np.ndarray:
    """Embed ``texts`` chunk by chunk, reading chunks already stored in ``folder``."""
    parts: list[np.ndarray] = []
    bar = _Progress(progress, len(texts), f"embedding {stage}")
    try:
        for chunk, start in enumerate(range(0, len(texts), chunk_size)):
            piece = texts[start : start + chunk_size]
            path = folder / f"{stage}-{chunk:05d}.npy" if folder is not None else None
            if path is not None and path.is_file():
                vectors = np.load(path)
            else:
                vectors = _encode(encoder, piece, batch_size)
                if path is not None:
                    _save_array(path, vectors)
                if on_chunk is not None:
                    on_chunk(stage, chunk)
            parts.append(vectors)
            bar.update(len(piece))
    finally:
        bar.close()
    return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)


# Exclusions and candidate selection ---------------------------------------------------------------


def _check_rank_range(rank_range: tuple[int, int]) -> tuple[int, int]:
    try:
        first, last = (int(v) for v in rank_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"rank_range must be two integers (first, last); got {rank_range!r}"
        ) from None
    if first < 1 or last < first:
        raise ValueError(f"rank_range must satisfy 1 <= first <= last; got {rank_range!r}")
    return first, last


def _excluded_rows(
    queries: list[str],
    positives: list[str],
    corpus_row_of_text: dict[str, int],
    positive_ids: Sequence[Hashable] | None,
    corpus_row_of_id: dict[Hashable, int] | None,
) -> dict[str, set[int]]:
    """Unique-corpus rows each query text must never get as a negative."""
    excluded: dict[str, set[int]] = {}
    for i, (query, positive) in enumerate(zip(queries, positives, strict=True)):
        rows = excluded.setdefault(query, set())
        for text in (positive, query):
            row = corpus_row_of_text.get(text)
            if row is not None:
                rows.add(row)
        if positive_ids is not None and corpus_row_of_id is not None:
            row = corpus_row_of_id.get(positive_ids[i])
            if row is not None:
                rows.add(row)
    return excluded


def _select(
    candidate_rows: np.ndarray,
    candidate_scores: np.ndarray,
    excluded: set[int],
    positive_score: float,
    num_negatives: int,
    rank_range: tuple[int, int],
    max_score_ratio: float | None,
) -> list[tuple[int, float]]:
    chosen: list[tuple[int, float]] = []
    rank = 0
    for row, score in zip(candidate_rows.tolist(), candidate_scores.tolist(), strict=True):
        if row < 0 or row in excluded:
            continue
        rank += 1
        if rank < rank_range[0]:
            continue
        if rank > rank_range[1]:
            break
        if max_score_ratio is not None and score > max_score_ratio * positive_score:
            continue
        chosen.append((row, score))
        if len(chosen) == num_negatives:
            break
    return chosen


def _chunk_rows(
    pair_rows: range,
    query_vectors: np.ndarray,
    query_row_of_pair: np.ndarray,
    positive_scores: np.ndarray,
    excluded_by_pair: list[set[int]],
    index: Any,
    depth: int,
    num_negatives: int,
    rank_range: tuple[int, int],
    max_score_ratio: float | None,
) -> dict[str, np.ndarray]:
    pairs = np.asarray(pair_rows, dtype=np.int64)
    # One search per distinct query of the chunk.
    query_rows, inverse = np.unique(query_row_of_pair[pairs], return_inverse=True)
    found = index.search(query_vectors[query_rows], k=depth, with_metadata=False)
    scores = 1.0 - found.distances
    kept_pairs, negative_rows, negative_scores = [], [], []
    for position, pair in enumerate(pairs.tolist()):
        row_of_query = int(inverse[position])
        chosen = _select(
            found.ids[row_of_query],
            scores[row_of_query],
            excluded_by_pair[pair],
            float(positive_scores[pair]),
            num_negatives,
            rank_range,
            max_score_ratio,
        )
        if len(chosen) == num_negatives:
            kept_pairs.append(pair)
            negative_rows.append([row for row, _ in chosen])
            negative_scores.append([score for _, score in chosen])
    return {
        "pairs": np.asarray(kept_pairs, dtype=np.int64),
        "negative_rows": np.asarray(negative_rows, dtype=np.int64).reshape(-1, num_negatives),
        "negative_scores": np.asarray(negative_scores, dtype=np.float32).reshape(-1, num_negatives),
    }


def _load_chunk(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}


def _save_chunk(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    write_atomic(path, write)


# The public function ------------------------------------------------------------------------------


def mine_hard_negatives(
    queries: Sequence[str],
    positives: Sequence[str],
    corpus: Sequence[str],
    encoder: Encoder,
    *,
    num_negatives: int = 1,
    rank_range: tuple[int, int] = (1, 50),
    max_score_ratio: float | None = None,
    positive_ids: Sequence[Hashable] | None = None,
    corpus_ids: Sequence[Hashable] | None = None,
    index_kind: str = "flat",
    batch_size: int = 128,
    chunk_size: int = 8192,
    cache_dir: str | os.PathLike[str] | None = None,
    model_id: str | None = None,
    progress: bool = True,
    on_chunk: ChunkCallback | None = None,
) -> MinedTriplets:
    """Mine hard negatives for (query, positive) pairs from a corpus (see the module docstring).

    Args:
        queries, positives: ``P`` texts each, pair ``i`` = ``(queries[i], positives[i])``.
        corpus: the texts to take negatives from (duplicates are searched once).
        encoder: a text model (e.g. ``create_model("text_encoder")`` or a trained run's model)
            or a function ``list[str] -> (N, D)``; vectors are L2-normalised here.
        num_negatives: negatives per pair (``negative_1..n``).
        rank_range: ``(first, last)``: eligible candidate ranks, 1-based, after exclusions.
        max_score_ratio: skip candidates scoring above this times the positive's score
            (``None``: no such guard).
        positive_ids, corpus_ids: optional ids (``P`` and ``len(corpus)``); a corpus text whose
            id is a pair's positive id is excluded for that pair's query, like identical text.
        index_kind: the :class:`~tripletkit.index.VectorIndex` kind (``"flat"`` is exact;
            ``"hnsw"`` / ``"ivfpq"`` / ``"auto"`` for millions of texts).
        batch_size: texts per forward pass.
        chunk_size: texts per stored embedding chunk and pairs per stored output chunk.
        cache_dir: where chunks are kept to resume an interrupted run (``None``: in memory).
        model_id: names the encoder in the cache fingerprint (default: a hash of a module's
            weights; required with ``cache_dir`` for a plain function).
        progress: show progress bars (tqdm) on stderr.
        on_chunk: called as ``on_chunk(stage, chunk_index)`` after each newly computed chunk.

    Returns:
        :class:`MinedTriplets` in pair order.
    """
    queries = check_texts(queries, "queries")
    positives = check_texts(positives, "positives")
    corpus = check_texts(corpus, "corpus")
    if len(queries) != len(positives):
        raise ValueError(
            f"got {len(queries)} queries and {len(positives)} positives; they form pairs, so "
            "the counts must match"
        )
    if not corpus:
        raise ValueError("corpus is empty; negatives are taken from the corpus")
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(f"num_negatives must be an integer >= 1; got {num_negatives!r}")
    rank_range = _check_rank_range(rank_range)
    if num_negatives > rank_range[1] - rank_range[0] + 1:
        raise ValueError(
            f"rank_range {rank_range} holds {rank_range[1] - rank_range[0] + 1} candidates; "
            f"fewer than num_negatives={num_negatives}"
        )
    if max_score_ratio is not None:
        max_score_ratio = float(max_score_ratio)
        if not np.isfinite(max_score_ratio) or max_score_ratio <= 0:
            raise ValueError(f"max_score_ratio must be a number > 0; got {max_score_ratio!r}")
    for value, name in ((chunk_size, "chunk_size"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if positive_ids is not None and len(positive_ids) != len(queries):
        raise ValueError(f"positive_ids has {len(positive_ids)} ids for {len(queries)} pairs")
    if corpus_ids is not None and len(corpus_ids) != len(corpus):
        raise ValueError(f"corpus_ids has {len(corpus_ids)} ids for {len(corpus)} texts")

    # Unique corpus texts, and the other texts (queries, positives not in the corpus) to embed.
    unique_corpus = list(dict.fromkeys(corpus))
    corpus_row_of_text = {text: row for row, text in enumerate(unique_corpus)}
    corpus_row_of_id = (
        {i: corpus_row_of_text[text] for i, text in zip(corpus_ids, corpus, strict=True)}
        if corpus_ids is not None
        else None
    )
    other_texts = list(
        dict.fromkeys(queries + [p for p in positives if p not in corpus_row_of_text])
    )
    other_row = {text: row for row, text in enumerate(other_texts)}

    folder: Path | None = None
    if cache_dir is not None:
        fingerprint = _model_fingerprint(encoder, model_id)
        if fingerprint is None:
            raise ValueError(
                "cache_dir needs model_id for an encoder function (the cache must know which "
                "model made the embeddings); pass model_id='<a name for this encoder>'"
            )
        options = json.dumps(
            {
                "version": _FORMAT_VERSION,
                "model": fingerprint,
                "chunk_size": chunk_size,
                "num_negatives": num_negatives,
                "rank_range": rank_range,
                "max_score_ratio": max_score_ratio,
                "index_kind": index_kind,
                "ids": None
                if positive_ids is None or corpus_ids is None
                else _texts_digest([repr(i) for i in positive_ids], [repr(i) for i in corpus_ids]),
            },
            sort_keys=True,
        )
        key = _texts_digest(unique_corpus, queries, positives, [options])[:20]
        folder = Path(cache_dir) / f"mining-{key}"
        folder.mkdir(parents=True, exist_ok=True)
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            atomic_write_text(manifest, options + "\n")

    def embed(texts: list[str], stage: str) -> np.ndarray:
        return _chunked_embeddings(
            texts, encoder, stage, folder, chunk_size, batch_size, progress, on_chunk
        )

    corpus_vectors = embed(unique_corpus, "corpus")
    other_vectors = embed(other_texts, "queries")
    if other_vectors.shape[1] != corpus_vectors.shape[1]:
        raise ValueError("the encoder returned vectors of different dimensions")

    def vector_of(text: str) -> np.ndarray:
        row = other_row.get(text)
        return other_vectors[row] if row is not None else corpus_vectors[corpus_row_of_text[text]]

    query_vectors = np.stack([other_vectors[other_row[q]] for q in dict.fromkeys(queries)])
    query_row_of_text = {q: row for row, q in enumerate(dict.fromkeys(queries))}
    query_row_of_pair = np.array([query_row_of_text[q] for q in queries], dtype=np.int64)
    positive_scores = np.array(
        [float(vector_of(q) @ vector_of(p)) for q, p in zip(queries, positives, strict=True)],
        dtype=np.float32,
    )
    excluded_of_query = _excluded_rows(
        queries, positives, corpus_row_of_text, positive_ids, corpus_row_of_id
    )
    excluded_by_pair = [excluded_of_query[q] for q in queries]
    largest_exclusion = max((len(rows) for rows in excluded_of_query.values()), default=0)
    depth = min(len(unique_corpus), rank_range[1] + largest_exclusion)

    from tripletkit.index import VectorIndex

    index = VectorIndex.build(corpus_vectors, kind=index_kind, metric="cosine")
    chunks: list[dict[str, np.ndarray]] = []
    bar = _Progress(progress, len(queries), "mining")
    try:
        for chunk, start in enumerate(range(0, len(queries), chunk_size)):
            pair_rows = range(start, min(start + chunk_size, len(queries)))
            path = folder / f"mined-{chunk:05d}.npz" if folder is not None else None
            if path is not None and path.is_file():
                arrays = _load_chunk(path)
            else:
                arrays = _chunk_rows(
                    pair_rows,
                    query_vectors,
                    query_row_of_pair,
                    positive_scores,
                    excluded_by_pair,
                    index,
                    depth,
                    num_negatives,
                    rank_range,
                    max_score_ratio,
                )
                if path is not None:
                    _save_chunk(path, arrays)
                if on_chunk is not None:
                    on_chunk("mined", chunk)
            chunks.append(arrays)
            bar.update(len(pair_rows))
    finally:
        bar.close()

    kept = np.concatenate([c["pairs"] for c in chunks]) if chunks else np.zeros(0, np.int64)
    rows = (
        np.concatenate([c["negative_rows"] for c in chunks])
        if chunks
        else np.zeros((0, num_negatives), np.int64)
    )
    scores = (
        np.concatenate([c["negative_scores"] for c in chunks])
        if chunks
        else np.zeros((0, num_negatives), np.float32)
    )
    return MinedTriplets(
        queries=[queries[i] for i in kept.tolist()],
        positives=[positives[i] for i in kept.tolist()],
        negatives=[[unique_corpus[r] for r in row] for row in rows.tolist()],
        positive_scores=positive_scores[kept],
        negative_scores=scores.astype(np.float32),
        pair_index=kept,
        dropped_pairs=len(queries) - int(kept.size),
        stats={
            "pairs": len(queries),
            "corpus_texts": len(corpus),
            "unique_corpus_texts": len(unique_corpus),
            "search_depth": depth,
        },
    )


# Reading and writing ------------------------------------------------------------------------------

_FORMATS = (".parquet", ".csv", ".tsv", ".jsonl")


def write_triplets(path: str | os.PathLike[str], mined: MinedTriplets) -> Path:
    """Write the rows atomically as ``.parquet`` (needs pyarrow), ``.csv``, ``.tsv`` or
    ``.jsonl``; columns as :meth:`MinedTriplets.columns`."""
    path = Path(path)
    if path.suffix not in _FORMATS:
        raise ValueError(f"{str(path)!r}: unknown format; use one of {', '.join(_FORMATS)}")
    columns = mined.columns()
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError(
                "writing Parquet needs pyarrow: pip install 'tripletkit[data]' (or write .csv)"
            ) from err
        table = pa.table(columns)
        write_atomic(path, lambda temporary: pq.write_table(table, temporary))
    elif path.suffix == ".jsonl":
        lines = (json.dumps(row, ensure_ascii=False) for row in mined.rows())
        atomic_write_text(path, "".join(line + "\n" for line in lines))
    else:
        import csv

        def write(temporary: Path) -> None:
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
                writer.writerow(list(columns))
                writer.writerows(zip(*columns.values(), strict=True))

        write_atomic(path, write)
    return path


def read_triplets(path: str | os.PathLike[str]) -> dict[str, list[Any]]:
    """Columns of a file written by :func:`write_triplets` (any manifest format that
    :func:`tripletkit.data.manifests.read_manifest` reads)."""
    from tripletkit.data.manifests import read_manifest

    return read_manifest(path).columns
