"""examples/wordnet_files.py: the protocol's files read back as the command-line tools read them."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from tripletkit.data.manifests import read_manifest
from tripletkit.data.wordnet import Synset
from tripletkit.data.wordnet_retrieval import wordnet_retrieval_task

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wordnet_files.py"


def _example():
    spec = importlib.util.spec_from_file_location("wordnet_files", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _task():
    # Documents repeat (the corpus is de-duplicated) and hold the characters CSV must quote;
    # synsets from 43,000 on have documents of their own (the unused, unlabelled ones).
    synsets = [
        Synset(i, "n", 3, (f'doc "{i % 1000}", x',), f"def, {i}", (), f"def, {i}")
        for i in range(43_000)
    ] + [
        Synset(i, "n", 3, (f"new\n{i}",), f"def {i}", (), f"def {i}") for i in range(43_000, 45_000)
    ]
    return wordnet_retrieval_task(num_train=500, synsets=synsets)


def test_files_hold_the_protocol(tmp_path):
    task = _task()
    counts = _example().write_files(tmp_path, task, unlabelled=100)
    assert counts == {
        "pairs.csv": 500,
        "unlabelled.csv": 100,
        "corpus.csv": len(task.corpus),
        "queries.csv": 2000,
    }

    pairs = read_manifest(tmp_path / "pairs.csv").columns
    assert list(pairs["query"]) == task.train_queries
    assert list(pairs["positive"]) == task.train_documents
    unlabelled = read_manifest(tmp_path / "unlabelled.csv").columns["text"]
    assert list(unlabelled) == random.Random(0).sample(task.unused_documents, 100)
    assert not set(unlabelled) & (set(task.corpus) | set(task.train_documents))

    corpus = read_manifest(tmp_path / "corpus.csv").columns
    queries = read_manifest(tmp_path / "queries.csv").columns
    assert list(corpus["text"]) == task.corpus
    assert list(queries["text"]) == task.test_queries
    # A query's label names the corpus row of its own document.
    row_of_label = {label: row for row, label in enumerate(corpus["label"])}
    for label, target in zip(queries["label"], task.test_targets, strict=True):
        assert row_of_label[label] == int(target)
