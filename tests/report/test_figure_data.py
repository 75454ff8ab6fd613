"""The numbers behind the report's figures, against hand-checked cases and independent references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tripletkit.report.figure_data import (
    distance_histograms,
    even_subset,
    gallery_queries,
    histogram_overlap,
    pca_2d,
    per_class_rows,
    training_curves,
)


def test_overlap_area_of_a_hand_checked_case():
    # Bins [0, .2), [.2, .4), [.4, .6]: positives 2 + 2 + 0 of 4, negatives 0 + 1 + 3 of 4.
    # Shared area: min(.5, 0) + min(.5, .25) + min(0, .75) = 0.25.
    hist = distance_histograms([0.1, 0.15, 0.25, 0.3], [0.3, 0.45, 0.5, 0.55], 3, (0.0, 0.6))
    assert hist.positive.tolist() == [0.5, 0.5, 0.0]
    assert hist.negative.tolist() == [0.0, 0.25, 0.75]
    assert hist.overlap == pytest.approx(0.25)
    assert (hist.num_positive, hist.num_negative) == (4, 4)


def test_overlap_is_zero_when_separated_and_one_when_identical():
    assert distance_histograms([0.1, 0.2], [0.8, 0.9], 10).overlap == 0.0
    same = np.random.default_rng(0).random(500)
    assert distance_histograms(same, same, 20).overlap == pytest.approx(1.0)


def test_overlap_matches_a_brute_force_integral_of_the_densities():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(0.3, 0.1, 4000), rng.normal(0.6, 0.15, 5000)
    hist = distance_histograms(pos, neg, 40, (-0.2, 1.2))
    edges = np.linspace(-0.2, 1.2, 41)
    expected = 0.0
    for low, high in itertools.pairwise(edges):
        in_pos = np.mean((pos >= low) & (pos < high)) if high < 1.2 else np.mean(pos >= low)
        in_neg = np.mean((neg >= low) & (neg < high)) if high < 1.2 else np.mean(neg >= low)
        expected += min(in_pos, in_neg)
    assert hist.overlap == pytest.approx(expected, abs=1e-12)


def test_histograms_keep_out_of_range_values_in_the_edge_bins():
    hist = distance_histograms([-1.0, 0.5], [2.0, 0.5], 2, (0.0, 1.0))
    assert hist.positive.tolist() == [0.5, 0.5]  # -1 is counted in the first bin
    assert hist.negative.tolist() == [0.0, 1.0]  # 2 in the last
    assert hist.positive.sum() == 1.0


def test_histograms_reject_empty_or_non_finite_input():
    with pytest.raises(ValueError, match="positive and negative pairs"):
        distance_histograms([], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        distance_histograms([np.nan], [0.1])
    with pytest.raises(ValueError, match="same bins"):
        histogram_overlap(np.ones(2), np.ones(3))


def test_constant_distances_still_give_one_bin_and_full_overlap():
    hist = distance_histograms([0.5, 0.5], [0.5], 5)
    assert np.isfinite(hist.edges).all() and hist.overlap == pytest.approx(1.0)


def test_per_class_table_is_worst_first_with_ties_and_nan_last():
    per_class = {
        "precision_at_1": {0: 0.9, 1: 0.5, 2: 0.6, 3: 0.4, 4: 1.0},
        "map_at_r": {0: 0.8, 1: 0.3, 2: 0.3, 3: 0.3, 4: float("nan")},
    }
    before = {"map_at_r": {0: 0.1, 1: 0.2}}
    labels = [0, 0, 1, 2, 2, 2, 3, 4]
    rows = per_class_rows(per_class, labels, ["a", "b", "c", "d", "e"], before)
    # MAP@R ascending; ties (0.3) broken by Recall@1 ascending; the NaN class last.
    assert [r.label for r in rows] == [3, 1, 2, 0, 4]
    assert [r.items for r in rows] == [1, 1, 3, 2, 1]
    assert [r.name for r in rows] == ["d", "b", "c", "a", "e"]
    assert rows[1].map_at_r_before == 0.2 and rows[0].map_at_r_before is None


def test_per_class_rows_from_a_real_evaluation():
    from tripletkit.evaluation import evaluate_retrieval

    # Class 0 is tight; classes 1 and 2 alternate along one direction, so each item's nearest
    # neighbour is of the other class: both rank below class 0.
    x = np.array(
        [[0.0, 1.0], [0.01, 1.0], [0.02, 1.0], [1.0, 0.0], [1.0, 0.02], [1.0, 0.04], [1.0, 0.06]]
    )
    labels = np.array([0, 0, 0, 1, 2, 1, 2])
    result = evaluate_retrieval(x, labels)
    rows = per_class_rows(result.per_class, labels)
    assert rows[-1].label == 0 and rows[-1].map_at_r == 1.0
    assert rows[0].map_at_r < 1.0 and rows[1].map_at_r < 1.0
    assert [r.map_at_r for r in rows] == sorted(r.map_at_r for r in rows)


def test_training_curves_keep_the_last_record_of_a_resumed_step():
    records = [
        {"kind": "epoch", "epoch": -1, "recall_at_1": 0.5, "map_at_r": 0.2},
        {"kind": "step", "step": 1, "loss": 0.9, "active_triplet_fraction": 1.0},
        {"kind": "step", "step": 2, "loss": 0.8, "active_triplet_fraction": 0.9},
        {"kind": "event", "step": 2, "message": "resumed"},
        {"kind": "step", "step": 2, "loss": 0.7, "active_triplet_fraction": 0.8},
        {"kind": "step", "step": 3, "active_triplet_fraction": 0.5},
        {"kind": "epoch", "epoch": 0, "recall_at_1": 0.7, "map_at_r": 0.4},
    ]
    curves = training_curves(records)
    assert curves.steps.tolist() == [1, 2, 3]
    assert curves.loss[:2].tolist() == [0.9, 0.7] and np.isnan(curves.loss[2])
    assert curves.active_fraction.tolist() == [1.0, 0.8, 0.5]
    assert curves.epoch_ends.tolist() == [0, 1]
    assert curves.validation["recall_at_1"].tolist() == [0.5, 0.7]


def test_even_subset_balances_classes_and_gives_leftovers_to_big_classes():
    labels = np.array([0] * 100 + [1] * 3 + [2] * 50)
    picked = even_subset(labels, 30, seed=0)
    counts = np.bincount(labels[picked], minlength=3)
    assert picked.size == 30 and counts[1] == 3 and abs(int(counts[0]) - int(counts[2])) <= 1
    assert np.unique(picked).size == picked.size and np.all(np.diff(picked) > 0)
    assert even_subset(labels, 1000).tolist() == list(range(153))


def test_pca_matches_scikit_learn_up_to_sign():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    points, explained = pca_2d(x)
    reference = PCA(n_components=2).fit(x)
    expected = reference.transform(x)
    for axis in range(2):
        sign = np.sign(points[:, axis] @ expected[:, axis])
        np.testing.assert_allclose(points[:, axis], sign * expected[:, axis], atol=1e-8)
    np.testing.assert_allclose(explained, reference.explained_variance_ratio_, rtol=1e-8)


def test_pca_of_one_dimensional_embeddings_and_bad_shapes():
    points, explained = pca_2d(np.array([[0.0], [1.0], [3.0]]))
    assert points.shape == (3, 2) and np.all(points[:, 1] == 0) and explained[0] == 1.0
    with pytest.raises(ValueError, match="N >= 2"):
        pca_2d(np.zeros((1, 4)))


def test_gallery_queries_go_round_the_classes():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 1)
    queries = gallery_queries(labels, 8, seed=3)
    assert len(set(queries.tolist())) == 8
    assert labels[queries[:3]].tolist() == [0, 1, 2]
    assert np.bincount(labels[queries]).tolist() == [4, 3, 1]
    assert gallery_queries([0, 1], 8).tolist() in ([0, 1], [1, 0])


def test_overlap_on_the_default_range_does_not_depend_on_the_distance_scale():
    # The report bins each model over its own range, so an untrained model whose distances are
    # all tiny is not judged by a bin width: the overlap must be invariant to scale and shift.
    rng = np.random.default_rng(2)
    pos, neg = rng.gamma(2.0, 0.1, 3000), rng.gamma(3.0, 0.1, 3000)
    reference = distance_histograms(pos, neg, 50).overlap
    assert distance_histograms(pos * 0.01, neg * 0.01, 50).overlap == pytest.approx(reference)
    assert distance_histograms(pos + 5.0, neg + 5.0, 50).overlap == pytest.approx(reference)
