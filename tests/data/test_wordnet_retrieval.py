"""The WordNet retrieval protocol: parsing rules, split, de-duplicated corpus."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tripletkit.data.wordnet import Synset, parse_data_line, wordnet_available
from tripletkit.data.wordnet_retrieval import deduplicate_texts, wordnet_retrieval_task


def test_document_and_query_follow_the_protocol() -> None:
    line = (
        "00019731 00 s 03 handy 0 ready_to_hand(p) 0 Old_World(ip) 0 000 | easy to reach ; "
        'conveniently placed; "found a handy spot for the can opener"'
    )
    synset = parse_data_line(line)
    # Underscores -> spaces, markers (a), (p), (ip) stripped, joined by ", ".
    assert synset.document == "handy, ready to hand, Old World"
    # The gloss before the first ';', stripped.
    assert synset.definition == "easy to reach"


def test_marker_only_stripped_at_the_end() -> None:
    synset = parse_data_line("00000001 00 a 01 (a)priori(a) 0 000 | known beforehand")
    assert synset.document == "(a)priori"


def test_deduplicate_keeps_first_occurrence() -> None:
    texts, rows = deduplicate_texts(["x", "y", "x", "z", "y"])
    assert texts == ["x", "y", "z"]
    assert rows.tolist() == [0, 1, 0, 2, 1]


def _fake_synsets(n: int) -> list[Synset]:
    # Documents repeat every 1000 synsets, so the corpus has duplicates to remove.
    return [Synset(i, "n", 3, (f"doc{i % 1000}",), f"def{i}", (), f"def{i}") for i in range(n)]


def test_split_and_corpus_on_synthetic_synsets() -> None:
    synsets = _fake_synsets(43_000)
    task = wordnet_retrieval_task(num_train=500, synsets=synsets)
    idx = list(range(43_000))
    random.Random(0).shuffle(idx)
    assert task.test_queries == [f"def{i}" for i in idx[:2000]]
    assert task.train_queries == [f"def{i}" for i in idx[2000:2500]]
    assert task.train_documents == [f"doc{i % 1000}" for i in idx[2000:2500]]
    # Test + distractor documents cover all 1000 distinct texts once each, in first-seen order.
    expected_corpus = list(dict.fromkeys(f"doc{i % 1000}" for i in idx[:2000] + idx[22000:42000]))
    assert task.corpus == expected_corpus and len(task.corpus) == 1000
    # Each test query's target is the row of its own document's text.
    for query, target in zip(task.test_queries[:50], task.test_targets[:50], strict=True):
        assert task.corpus[target] == f"doc{int(query[3:]) % 1000}"


def test_validation_split_lies_between_train_and_distractors() -> None:
    synsets = [
        Synset(i, "n", 3, (f"doc{i % 5000}",), f"def{i}", (), f"def{i}") for i in range(43_000)
    ]
    idx = list(range(43_000))
    random.Random(0).shuffle(idx)
    task = wordnet_retrieval_task(num_train=15_000, synsets=synsets)
    between = idx[17_000:22_000]  # after the 2,000 test and 15,000 train synsets
    assert task.validation_queries == [f"def{i}" for i in between[:2000]]
    expected_corpus = list(dict.fromkeys(f"doc{i % 5000}" for i in between))
    assert task.validation_corpus == expected_corpus
    for query, target in zip(task.validation_queries, task.validation_targets, strict=True):
        assert task.validation_corpus[target] == f"doc{int(query[3:]) % 5000}"
    used = set(idx[:17_000]) | set(idx[22_000:42_000])
    assert not {int(q[3:]) for q in task.validation_queries} & used
    # T = 20,000 leaves nothing between the training pairs and the distractors.
    full = wordnet_retrieval_task(num_train=20_000, synsets=synsets)
    assert full.validation_queries == [] and full.validation_corpus == []
    assert full.validation_targets.shape == (0,)


def test_unused_documents_come_from_after_the_distractors_only() -> None:
    # Synsets from 43,000 on have unique documents; the others repeat corpus texts, so only the
    # unique ones that the shuffle puts after the distractors may appear.
    synsets = _fake_synsets(43_000) + [
        Synset(i, "n", 3, (f"new{i}",), f"def{i}", (), f"def{i}") for i in range(43_000, 45_000)
    ]
    task = wordnet_retrieval_task(num_train=500, synsets=synsets)
    idx = list(range(45_000))
    random.Random(0).shuffle(idx)
    expected = [f"new{i}" for i in idx[42_000:] if i >= 43_000]
    assert task.unused_documents == expected and len(expected) > 50
    assert not set(task.unused_documents) & (set(task.corpus) | set(task.train_documents))


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="distractors"):
        wordnet_retrieval_task(num_train=20_001, synsets=_fake_synsets(43_000))
    with pytest.raises(ValueError, match="at least 42000"):
        wordnet_retrieval_task(num_train=10, synsets=_fake_synsets(1000))
    with pytest.raises(ValueError, match="positive integer"):
        wordnet_retrieval_task(num_train=0)


@pytest.mark.skipif(not wordnet_available(), reason="wordnet-base is not installed")
def test_real_wordnet_task_sizes() -> None:
    task = wordnet_retrieval_task(8000)
    assert len(task.test_queries) == 2000 and len(task.train_queries) == 8000
    # Every test document text is in the corpus exactly once.
    assert len(set(task.corpus)) == len(task.corpus)
    assert np.unique(task.test_targets).size <= 2000
    assert len(task.corpus) == 21_149
    assert not set(task.unused_documents) & (set(task.corpus) | set(task.train_documents))
    assert len(task.unused_documents) > 60_000
    assert len(task.validation_queries) == 2000
    # Synset-disjoint from test and train (tested above); a few glosses repeat across synsets.
    shared = set(task.validation_queries) & set(task.test_queries + task.train_queries)
    assert len(shared) < 20
    assert len(set(task.validation_corpus)) == len(task.validation_corpus) > 10_000
