"""Lexical hard negatives: documents named word for word inside the query.

A query that *mentions* a document is rarely answered by it. A dictionary definition names the
genus of the word it defines ("a star in Leo ..." defines *Denebola*, not *star*); a question
about a product names the category it belongs to. An embedding model matches the literal words
and ranks the mentioned document first. These are the negatives that BM25 supplied in DPR's
training: lexically close, and almost never false negatives.

:func:`mine_lexical_negatives` finds them without a model: for each query, the documents one of
whose parts (the pieces between ``separator``, e.g. the lemmas of a synonym set; the whole text
without a separator) occurs in the query as a whole-word phrase, case-insensitively. The query's
own positives (every positive of a pair with the same query text) and the query's own text are
never returned. The longest
matched part comes first (``"hydrogen atom"`` before ``"atom"``: the more specific mention), ties
in a seeded random order.

Example:
    >>> mine_lexical_negatives(
    ...     ["a star in Leo", "a large bright star"],
    ...     ["Denebola", "Sirius"],
    ...     ["star, celestial body", "Leo, Leo the Lion", "Denebola", "lion", "bright star"],
    ...     num_negatives=2,
    ... )
    [['star, celestial body', 'Leo, Leo the Lion'], ['bright star', 'star, celestial body']]
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np

from tripletkit.evaluation.text import split_parts

__all__ = ["find_mentions", "mention_pairs", "mine_lexical_negatives", "phrase_tokens"]

_TOKEN = re.compile(r"\w+(?:['\-.]\w+)*")


def phrase_tokens(text: str) -> tuple[str, ...]:
    """The lower-cased word tokens of ``text`` that phrases are matched on: runs of letters and
    digits, joined across inner apostrophes, hyphens and dots.

    >>> phrase_tokens("Shut-down the U.S. (army's) pay!")
    ('shut-down', 'the', 'u.s', "army's", 'pay')
    """
    return tuple(_TOKEN.findall(text.lower()))


def find_mentions(
    queries: Sequence[str], documents: Sequence[str], *, separator: str | None = ", "
) -> list[dict[int, int]]:
    """For each query, the documents it names: ``{document row: characters of the longest part
    named}``, a part occurring in the query as a whole-word phrase (on :func:`phrase_tokens`).

    >>> find_mentions(["a star in Leo"], ["Leo, Leo the Lion", "lion", "star", "Leo"])
    [{2: 4, 0: 3, 3: 3}]
    """
    if separator is not None and not separator:
        raise ValueError("separator must be a non-empty string or None")
    # phrase (tokens) -> the documents having it as a part
    index: dict[tuple[str, ...], list[int]] = {}
    for row, text in enumerate(documents):
        parts = [text] if separator is None else split_parts(text, separator)
        for tokens in {phrase_tokens(part) for part in parts}:
            if tokens:
                index.setdefault(tokens, []).append(row)
    longest = max((len(tokens) for tokens in index), default=0)
    found: list[dict[int, int]] = []
    for query in queries:
        words = phrase_tokens(query)
        lengths: dict[int, int] = {}
        for size in range(1, min(longest, len(words)) + 1):
            for start in range(len(words) - size + 1):
                phrase = words[start : start + size]
                for row in index.get(phrase, ()):
                    length = sum(map(len, phrase)) + size - 1
                    lengths[row] = max(lengths.get(row, 0), length)
        found.append(lengths)
    return found


def mention_pairs(
    queries: Sequence[str], documents: Sequence[str], *, separator: str | None = ", "
) -> tuple[np.ndarray, np.ndarray]:
    """Every (query row, document row) where the query names the document (:func:`find_mentions`),
    as two int64 arrays: with a penalty per pair, the ``pair_offsets`` of
    :func:`~tripletkit.evaluation.text.rank_of_correct`.

    >>> rows, docs = mention_pairs(["a star in Leo", "nothing"], ["Leo", "star", "moon"])
    >>> rows.tolist(), docs.tolist()
    ([0, 0], [1, 0])
    """
    mentions = find_mentions(queries, documents, separator=separator)
    rows = [row for row, found in enumerate(mentions) for _ in found]
    docs = [doc for found in mentions for doc in found]
    return np.asarray(rows, dtype=np.int64), np.asarray(docs, dtype=np.int64)


def mine_lexical_negatives(
    queries: Sequence[str],
    positives: Sequence[str],
    corpus: Sequence[str],
    *,
    num_negatives: int = 1,
    separator: str | None = ", ",
    seed: int = 0,
) -> list[list[str]]:
    """For each pair ``(queries[i], positives[i])``, up to ``num_negatives`` texts of ``corpus``
    (de-duplicated) mentioned in the query (see the module docstring); fewer, or none, when fewer
    are mentioned.

    Args:
        queries, positives: the pairs.
        corpus: the candidate documents.
        num_negatives: the most negatives per pair (>= 1).
        separator: splits a document into the parts that are matched (``None``: the whole text).
        seed: the order among equally long matches.

    Returns:
        One list per pair, longest matched part first.
    """
    queries, positives = list(queries), list(positives)
    if len(queries) != len(positives):
        raise ValueError(f"got {len(queries)} queries and {len(positives)} positives")
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(f"num_negatives must be an integer >= 1; got {num_negatives!r}")
    if separator is not None and not separator:
        raise ValueError("separator must be a non-empty string or None")
    documents = list(dict.fromkeys(corpus))
    mentions = find_mentions(queries, documents, separator=separator)
    answers: dict[str, set[str]] = {}
    for query, positive in zip(queries, positives, strict=True):
        answers.setdefault(query, set()).add(positive)
    rng = random.Random(seed)
    mined: list[list[str]] = []
    for query, match_length in zip(queries, mentions, strict=True):
        own = answers[query]
        found = [
            row for row in match_length if documents[row] not in own and documents[row] != query
        ]
        rng.shuffle(found)
        found.sort(key=lambda row: -match_length[row])  # stable: ties stay shuffled
        mined.append([documents[row] for row in found[:num_negatives]])
    return mined
