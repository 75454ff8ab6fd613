"""Hard-negative mining against a corpus: exclusions, false-negative guards, resume, files."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from tripletkit.mining.negatives import mine_hard_negatives, read_triplets, write_triplets


class HashingEncoder:
    """Deterministic bag of words: each word adds 1 to bucket crc32(word) % dim."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0
        self.texts_seen = 0

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.calls += 1
        self.texts_seen += len(texts)
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, zlib.crc32(word.encode()) % self.dim] += 1.0
            out[i, -1] += 0.01  # no all-zero rows
        return out


def unit(v: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(v, dim=1).numpy()


class TableEncoder:
    """Fixed vectors per text, so similarities are known exactly."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def _angle_table() -> dict[str, list[float]]:
    # Query at angle 0; corpus texts at growing angles: cos = 0.99, 0.95, 0.9, 0.8, 0.7, 0.1.
    cosines = {"pos": 0.9, "c1": 0.99, "c2": 0.95, "c3": 0.8, "c4": 0.7, "c5": 0.1}
    table = {"q": [1.0, 0.0]}
    for text, cos in cosines.items():
        table[text] = [cos, float(np.sqrt(1 - cos * cos))]
    return table


CORPUS = ["pos", "c1", "c2", "c3", "c4", "c5"]


def test_hardest_non_positive_first_with_scores() -> None:
    mined = mine_hard_negatives(
        ["q"], ["pos"], CORPUS, TableEncoder(_angle_table()), num_negatives=3, progress=False
    )
    row = mined.rows()[0]
    assert [row["negative_1"], row["negative_2"], row["negative_3"]] == ["c1", "c2", "c3"]
    assert row["positive_score"] == pytest.approx(0.9, abs=1e-6)
    assert mined.negative_scores[0].tolist() == pytest.approx([0.99, 0.95, 0.8], abs=1e-6)


def test_rank_range_skips_the_top() -> None:
    mined = mine_hard_negatives(
        ["q"],
        ["pos"],
        CORPUS,
        TableEncoder(_angle_table()),
        num_negatives=2,
        rank_range=(3, 10),
        progress=False,
    )
    # The ranks after excluding "pos": c1=1, c2=2, c3=3, c4=4.
    assert mined.negatives == [["c3", "c4"]]


def test_max_score_ratio_guard() -> None:
    # Skip scores > 0.9 * 0.9 = 0.81: c1 (0.99), c2 (0.95); c3 (0.8) is kept.
    mined = mine_hard_negatives(
        ["q"],
        ["pos"],
        CORPUS,
        TableEncoder(_angle_table()),
        num_negatives=2,
        max_score_ratio=0.9,
        progress=False,
    )
    assert mined.negatives == [["c3", "c4"]]


def test_both_guards_and_dropped_pairs() -> None:
    # Ranks 2..3 are c2, c3; the ratio 1.0 removes c2 (0.95 > 0.9) -> only c3 remains.
    mined = mine_hard_negatives(
        ["q"],
        ["pos"],
        CORPUS,
        TableEncoder(_angle_table()),
        num_negatives=2,
        rank_range=(2, 3),
        max_score_ratio=1.0,
        progress=False,
    )
    assert len(mined) == 0 and mined.dropped_pairs == 1


def test_excludes_every_positive_of_the_query_by_text_and_id_and_the_query_itself() -> None:
    encoder = HashingEncoder()
    queries = ["red apple fruit", "red apple fruit", "blue sky"]
    positives = ["apple", "red apple", "sky"]
    corpus = ["apple", "red apple", "red apple fruit", "red fruit", "apple fruit", "sky", "blue"]
    corpus_ids = ["a", "b", "c", "d", "e", "f", "g"]
    # The pair ids mark "apple fruit" (id e) as a positive of the first query as well.
    mined = mine_hard_negatives(
        queries,
        positives,
        corpus,
        encoder,
        num_negatives=2,
        positive_ids=["e", "b", "f"],
        corpus_ids=corpus_ids,
        progress=False,
    )
    forbidden = {"apple", "red apple", "red apple fruit", "apple fruit"}
    for query, negatives in zip(mined.queries, mined.negatives, strict=True):
        if query == "red apple fruit":
            assert not forbidden & set(negatives)
        assert query not in negatives
    assert mined.queries[:2] == ["red apple fruit", "red apple fruit"]
    assert [n[0] for n in mined.negatives[:2]] == ["red fruit", "red fruit"]


def test_duplicate_corpus_texts_are_one_candidate() -> None:
    table = _angle_table()
    mined = mine_hard_negatives(
        ["q"],
        ["pos"],
        ["c1", "c1", "pos", "c2"],
        TableEncoder(table),
        num_negatives=2,
        progress=False,
    )
    assert mined.negatives == [["c1", "c2"]]


def test_against_brute_force_on_random_texts() -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    corpus = [" ".join(rng.choice(words, size=4)) for _ in range(120)]
    queries = [" ".join(rng.choice(words, size=5)) for _ in range(25)]
    positives = [corpus[int(i)] for i in rng.integers(0, len(corpus), size=25)]
    encoder = HashingEncoder()
    mined = mine_hard_negatives(
        queries, positives, corpus, encoder, num_negatives=3, rank_range=(2, 40), progress=False
    )
    unique = list(dict.fromkeys(corpus))
    q = unit(encoder(queries))
    c = unit(encoder(unique))
    scores = q @ c.T
    by_pair = dict(zip(mined.pair_index.tolist(), mined.negatives, strict=True))
    for i in range(len(queries)):
        excluded = {p for p, qq in zip(positives, queries, strict=True) if qq == queries[i]} | {
            queries[i]
        }
        order = sorted(range(len(unique)), key=lambda j: (-scores[i, j], j))
        eligible = [unique[j] for j in order if unique[j] not in excluded][1:40]
        expected = eligible[:3]
        # Near-ties may order differently in float32; compare as sets of the top scores.
        got = by_pair[i]
        assert sorted(scores[i, [unique.index(t) for t in got]]) == pytest.approx(
            sorted(scores[i, [unique.index(t) for t in expected]]), abs=1e-5
        )


class Stop(Exception):
    pass


@pytest.mark.parametrize("stop_stage", ["corpus", "mined"])
def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, stop_stage) -> None:
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(40)]
    corpus = [" ".join(rng.choice(words, size=3)) for _ in range(200)]
    queries = [" ".join(rng.choice(words, size=4)) for _ in range(90)]
    positives = [corpus[int(i)] for i in rng.integers(0, 200, size=90)]
    kwargs = dict(num_negatives=2, chunk_size=32, progress=False, model_id="hashing-64")

    reference = mine_hard_negatives(queries, positives, corpus, HashingEncoder(), **kwargs)

    seen: list[tuple[str, int]] = []

    def stop_in_mining(stage: str, chunk: int) -> None:
        seen.append((stage, chunk))
        if stage == stop_stage and chunk == 1:
            raise Stop

    first = HashingEncoder()
    with pytest.raises(Stop):
        mine_hard_negatives(
            queries,
            positives,
            corpus,
            first,
            cache_dir=tmp_path,
            on_chunk=stop_in_mining,
            **kwargs,
        )
    assert seen[-1] == (stop_stage, 1)

    resumed_encoder = HashingEncoder()
    after: list[tuple[str, int]] = []
    resumed = mine_hard_negatives(
        queries,
        positives,
        corpus,
        resumed_encoder,
        cache_dir=tmp_path,
        on_chunk=lambda stage, chunk: after.append((stage, chunk)),
        **kwargs,
    )
    # The run stopped after storing chunk 1 of its stage: nothing stored is computed again.
    assert not set(seen) & set(after)
    if stop_stage == "mined":
        assert resumed_encoder.calls == 0 and after == [("mined", 2)]
    else:
        # Corpus chunks 0 and 1 (32 texts each) are read back; the rest and the queries not.
        assert resumed_encoder.texts_seen == len(set(corpus)) - 64 + len(set(queries))
    assert resumed.negatives == reference.negatives
    assert resumed.queries == reference.queries
    np.testing.assert_allclose(resumed.negative_scores, reference.negative_scores, atol=1e-6)
    np.testing.assert_array_equal(resumed.pair_index, reference.pair_index)


def test_cache_is_keyed_by_model(tmp_path) -> None:
    kwargs = dict(num_negatives=1, progress=False, cache_dir=tmp_path)
    mine_hard_negatives(["a b"], ["a"], ["a", "b", "c"], HashingEncoder(), model_id="m1", **kwargs)
    other = HashingEncoder(dim=32)
    mine_hard_negatives(["a b"], ["a"], ["a", "b", "c"], other, model_id="m2", **kwargs)
    assert other.calls > 0
    assert len(list(tmp_path.iterdir())) == 2


def test_cache_needs_a_model_id_for_functions(tmp_path) -> None:
    with pytest.raises(ValueError, match="model_id"):
        mine_hard_negatives(["a"], ["b"], ["b", "c"], HashingEncoder(), cache_dir=tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(queries=["a", "b"], positives=["a"]), "counts must match"),
        (dict(corpus=[]), "corpus is empty"),
        (dict(num_negatives=0), "num_negatives"),
        (dict(rank_range=(0, 5)), "rank_range"),
        (dict(rank_range=(3, 3), num_negatives=2), "fewer than num_negatives"),
        (dict(max_score_ratio=-1.0), "max_score_ratio"),
        (dict(corpus_ids=["x"]), "corpus_ids"),
    ],
)
def test_bad_input(kwargs, message) -> None:
    arguments = dict(queries=["a"], positives=["b"], corpus=["b", "c"], encoder=HashingEncoder())
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        mine_hard_negatives(progress=False, **arguments)


def test_non_text_input() -> None:
    with pytest.raises(TypeError, match="corpus"):
        mine_hard_negatives(["a"], ["b"], ["b", 3], HashingEncoder(), progress=False)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_write_and_read_back(tmp_path, suffix) -> None:
    mined = mine_hard_negatives(
        ["q"], ["pos"], CORPUS, TableEncoder(_angle_table()), num_negatives=2, progress=False
    )
    path = write_triplets(tmp_path / f"triplets{suffix}", mined)
    columns = read_triplets(path)
    assert columns["query"] == ["q"] and columns["negative_2"] == ["c2"]
    assert float(columns["negative_1_score"][0]) == pytest.approx(0.99, abs=1e-6)
    assert list(columns) == [
        "query",
        "positive",
        "negative_1",
        "negative_2",
        "positive_score",
        "negative_1_score",
        "negative_2_score",
    ]
