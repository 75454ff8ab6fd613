"""Retrieval metrics against the brute-force reference and pytorch-metric-learning."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tripletkit.evaluation import evaluate_retrieval, retrieval_metrics
from tripletkit.evaluation.retrieval import ranked_relevance_metrics

from . import reference


def integer_embeddings(seed: int, n: int, dim: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (n, dim), generator=generator).float()


def random_labels(seed: int, n: int, classes: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, (n,), generator=generator)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 50),
    m=st.integers(1, 60),
    classes=st.integers(1, 8),
    same=st.booleans(),
    metric=st.sampled_from(["squared_euclidean", "dot"]),
    full=st.booleans(),
    tile_bytes=st.sampled_from([1, 10**8]),
)
def test_metrics_match_brute_force(seed, n, m, classes, same, metric, full, tile_bytes):
    queries, labels = integer_embeddings(seed, n), random_labels(seed, n, classes)
    refs = None if same else integer_embeddings(seed + 1, m)
    ref_labels = None if same else random_labels(seed + 1, m, classes)
    ks = (1, 3, 100)
    all_refs, all_labels = (queries, labels) if same else (refs, ref_labels)
    ranked = reference.ranking(reference.dense_distances(queries, all_refs, metric), same)
    expected = reference.retrieval(labels.tolist(), all_labels.tolist(), ranked, ks, same)
    if all(v is None for v in expected["precision_at_1"]):
        with pytest.raises(ValueError, match="no query has a relevant reference"):
            evaluate_retrieval(queries, labels, refs, ref_labels, k=ks, distance=metric)
        return
    result = evaluate_retrieval(
        queries,
        labels,
        refs,
        ref_labels,
        k=ks,
        distance=metric,
        full_ranking=full,
        tile_bytes=tile_bytes,
    )
    names = ["precision_at_1", "recall_at_1", "recall_at_3", "recall_at_100", "r_precision"]
    names += ["map_at_r", *(["map", "mrr"] if full else [])]
    for name in names:
        got = result.per_query[name]
        want = np.array([np.nan if v is None else v for v in expected[name]])
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)
        assert result.metrics[name] == pytest.approx(reference.mean_defined(expected[name]))
    lone = sum(v is None for v in expected["precision_at_1"])
    assert result.metrics["queries_without_relevant"] == lone


def test_hand_checked_case():
    # One dimension; labels 0 0 1 0 1 at positions 0 1 2 3 10.
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    labels = [0, 0, 1, 0, 1]
    result = evaluate_retrieval(x, labels, k=[1, 2], distance="euclidean", full_ranking=True)
    per_query = result.per_query
    # Query 0 ranks 1 (rel), 2, 3 (rel), 4: R=2; P@1=1, R-prec=1/2, MAP@R=1/2, AP=(1+2/3)/2.
    assert per_query["precision_at_1"][0] == 1.0
    assert per_query["r_precision"][0] == 0.5
    assert per_query["map_at_r"][0] == 0.5
    assert per_query["map"][0] == pytest.approx((1 + 2 / 3) / 2)
    # Query 2 (label 1) ranks 1 and 3 (tie at distance 1: lower index first), 0, 4 (rel): R=1.
    assert per_query["precision_at_1"][2] == 0.0
    assert per_query["recall_at_2"][2] == 0.0
    assert per_query["mrr"][2] == 0.25
    assert result.per_class["precision_at_1"] == {
        0: pytest.approx(2 / 3),
        1: 0.0,
    }


def test_entry_point_returns_the_documented_keys():
    x = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    labels = torch.arange(40) % 5
    out = retrieval_metrics(x, labels)
    assert {"precision_at_1", "r_precision", "map_at_r", "recall_at_k"} <= set(out)
    assert set(out["recall_at_k"]) == {1, 2, 4, 8}
    assert out["recall_at_k"][1] == out["precision_at_1"]
    out = retrieval_metrics(x[:10], labels[:10], x[10:], labels[10:], k=3)
    assert set(out["recall_at_k"]) == {3}


def test_class_average_is_the_mean_of_per_class_means():
    x = integer_embeddings(5, 60)
    labels = random_labels(5, 60, 4)
    result = evaluate_retrieval(x, labels, average="class", distance="euclidean")
    per_class = result.per_class["map_at_r"]
    assert result.metrics["map_at_r"] == pytest.approx(np.mean(list(per_class.values())))


def test_ranked_relevance_metrics_are_bounded():
    rng = np.random.default_rng(0)
    relevant = rng.random((50, 30)) < 0.3
    relevant[:, 0] = True
    counts = relevant.sum(axis=1)
    values = ranked_relevance_metrics(relevant, counts, (1, 5), whole_ranking=True)
    for name, v in values.items():
        assert ((v >= 0) & (v <= 1)).all(), name
    assert (values["map"] > 0).all()


def test_input_errors():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="labels has shape"):
        retrieval_metrics(x, [0, 1])
    with pytest.raises(ValueError, match="without ref_labels"):
        retrieval_metrics(x, [0, 0, 1, 1], x)
    with pytest.raises(ValueError, match="Recall@K"):
        retrieval_metrics(x, [0, 0, 1, 1], k=0)
    with pytest.raises(ValueError, match="unknown average"):
        evaluate_retrieval(x, [0, 0, 1, 1], average="macro")
    with pytest.raises(ValueError, match="no query has a relevant reference"):
        retrieval_metrics(x, [0, 1, 2, 3])


def _pml_calculator(**kwargs):
    accuracy_calculator = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    logging.getLogger("PML").setLevel(logging.ERROR)
    return accuracy_calculator.AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
        **kwargs,
    )


PML_KEYS = {
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "mean_average_precision_at_r": "map_at_r",
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("same", [True, False])
def test_equals_pytorch_metric_learning_with_ties(seed, same):
    calculator = _pml_calculator()
    x = integer_embeddings(seed, 300, dim=4)
    labels = random_labels(seed, 300, 10)
    if same:
        expected = calculator.get_accuracy(x, labels)
        ours = retrieval_metrics(x, labels, distance="squared_euclidean")
    else:
        expected = calculator.get_accuracy(x[:80], labels[:80], x[80:], labels[80:])
        ours = retrieval_metrics(x[:80], labels[:80], x[80:], labels[80:], distance="euclidean")
    for pml_name, our_name in PML_KEYS.items():
        assert ours[our_name] == pytest.approx(expected[pml_name], rel=1e-12, abs=1e-15)


def test_equals_pytorch_metric_learning_on_normalised_embeddings():
    calculator = _pml_calculator()
    generator = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 20, (400,), generator=generator)
    centres = torch.randn(20, 16, generator=generator)
    x = centres[labels] + 0.8 * torch.randn(400, 16, generator=generator)
    x = torch.nn.functional.normalize(x, dim=1).double()
    expected = calculator.get_accuracy(x, labels)
    ours = retrieval_metrics(x, labels, distance="cosine")
    for pml_name, our_name in PML_KEYS.items():
        assert ours[our_name] == pytest.approx(expected[pml_name], rel=1e-12)


def test_class_average_equals_pytorch_metric_learning_avg_of_avgs():
    calculator = _pml_calculator(avg_of_avgs=True)
    x = integer_embeddings(11, 200, dim=4)
    labels = random_labels(11, 200, 7)
    expected = calculator.get_accuracy(x, labels)
    ours = retrieval_metrics(x, labels, distance="squared_euclidean", average="class")
    for pml_name, our_name in PML_KEYS.items():
        assert ours[our_name] == pytest.approx(expected[pml_name], rel=1e-12)
