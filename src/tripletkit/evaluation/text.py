"""Text retrieval with relevance judgements (qrels): Recall@k, MRR@10 and nDCG@10.

Queries rank a corpus of documents; *qrels* say which documents are relevant to which query, with
an integer grade (0 = judged not relevant). The definitions follow ``trec_eval`` (as used by BEIR
and MS MARCO) for the ranking a model produced, with ``rel(i)`` the grade of the document at rank
``i`` (0 when unjudged):

* ``recall_at_k``: relevant documents (grade > 0) among the first ``k``, divided by the number of
  relevant documents of the query (the IR recall, unlike the hit rate of
  :mod:`tripletkit.evaluation.retrieval`);
* ``mrr_at_10``: ``1 / rank`` of the first relevant document if it is within the first 10, else 0;
* ``ndcg_at_10``: ``DCG@10 / IDCG@10`` with ``DCG@k = Σ_{i<=k} rel(i) / log2(i + 1)`` (linear
  gain, as trec_eval) and IDCG the DCG of the ideal order of the query's judged grades.

Queries without any relevant document are left out (counted in ``queries_without_relevant``).
Ties between equal distances rank the document with the lower index first.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tripletkit.distances import METRICS, Metric, pairwise_distances_unchecked
from tripletkit.evaluation.search import (
    DEFAULT_TILE_BYTES,
    as_embeddings,
    check_pair_offsets,
    check_reference_offsets,
    check_reference_parts,
    iter_knn,
)
from tripletkit.validation import check_choice, check_same_dim

__all__ = [
    "DEFAULT_TEXT_KS",
    "TextRetrievalEvaluation",
    "evaluate_text_retrieval",
    "rank_metrics",
    "rank_of_correct",
    "split_parts",
    "text_parts",
    "text_ranking_metrics",
]

#: The Recall@k cut-offs reported when none are given.
DEFAULT_TEXT_KS: tuple[int, ...] = (1, 5, 10, 100)

Qrels = Mapping[Hashable, Mapping[Hashable, int]]


@dataclass(frozen=True)
class TextRetrievalEvaluation:
    """Everything a text retrieval evaluation measured.

    Attributes:
        metrics: flat ``{name: value}``: ``recall_at_<k>``, ``mrr_at_10``, ``ndcg_at_10``,
            ``num_queries``, ``queries_without_relevant``.
        per_query: ``{metric: {query id: value}}`` for the evaluated queries.
    """

    metrics: dict[str, float]
    per_query: dict[str, dict[Hashable, float]] = field(repr=False)


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    values = sorted({int(k) for k in ks})
    if not values or values[0] < 1:
        raise ValueError(f"ks must be integers >= 1; got {ks!r}")
    return tuple(values)


def text_ranking_metrics(
    rankings: Mapping[Hashable, Sequence[Hashable]],
    qrels: Qrels,
    ks: Iterable[int] = DEFAULT_TEXT_KS,
) -> TextRetrievalEvaluation:
    """Recall@k, MRR@10 and nDCG@10 of given rankings (from any search, e.g. a ``VectorIndex``).

    Args:
        rankings: ``{query id: [document id, ...]}`` best first; at least ``max(ks)`` and 10
            documents per query for exact values (fewer count as not retrieved).
        qrels: ``{query id: {document id: grade}}``, grade > 0 meaning relevant.
        ks: the cut-offs of ``recall_at_<k>``.

    Returns:
        A :class:`TextRetrievalEvaluation` over the queries of ``qrels`` with a relevant document;
        such a query missing from ``rankings`` raises ``ValueError``.

    >>> r = text_ranking_metrics({"q1": ["d3", "d1", "d2"]}, {"q1": {"d1": 1, "d2": 2}}, ks=[1, 2])
    >>> {k: round(v, 4) for k, v in r.metrics.items()}
    {'recall_at_1': 0.0, 'recall_at_2': 0.5, 'mrr_at_10': 0.5, 'ndcg_at_10': 0.6199, 'num_queries': 1.0, 'queries_without_relevant': 0.0}
    """
    ks = _check_ks(ks)
    names = [*(f"recall_at_{k}" for k in ks), "mrr_at_10", "ndcg_at_10"]
    per_query: dict[str, dict[Hashable, float]] = {name: {} for name in names}
    without = 0
    discount = 1.0 / np.log2(np.arange(2, 12))
    for query, judged in qrels.items():
        grades = {doc: int(g) for doc, g in judged.items() if int(g) > 0}
        if not grades:
            without += 1
            continue
        if query not in rankings:
            raise ValueError(f"query {query!r} has relevant documents in qrels but no ranking")
        ranked = list(rankings[query])
        gains = np.array([grades.get(doc, 0) for doc in ranked], dtype=np.float64)
        hit = gains > 0
        for k in ks:
            per_query[f"recall_at_{k}"][query] = float(hit[:k].sum()) / len(grades)
        first = np.flatnonzero(hit[:10])
        per_query["mrr_at_10"][query] = 1.0 / (first[0] + 1) if first.size else 0.0
        top = gains[:10]
        ideal = np.sort(np.array(list(grades.values()), dtype=np.float64))[::-1][:10]
        dcg = float((top * discount[: top.size]).sum())
        idcg = float((ideal * discount[: ideal.size]).sum())
        per_query["ndcg_at_10"][query] = dcg / idcg
    evaluated = len(per_query["mrr_at_10"])
    if evaluated == 0:
        raise ValueError("no query in qrels has a relevant document (grade > 0)")
    metrics = {name: float(np.mean(list(values.values()))) for name, values in per_query.items()}
    metrics["num_queries"] = float(evaluated + without)
    metrics["queries_without_relevant"] = float(without)
    return TextRetrievalEvaluation(metrics, per_query)


def evaluate_text_retrieval(
    query_embeddings: Any,
    document_embeddings: Any,
    qrels: Qrels,
    *,
    query_ids: Sequence[Hashable] | None = None,
    document_ids: Sequence[Hashable] | None = None,
    ks: Iterable[int] = DEFAULT_TEXT_KS,
    distance: Metric | str = "cosine",
    tile_bytes: int = DEFAULT_TILE_BYTES,
    document_offsets: Any = None,
    document_parts: tuple[Any, Any] | None = None,
    part_weight: float = 0.5,
    pair_offsets: tuple[Any, Any, Any] | None = None,
) -> TextRetrievalEvaluation:
    """Rank the documents for each query by exact search, then score with qrels.

    Args:
        query_embeddings: ``(Q, D)`` float; document_embeddings: ``(C, D)`` float.
        qrels: ``{query id: {document id: grade}}``.
        query_ids: the id of each query row (default: its position 0..Q-1).
        document_ids: the id of each document row (default: its position 0..C-1).
        ks: the cut-offs of ``recall_at_<k>``.
        distance: one of ``tripletkit.distances.METRICS``.
        tile_bytes: memory for one tile of the search.
        document_offsets: ``(C,)`` numbers added to every distance to each document before
            ranking, e.g. :func:`tripletkit.evaluation.hubness.hubness_offsets`.
        document_parts: ``(part_embeddings, part_rows)``: parts of documents (chunks of a long
            text, the words of a list; :func:`text_parts`) and the document row of each; a
            document is then ranked through its whole and its nearest part, as in
            :func:`rank_of_correct`'s ``corpus_parts``.
        part_weight: in ``[0, 1]``, the weight of the nearest-part term.
        pair_offsets: ``(query_rows, document_rows, values)``, three ``(N,)`` arrays of rows of
            the embeddings: ``values[i]`` is added to the distance of query ``query_rows[i]`` to
            document ``document_rows[i]``, as in :func:`rank_of_correct`.

    Returns:
        A :class:`TextRetrievalEvaluation` (see :func:`text_ranking_metrics`).

    >>> import torch
    >>> q = torch.tensor([[1.0, 0.0]]); docs = torch.tensor([[0.0, 1.0], [1.0, 0.1]])
    >>> evaluate_text_retrieval(q, docs, {0: {1: 1}}, ks=[1]).metrics["mrr_at_10"]
    1.0
    """
    ks = _check_ks(ks)
    queries = as_embeddings(query_embeddings, "query_embeddings")
    documents = as_embeddings(document_embeddings, "document_embeddings")
    check_same_dim(queries, documents, "query_embeddings", "document_embeddings")
    query_ids = list(range(queries.shape[0])) if query_ids is None else list(query_ids)
    document_ids = list(range(documents.shape[0])) if document_ids is None else list(document_ids)
    if len(query_ids) != queries.shape[0] or len(document_ids) != documents.shape[0]:
        raise ValueError(
            f"got {len(query_ids)} query ids for {queries.shape[0]} queries and "
            f"{len(document_ids)} document ids for {documents.shape[0]} documents; they must match"
        )
    row_of = {query: row for row, query in enumerate(query_ids)}
    if len(row_of) != len(query_ids) or len(set(document_ids)) != len(document_ids):
        raise ValueError("query_ids and document_ids must be unique")
    wanted = [query for query, judged in qrels.items() if any(int(g) > 0 for g in judged.values())]
    missing = [query for query in wanted if query not in row_of]
    if missing:
        raise ValueError(
            f"{len(missing)} queries of qrels have no embedding (e.g. {missing[0]!r}); "
            "pass query_ids naming each row"
        )
    pairs = check_pair_offsets(pair_offsets, queries.shape[0], documents.shape[0], "pair_offsets")
    rows = np.array([row_of[query] for query in wanted], dtype=np.int64)
    if pairs is not None:
        pairs = pairs.subset(rows)
        pairs = (pairs.query_rows, pairs.reference_rows, pairs.values)
    depth = min(documents.shape[0], max(max(ks), 10))
    rankings: dict[Hashable, list[Hashable]] = {}
    if rows.size:
        for start, _, _, indices in iter_knn(
            queries[rows],
            documents,
            depth,
            distance=distance,
            tile_bytes=tile_bytes,
            reference_offsets=document_offsets,
            reference_parts=document_parts,
            part_weight=part_weight,
            pair_offsets=pairs,
        ):
            for offset, ranked in enumerate(indices):
                rankings[wanted[start + offset]] = [document_ids[i] for i in ranked]
    return text_ranking_metrics(rankings, qrels, ks)


def rank_of_correct(
    query_embeddings: Any,
    corpus_embeddings: Any,
    targets: Any,
    *,
    distance: Metric | str = "cosine",
    tile_bytes: int = DEFAULT_TILE_BYTES,
    corpus_offsets: Any = None,
    corpus_parts: tuple[Any, Any] | None = None,
    part_weight: float = 0.5,
    pair_offsets: tuple[Any, Any, Any] | None = None,
) -> np.ndarray:
    """The rank of each query's one correct corpus item: ``1 +`` the number of corpus items
    strictly closer to the query than the correct one.

    Ties count in the query's favour (an item at exactly the correct item's distance does not push
    it down), so the rank does not depend on corpus order; de-duplicate the corpus first when
    identical items must not count twice (as the WordNet protocol does).

    Args:
        query_embeddings: ``(Q, D)`` float; corpus_embeddings: ``(C, D)`` float.
        targets: ``(Q,)`` int, the corpus row of each query's correct item.
        distance: one of ``tripletkit.distances.METRICS``.
        tile_bytes: memory for one block of the ``(Q, C)`` distances.
        corpus_offsets: ``(C,)`` numbers added to every distance to each corpus item before
            ranking, e.g. :func:`tripletkit.evaluation.hubness.hubness_offsets`.
        corpus_parts: ``(part_embeddings, part_rows)``: ``(P, D)`` embeddings of parts of corpus
            items (e.g. each lemma of a list of synonyms, each chunk of a document; see
            :func:`text_parts`) and ``(P,)`` the corpus row each part belongs to. An item is
            then as far as ``(1 - part_weight) * d + part_weight * min(d, d_part)``, with ``d``
            its own distance and ``d_part`` its nearest part's (``d`` exactly for an item without
            parts): an item matches a query through its whole or through one of its parts
            (:class:`~tripletkit.evaluation.search.ReferenceParts`).
        part_weight: in ``[0, 1]``, the weight of the nearest-part term.
        pair_offsets: ``(query_rows, corpus_rows, values)``, three ``(N,)`` arrays: ``values[i]``
            is added to the distance of query ``query_rows[i]`` to item ``corpus_rows[i]`` (after
            the parts, with ``corpus_offsets``), e.g. a penalty for the items a query names
            (:func:`tripletkit.mining.lexical.mention_pairs`).

    Returns:
        ``(Q,)`` int64 ranks in ``[1, C]``.

    >>> import torch
    >>> q = torch.tensor([[1.0, 0.0]])
    >>> corpus = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    >>> rank_of_correct(q, corpus, [1]).tolist(), rank_of_correct(q, corpus, [0]).tolist()
    ([2], [4])
    """
    check_choice(distance, METRICS, "distance")
    queries = as_embeddings(query_embeddings, "query_embeddings")
    corpus = as_embeddings(corpus_embeddings, "corpus_embeddings")
    check_same_dim(queries, corpus, "query_embeddings", "corpus_embeddings")
    targets = np.asarray(targets)
    if targets.shape != (queries.shape[0],) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"targets has shape {targets.shape} and dtype {targets.dtype}; expected "
            f"({queries.shape[0]},) integer corpus rows, one per query"
        )
    if targets.size and (targets.min() < 0 or targets.max() >= corpus.shape[0]):
        raise ValueError(f"targets must be corpus rows in [0, {corpus.shape[0] - 1}]")
    offsets = check_reference_offsets(corpus_offsets, corpus.shape[0], "corpus_offsets")
    offset_row = None if offsets is None else torch.from_numpy(offsets)
    parts = check_reference_parts(corpus_parts, corpus, part_weight, "corpus_parts")
    pairs = check_pair_offsets(pair_offsets, queries.shape[0], corpus.shape[0], "pair_offsets")
    ranks = np.empty(queries.shape[0], dtype=np.int64)
    columns = corpus.shape[0] + (0 if parts is None else parts.embeddings.shape[0])
    block = max(1, tile_bytes // max(1, 8 * columns))
    target_tensor = torch.from_numpy(targets.astype(np.int64))
    with torch.no_grad():
        for start in range(0, queries.shape[0], block):
            stop = min(start + block, queries.shape[0])
            distances = pairwise_distances_unchecked(queries[start:stop], corpus, distance)
            if parts is not None:
                part_distances = pairwise_distances_unchecked(
                    queries[start:stop], parts.embeddings, distance
                )
                own = distances.cpu().numpy()
                parts.blend(own, part_distances.to(distances.dtype).cpu().numpy(), 0, 0)
                distances = torch.from_numpy(own)
            if offsets is not None:
                distances += offset_row.to(distances)
            if pairs is not None:
                pairs.add_to(distances, start)
            correct = distances.gather(1, target_tensor[start:stop, None].to(distances.device))
            closer = (distances < correct).sum(dim=1)
            ranks[start:stop] = closer.cpu().numpy() + 1
    return ranks


def split_parts(text: str, separator: str = ", ") -> list[str]:
    """The parts of one text: its pieces between ``separator``, stripped, empty ones dropped.

    >>> split_parts(" dog,  domestic dog, , Canis familiaris")
    ['dog', 'domestic dog', 'Canis familiaris']
    """
    if not separator:
        raise ValueError("separator must be a non-empty string")
    pieces = (piece.strip() for piece in text.split(separator))
    return [piece for piece in pieces if piece]


def text_parts(texts: Sequence[str], separator: str = ", ") -> tuple[list[str], np.ndarray]:
    """The parts of every text that has more than one: ``(part_texts, part_items)``, with
    ``part_items[i]`` the index of the text ``part_texts[i]`` came from; for
    :func:`rank_of_correct`'s ``corpus_parts``. Empty parts are dropped.

    >>> text_parts(["dog, domestic dog", "cat", "a, , b"])
    (['dog', 'domestic dog', 'a', 'b'], array([0, 0, 2, 2]))
    """
    if not separator:
        raise ValueError("separator must be a non-empty string")
    part_texts: list[str] = []
    items: list[int] = []
    for index, text in enumerate(texts):
        pieces = split_parts(text, separator)
        if len(pieces) > 1:
            part_texts += pieces
            items += [index] * len(pieces)
    return part_texts, np.asarray(items, dtype=np.int64)


def rank_metrics(ranks: Any, ks: Iterable[int] = (1, 10)) -> dict[str, float]:
    """Recall@k (the fraction of ranks <= k) and MRR@10 (mean of ``1 / rank`` for ranks <= 10,
    else 0) of one-correct-item retrieval.

    >>> rank_metrics([1, 2, 11, 4], ks=[1, 10])
    {'recall_at_1': 0.25, 'recall_at_10': 0.75, 'mrr_at_10': 0.4375}
    """
    ks = _check_ks(ks)
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0 or (ranks < 1).any():
        raise ValueError("ranks must be a non-empty 1-D array of integers >= 1")
    metrics = {f"recall_at_{k}": float((ranks <= k).mean()) for k in ks}
    metrics["mrr_at_10"] = float(np.where(ranks <= 10, 1.0 / ranks, 0.0).mean())
    return metrics
