"""Verification metrics against loops over thresholds, scikit-learn and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tripletkit.evaluation import (
    equal_error_rate,
    evaluate_verification,
    evaluate_verification_from_labels,
    lfw_accuracy,
    roc_curve,
    sample_verification_pairs,
    suggest_threshold,
    tar_at_far,
)

from . import reference


def scored_pairs(seed: int, n: int, levels: int | None = None):
    """Scores of same-pairs shifted up; ``levels`` rounds them onto a grid to create ties."""
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.4
    same[0], same[1] = True, False
    scores = rng.normal(size=n) + 1.5 * same
    if levels:
        scores = np.round(scores * levels) / levels
    return scores, same


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 80), levels=st.sampled_from([None, 1, 4]))
def test_roc_eer_and_tar_match_brute_force(seed, n, levels):
    scores, same = scored_pairs(seed, n, levels)
    curve = roc_curve(same, scores=scores)
    far, tar, thresholds = reference.roc_points(scores.tolist(), same.tolist())
    np.testing.assert_allclose(curve.far, far, rtol=1e-12)
    np.testing.assert_allclose(curve.tar, tar, rtol=1e-12)
    np.testing.assert_array_equal(curve.thresholds, thresholds)
    assert equal_error_rate(curve) == pytest.approx(reference.eer(scores.tolist(), same.tolist()))
    for target in (0.0, 0.01, 0.1, 0.5):
        want_tar, want_threshold = reference.tar_at_far(scores.tolist(), same.tolist(), target)
        assert tar_at_far(curve, target) == pytest.approx(want_tar)
        assert suggest_threshold(same, scores=scores, far=target).value == want_threshold


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(4, 60),
    folds=st.integers(2, 4),
    levels=st.sampled_from([None, 2]),
)
def test_lfw_accuracy_matches_brute_force(seed, n, folds, levels):
    scores, same = scored_pairs(seed, n, levels)
    fold_of = (np.arange(n) * folds // n).tolist()
    result = lfw_accuracy(same, scores=scores, folds=folds)
    expected = reference.lfw(scores.tolist(), same.tolist(), fold_of)
    np.testing.assert_allclose(result.fold_accuracies, expected)
    assert result.mean == pytest.approx(np.mean(expected))
    assert result.std == pytest.approx(np.std(expected))


def test_distances_give_the_same_metrics_as_negated_scores():
    scores, same = scored_pairs(1, 200, levels=3)
    by_score = evaluate_verification(same, scores=scores)
    by_distance = evaluate_verification(same, distances=-scores)
    assert by_score.metrics == by_distance.metrics
    np.testing.assert_array_equal(by_distance.roc.thresholds, -by_score.roc.thresholds)
    t = suggest_threshold(same, distances=-scores, far=0.05)
    accepted = -scores <= t.value
    assert (accepted & ~same).sum() / (~same).sum() == pytest.approx(t.far)
    assert t.far <= 0.05 and t.rule == "distance <= value"


def test_suggested_threshold_is_the_loosest_within_the_target():
    scores, same = scored_pairs(4, 500)
    for far in (0.001, 0.02, 0.3):
        t = suggest_threshold(same, scores=scores, far=far)
        accepted_far = ((scores >= t.value) & ~same).sum() / (~same).sum()
        assert accepted_far <= far
        looser = scores[scores < t.value]
        if looser.size:
            next_threshold = looser.max()
            assert ((scores >= next_threshold) & ~same).sum() / (~same).sum() > far


def test_hand_checked_eer_and_auc():
    # Sorted: 0.9 same, 0.8 diff, 0.7 same, 0.1 diff.
    curve = roc_curve([1, 0, 1, 0], scores=[0.9, 0.8, 0.7, 0.1])
    assert curve.auc == 0.75
    assert equal_error_rate(curve) == 0.5
    perfect = roc_curve([1, 1, 0], scores=[3.0, 2.0, 1.0])
    assert perfect.auc == 1.0 and equal_error_rate(perfect) == 0.0


def test_equals_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    for levels in (None, 3):
        scores, same = scored_pairs(9, 400, levels)
        curve = roc_curve(same, scores=scores)
        fpr, tpr, thresholds = metrics.roc_curve(same, scores, drop_intermediate=False)
        np.testing.assert_allclose(curve.far, fpr, rtol=1e-12)
        np.testing.assert_allclose(curve.tar, tpr, rtol=1e-12)
        np.testing.assert_array_equal(curve.thresholds[1:], thresholds[1:])
        assert curve.auc == pytest.approx(metrics.roc_auc_score(same, scores), rel=1e-12)


def test_eer_equals_the_scipy_recipe():
    interpolate = pytest.importorskip("scipy.interpolate")
    optimize = pytest.importorskip("scipy.optimize")
    scores, same = scored_pairs(12, 300)
    curve = roc_curve(same, scores=scores)
    line = interpolate.interp1d(curve.far, curve.tar)
    expected = optimize.brentq(lambda x: 1.0 - x - line(x), 0.0, 1.0)
    assert equal_error_rate(curve) == pytest.approx(expected, abs=1e-9)


def test_evaluation_reports_every_metric():
    scores, same = scored_pairs(2, 3_000)
    result = evaluate_verification(same, scores=scores)
    for key in ("auc", "eer", "tar_at_far_0.01", "tar_at_far_0.001", "tar_at_far_0.0001"):
        assert 0.0 <= result.metrics[key] <= 1.0
    assert result.metrics["lfw_accuracy"] == pytest.approx(result.lfw.mean)
    assert result.lfw.fold_accuracies.shape == (10,)
    assert set(result.thresholds) == {0.01, 0.001, 0.0001}


def test_sampled_pairs_from_labels():
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    first, second, same = sample_verification_pairs(labels, num_different=15, seed=3)
    pairs = set(zip(first.tolist(), second.tolist(), strict=True))
    assert len(pairs) == first.size
    assert (first < second).all()
    np.testing.assert_array_equal(same, labels[first] == labels[second])
    expected_same = {(i, j) for i in range(8) for j in range(i + 1, 8) if labels[i] == labels[j]}
    assert {(a, b) for a, b, s in zip(first, second, same, strict=True) if s} == expected_same
    assert (~same).sum() == 15
    again = sample_verification_pairs(labels, num_different=15, seed=3)
    np.testing.assert_array_equal(again[0], first)


def test_from_labels_end_to_end():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 6
    x = torch.nn.functional.normalize(
        torch.randn(6, 16, generator=generator)[labels] + 0.1 * torch.randn(60, 16), dim=1
    )
    result = evaluate_verification_from_labels(x, labels, num_different=500, folds=5)
    assert result.metrics["auc"] > 0.99
    assert result.metrics["num_same"] == 6 * 45


def test_input_errors():
    with pytest.raises(ValueError, match="exactly one"):
        roc_curve([1, 0], scores=[1, 2], distances=[1, 2])
    with pytest.raises(ValueError, match="both same and different"):
        roc_curve([1, 1], scores=[1.0, 2.0])
    with pytest.raises(ValueError, match="same has shape"):
        roc_curve([1, 0, 1], scores=[1.0, 2.0])
    with pytest.raises(ValueError, match="NaN or Inf"):
        roc_curve([1, 0], scores=[1.0, float("nan")])
    with pytest.raises(ValueError, match="0/1"):
        roc_curve([2, 0], scores=[1.0, 2.0])
    with pytest.raises(ValueError, match="far must be"):
        suggest_threshold([1, 0], scores=[1.0, 2.0], far=2.0)


def test_sampled_pairs_when_nearly_every_different_pair_is_wanted_are_quick_and_exact():
    import time

    labels = np.repeat(np.arange(5), 90)  # 450 items: 81,000 different pairs
    start = time.perf_counter()
    first, second, same = sample_verification_pairs(labels, num_different=1_000_000, seed=0)
    assert time.perf_counter() - start < 5.0
    different = set(zip(first[~same].tolist(), second[~same].tolist(), strict=True))
    expected = {(i, j) for i in range(450) for j in range(i + 1, 450) if labels[i] != labels[j]}
    assert different == expected
    first, second, same = sample_verification_pairs(labels, num_different=60_000, seed=1)
    assert (~same).sum() == 60_000 and (labels[first[~same]] != labels[second[~same]]).all()
    codes = first[~same] * 450 + second[~same]
    assert np.unique(codes).size == 60_000 and (np.diff(codes) > 0).all()
