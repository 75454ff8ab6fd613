"""The fixed WordNet text-retrieval protocol: definition → lemmas, so figures compare across
libraries.

* Synsets: ``load_wordnet()`` (data.noun, data.verb, data.adj, data.adv, in that order and file
  order). Query = :attr:`Synset.definition`; document = :attr:`Synset.document`.
* Split: ``idx = list(range(N)); random.Random(0).shuffle(idx)``; test = ``idx[:2000]``; train =
  ``idx[2000:2000 + T]`` (T = 8,000 or 20,000); distractors = ``idx[22000:42000]``.
* Corpus: the test documents, then the distractor documents, de-duplicated by text (first
  occurrence kept; identical texts cannot be told apart). A test query is a hit when its own
  synset's document *text* is retrieved.
* Rank (:func:`tripletkit.evaluation.text.rank_of_correct`) = 1 + the number of unique corpus
  texts scoring strictly higher than the correct one; Recall@1, Recall@10 and MRR@10 over the
  2,000 test queries (:func:`tripletkit.evaluation.text.rank_metrics`).
* Outside the protocol, for choices made before testing (e.g. a ranking option): a validation
  split from the synsets between the training pairs and the distractors
  (``idx[2000 + T:22000]``, which T < 20,000 leaves unused): the first 2,000 (fewer if fewer
  remain) are the validation queries, and the documents of all of them, de-duplicated, the
  validation corpus. Never test, train or distractor synsets.
* Outside the protocol, for recipes that want unlabelled text: the documents of the synsets
  after the distractors (``idx[42000:]``, never test, train or distractor synsets), without
  their definitions and without any text that is also a corpus or training document.

Reference (all-MiniLM-L6-v2, untuned): R@1 0.213, R@10 0.443, MRR@10 0.284.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tripletkit.data.wordnet import Synset, load_wordnet

__all__ = [
    "DISTRACTOR_RANGE",
    "NUM_TEST",
    "WordNetRetrievalTask",
    "deduplicate_texts",
    "wordnet_retrieval_task",
]

NUM_TEST = 2000
#: ``idx[22000:42000]``: the distractor synsets of the corpus.
DISTRACTOR_RANGE = (22_000, 42_000)
#: Train sizes the protocol defines (``idx[2000:2000 + T]``; T must leave the distractors alone).
MAX_TRAIN = DISTRACTOR_RANGE[0] - NUM_TEST


@dataclass(frozen=True)
class WordNetRetrievalTask:
    """Queries, corpus and training pairs of the protocol.

    Attributes:
        test_queries: 2,000 definitions.
        test_targets: ``(2000,)`` int64, the corpus row of each test query's document text.
        corpus: the unique corpus texts (test documents, then distractors, first occurrence kept).
        train_queries, train_documents: the T training pairs (definition, document).
        train_keys: the synset key of each training pair (an id for the pair).
        unused_documents: unique documents of ``idx[42000:]`` that are neither corpus nor
            training texts (no pairs: their definitions are not used).
        validation_queries, validation_targets, validation_corpus: the validation split (see
            the module docstring; empty when T = 20,000): queries, the row of each one's
            document in ``validation_corpus``, and that corpus.
    """

    test_queries: list[str]
    test_targets: np.ndarray
    corpus: list[str]
    train_queries: list[str]
    train_documents: list[str]
    train_keys: list[str]
    unused_documents: list[str]
    validation_queries: list[str]
    validation_targets: np.ndarray
    validation_corpus: list[str]


def deduplicate_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Unique texts in order of first occurrence, and the unique row of each input text.

    >>> deduplicate_texts(["b", "a", "b", "c"])
    (['b', 'a', 'c'], array([0, 1, 0, 2]))
    """
    row_of: dict[str, int] = {}
    rows = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        rows[i] = row_of.setdefault(text, len(row_of))
    return list(row_of), rows


def wordnet_retrieval_task(
    num_train: int = 8000, synsets: Sequence[Synset] | None = None
) -> WordNetRetrievalTask:
    """Build the protocol's split and corpus (see the module docstring).

    Args:
        num_train: T, the number of training pairs (8,000 or 20,000 in the published figures;
            at most 20,000 so that training never touches the distractors).
        synsets: the synsets in protocol order (default: :func:`load_wordnet` of all four files).

    Raises:
        ValueError: ``num_train`` out of range, or too few synsets for the split.
    """
    if isinstance(num_train, bool) or not isinstance(num_train, int) or not 0 < num_train:
        raise ValueError(f"num_train must be a positive integer; got {num_train!r}")
    if num_train > MAX_TRAIN:
        raise ValueError(
            f"num_train={num_train} would reach the distractors idx[{DISTRACTOR_RANGE[0]}:]; "
            f"the protocol allows at most {MAX_TRAIN}"
        )
    synsets = list(load_wordnet() if synsets is None else synsets)
    if len(synsets) < DISTRACTOR_RANGE[1]:
        raise ValueError(
            f"the protocol needs at least {DISTRACTOR_RANGE[1]} synsets; got {len(synsets)}"
        )
    idx = list(range(len(synsets)))
    random.Random(0).shuffle(idx)
    test = [synsets[i] for i in idx[:NUM_TEST]]
    train = [synsets[i] for i in idx[NUM_TEST : NUM_TEST + num_train]]
    distractors = [synsets[i] for i in idx[DISTRACTOR_RANGE[0] : DISTRACTOR_RANGE[1]]]
    validation = [synsets[i] for i in idx[NUM_TEST + num_train : DISTRACTOR_RANGE[0]]]
    validation_corpus, validation_rows = deduplicate_texts([s.document for s in validation])
    corpus, rows = deduplicate_texts([s.document for s in test + distractors])
    taken = set(corpus) | {s.document for s in train}
    unused, _ = deduplicate_texts(
        [
            synsets[i].document
            for i in idx[DISTRACTOR_RANGE[1] :]
            if synsets[i].document not in taken
        ]
    )
    return WordNetRetrievalTask(
        test_queries=[s.definition for s in test],
        test_targets=rows[:NUM_TEST],
        corpus=corpus,
        train_queries=[s.definition for s in train],
        train_documents=[s.document for s in train],
        train_keys=[s.key for s in train],
        unused_documents=unused,
        validation_queries=[s.definition for s in validation[:NUM_TEST]],
        validation_targets=validation_rows[:NUM_TEST],
        validation_corpus=validation_corpus,
    )
