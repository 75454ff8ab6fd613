"""Lexical hard negatives: hand-checked cases and a brute-force reference over random texts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripletkit.mining.lexical import mine_lexical_negatives, phrase_tokens


def test_hand_checked_mentions() -> None:
    queries = [
        "A Star in LEO, near a starling",  # case-insensitive, whole words only
        "a salt with two hydrogen atoms",
        "a salt with two hydrogen atoms",  # the same query again, with another positive
        "nothing here",
    ]
    positives = ["Denebola", "dibasic salt", "salt", "void"]
    corpus = [
        "star",
        "leo, Leo the Lion",
        "starlings",  # not a whole word of any query
        "hydrogen atoms, H",
        "atoms",
        "salt",  # a positive of query 1's text (pair 2): never its negative
        "two",
        "star",  # duplicate text: returned once
    ]
    got = mine_lexical_negatives(queries, positives, corpus, num_negatives=5, seed=0)
    assert got[0] == ["star", "leo, Leo the Lion"] or got[0] == ["leo, Leo the Lion", "star"]
    # "hydrogen atoms" (14 characters) before "atoms" (5) before "two" (3)
    assert got[1] == ["hydrogen atoms, H", "atoms", "two"]
    assert got[2] == ["hydrogen atoms, H", "atoms", "two"]  # "salt" is its own positive...
    assert "dibasic salt" not in got[2]
    assert got[3] == []
    # the limit keeps the longest mentions
    limited = mine_lexical_negatives(queries, positives, corpus, num_negatives=1)
    assert limited[1] == ["hydrogen atoms, H"]


def test_ties_follow_the_seed_and_are_reproducible() -> None:
    query = ["w1 w2 w3 w4 w5 w6"]
    corpus = ["w1", "w2", "w3", "w4", "w5", "w6"]  # all the same length
    orders = {
        tuple(mine_lexical_negatives(query, ["x"], corpus, num_negatives=6, seed=s)[0])
        for s in range(20)
    }
    assert all(sorted(order) == corpus for order in orders)
    assert len(orders) > 1  # the seed changes the order of ties
    again = mine_lexical_negatives(query, ["x"], corpus, num_negatives=6, seed=3)
    assert again == mine_lexical_negatives(query, ["x"], corpus, num_negatives=6, seed=3)


def test_separator_none_matches_whole_texts_and_query_text_is_excluded() -> None:
    corpus = ["red, blue", "red", "a red car"]
    got = mine_lexical_negatives(["a red car"], ["car"], corpus, num_negatives=5, separator=None)
    assert got == [["red"]]  # "red, blue" as a whole is not in the query; the query itself is out
    got = mine_lexical_negatives(["a red car"], ["car"], corpus, num_negatives=5)
    assert sorted(got[0]) == ["red", "red, blue"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_negatives=0), "num_negatives"),
        (dict(num_negatives=True), "num_negatives"),
        (dict(separator=""), "separator"),
    ],
)
def test_bad_options(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        mine_lexical_negatives(["q"], ["p"], ["c"], **kwargs)
    with pytest.raises(ValueError, match="2 queries and 1 positives"):
        mine_lexical_negatives(["q", "r"], ["p"], ["c"])


def test_phrase_tokens() -> None:
    assert phrase_tokens("Genus Canis: (dogs), U.K.-based; it's") == (
        "genus",
        "canis",
        "dogs",
        "u.k",  # a run of two separators ends the token
        "based",
        "it's",
    )


_WORDS = st.sampled_from(["ab", "Ab", "c", "de", "ab-c", "f", "(c)", "ab,"])
_TEXT = st.lists(_WORDS, min_size=1, max_size=5).map(" ".join)
_DOCUMENT = st.lists(_TEXT, min_size=1, max_size=3).map(", ".join)


def _reference(queries, positives, corpus, separator):
    """Every mention, by string search over the space-joined tokens, with the length of its
    longest mentioned part."""
    out = []
    for query in queries:
        own = {p for q, p in zip(queries, positives, strict=True) if q == query} | {query}
        padded = " " + " ".join(phrase_tokens(query)) + " "
        found = {}
        for document in dict.fromkeys(corpus):
            if document in own:
                continue
            parts = [document] if separator is None else document.split(separator)
            for part in parts:
                words = " ".join(phrase_tokens(part))
                if words and f" {words} " in padded:
                    found[document] = max(found.get(document, 0), len(words))
        out.append(found)
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(_TEXT, _DOCUMENT), min_size=1, max_size=6),
    st.lists(_DOCUMENT, max_size=8),
    st.sampled_from([", ", None]),
    st.integers(0, 3),
)
def test_against_brute_force(pairs, corpus, separator, seed) -> None:
    queries = [q for q, _ in pairs]
    positives = [p for _, p in pairs]
    got = mine_lexical_negatives(
        queries, positives, positives + corpus, num_negatives=100, separator=separator, seed=seed
    )
    expected_rows = _reference(queries, positives, positives + corpus, separator)
    for row, expected in zip(got, expected_rows, strict=True):
        assert sorted(row) == sorted(expected)
        lengths = [expected[text] for text in row]
        assert lengths == sorted(lengths, reverse=True)  # longest mention first
