"""suggest_margin: the gap quantile rule on embeddings whose answer is known by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tripletkit.tuning import (
    MarginSuggestion,
    suggest_margin,
    suggest_margin_for_config,
    suggest_margin_from_embeddings,
    triplet_gaps,
)


def _two_classes_on_circle(angle_degrees: float) -> torch.Tensor:
    """Class 0 at (cos t, ±sin t), class 1 at (-cos t, ±sin t): unit vectors.

    Squared euclidean: every positive pair is at 4 sin²t; from an anchor, one negative is at
    4 cos²t (mirror across the y axis) and the other at 4 (antipodal). So half of the gaps
    d_an - d_ap are 4 cos²t - 4 sin²t = 4 cos 2t and half are 4 - 4 sin²t = 4 cos²t.
    """
    t = math.radians(angle_degrees)
    c, s = math.cos(t), math.sin(t)
    return torch.tensor([[c, s], [c, -s], [-c, s], [-c, -s]], dtype=torch.float64)


LABELS = [0, 0, 1, 1]


def test_gaps_of_the_circle_design_are_the_hand_computed_values():
    x = _two_classes_on_circle(80.0)
    d_ap, _, gaps, exact = triplet_gaps(x, LABELS)
    t = math.radians(80.0)
    assert exact and gaps.shape == (8,)  # 4 anchors × 1 positive × 2 negatives
    assert torch.allclose(d_ap, torch.full((8,), 4 * math.sin(t) ** 2, dtype=torch.float64))
    expected = sorted([4 * math.cos(2 * t)] * 4 + [4 * math.cos(t) ** 2] * 4)
    assert torch.allclose(gaps.sort().values, torch.tensor(expected, dtype=torch.float64))


def test_suggestion_is_the_gap_quantile_inside_the_bounds():
    # At t = 80°: gaps -3.759 (half) and 0.1206 (half). The 75% quantile is 0.1206, inside the
    # squared-euclidean bounds [4/200, 4/4] = [0.02, 1].
    found = suggest_margin_from_embeddings(_two_classes_on_circle(80.0), LABELS)
    gap = 4 * math.cos(math.radians(80.0)) ** 2
    assert found.margin == pytest.approx(gap)
    assert found.clipped is None
    assert (found.lower, found.upper) == (0.02, 1.0)
    # Ties: the triplets at exactly the margin are not active (the hinge is 0 there).
    assert found.active_fraction == pytest.approx(0.5)
    assert found.unit_norm and found.range_width == 4.0


def test_suggestion_is_clipped_to_the_distance_range():
    # At t = 30°: gaps 2 and 3, both far above the upper bound 1.
    high = suggest_margin_from_embeddings(_two_classes_on_circle(30.0), LABELS)
    assert high.quantile_gap == pytest.approx(3.0) and high.margin == 1.0
    assert high.clipped == "upper" and high.active_fraction == 0.0
    # Low quantile at 80°: -3.759 is clipped to the lower bound 0.02.
    low = suggest_margin_from_embeddings(
        _two_classes_on_circle(80.0), LABELS, target_active_fraction=0.25
    )
    assert low.quantile_gap == pytest.approx(4 * math.cos(math.radians(160.0)))
    assert low.margin == 0.02 and low.clipped == "lower"
    # Cosine on the same points: every distance is half the squared euclidean one, and so is
    # the range (bounds [0.01, 0.5]).
    cosine = suggest_margin_from_embeddings(_two_classes_on_circle(80.0), LABELS, "cosine")
    assert cosine.margin == pytest.approx(2 * math.cos(math.radians(80.0)) ** 2)
    assert (cosine.lower, cosine.upper) == (0.01, 0.5)


def _brute_force_gaps(x: torch.Tensor, labels: list[int], metric: str) -> np.ndarray:
    xs = x.double().numpy()

    def d(i: int, j: int) -> float:
        if metric == "squared_euclidean":
            return float(((xs[i] - xs[j]) ** 2).sum())
        if metric == "euclidean":
            return float(np.sqrt(((xs[i] - xs[j]) ** 2).sum()))
        unit = xs / np.linalg.norm(xs, axis=1, keepdims=True)
        return float(1 - unit[i] @ unit[j])

    n = len(labels)
    return np.array(
        [
            d(a, q) - d(a, p)
            for a, p, q in itertools.product(range(n), repeat=3)
            if a != p and labels[a] == labels[p] and labels[q] != labels[a]
        ]
    )


@pytest.mark.parametrize("metric", ["squared_euclidean", "euclidean", "cosine"])
def test_exact_gaps_match_a_brute_force_enumeration(metric):
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(17, 5, dtype=torch.float64), dim=1)
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5]  # 5: a class of one
    reference = _brute_force_gaps(x, labels, metric)
    _, _, gaps, exact = triplet_gaps(x, labels, metric)
    assert exact
    assert np.allclose(np.sort(gaps.numpy()), np.sort(reference))
    found = suggest_margin_from_embeddings(x, labels, metric, target_active_fraction=0.6)
    assert found.quantile_gap == pytest.approx(float(np.quantile(reference, 0.6)))
    assert found.num_triplets == reference.size


def test_sampled_gaps_follow_the_exact_distribution():
    torch.manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(120, 6), dim=1)
    x[:40] += 0.5  # one tight-ish class with larger gaps: the sampling must weight it right
    x = torch.nn.functional.normalize(x, dim=1)
    labels = torch.tensor([0] * 40 + [1] * 50 + [2] * 30)
    _, _, exact_gaps, exact = triplet_gaps(x, labels)
    _, _, sampled, sampled_exact = triplet_gaps(x, labels, max_triplets=200_000, seed=3)
    assert exact and not sampled_exact and sampled.shape == (200_000,)
    levels = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    assert torch.allclose(
        torch.quantile(sampled.double(), levels.double()),
        torch.quantile(exact_gaps.double(), levels.double()),
        atol=0.01,
    )
    # Every sampled gap is the gap of a real triplet.
    assert bool(torch.isin(sampled, exact_gaps).all())


def test_unnormalised_embeddings_take_the_range_from_the_observed_distances():
    x = 10 * _two_classes_on_circle(80.0)  # distances × 100
    found = suggest_margin_from_embeddings(x, LABELS, target_active_fraction=0.75)
    assert not found.unit_norm
    assert found.range_width == pytest.approx(400.0, rel=1e-6)  # the largest distance, 4 × 100
    assert found.margin == pytest.approx(100 * 4 * math.cos(math.radians(80.0)) ** 2)


def test_bad_inputs_are_clear_errors():
    x = _two_classes_on_circle(80.0)
    with pytest.raises(ValueError, match="target_active_fraction must be a number in"):
        suggest_margin_from_embeddings(x, LABELS, target_active_fraction=1.0)
    with pytest.raises(ValueError, match="unknown distance 'manhattan'"):
        suggest_margin_from_embeddings(x, LABELS, "manhattan")
    with pytest.raises(ValueError, match="no valid triplet"):
        suggest_margin_from_embeddings(x, [0, 0, 0, 0])
    with pytest.raises(ValueError, match="every measured distance is 0"):
        suggest_margin_from_embeddings(torch.zeros(4, 2), LABELS)
    with pytest.raises(ValueError, match="rows containing NaN"):
        suggest_margin_from_embeddings(torch.full((4, 2), float("nan")), LABELS)


def test_grid_stays_inside_the_bounds():
    found = MarginSuggestion(
        0.6, "cosine", 0.75, 0.6, 0.01, 0.5, "upper", 0.7, {}, 0.1, 0.2, 4, 8, True, 2.0, True
    )
    assert found.grid() == [0.3, 0.5]
    assert found.grid([0.25, 0.5]) == [0.15, 0.3]
    assert "suggested margin 0.6 for cosine (clipped to the upper bound)" in found.summary()


def test_suggest_margin_embeds_the_dataset_with_the_model():
    from tripletkit.data import FeatureDataset

    # An identity "model": the suggestion must equal the one from the raw (normalised) features.
    torch.manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(50, 4), dim=1)
    labels = torch.arange(5).repeat_interleave(10)
    identity = torch.nn.Identity()
    found = suggest_margin(identity, FeatureDataset(features, labels), "euclidean", max_items=30)
    index = np.sort(np.random.default_rng(0).choice(50, 30, replace=False))
    direct = suggest_margin_from_embeddings(features[index], labels[index], "euclidean")
    assert found.margin == pytest.approx(direct.margin)
    assert found.num_items == 30


def test_with_a_projector_the_margin_is_suggested_for_what_the_loss_sees():
    from tripletkit.data import FeatureDataset
    from tripletkit.models import create_model

    torch.manual_seed(0)
    data = FeatureDataset(torch.randn(60, 8), torch.arange(6).repeat_interleave(10))
    model = create_model("mlp", in_features=8, embedding_dim=6, projector=[5, 3])
    found = suggest_margin(model, data, "squared_euclidean", max_items=40)
    index = np.sort(np.random.default_rng(0).choice(60, 40, replace=False))
    projected = model.embed(data.features[index], project=True)
    direct = suggest_margin_from_embeddings(projected, data.labels[index], "squared_euclidean")
    assert found.margin == pytest.approx(direct.margin)
    embedded = suggest_margin_from_embeddings(
        model.embed(data.features[index]), data.labels[index], "squared_euclidean"
    )
    assert found.margin != pytest.approx(embedded.margin)


def test_suggestion_for_the_untrained_digits_model_is_deterministic_and_in_range():
    from tripletkit.training import resolve_config

    config = resolve_config(overrides={"data.dataset": "digits"})
    first = suggest_margin_for_config(config, max_items=400)
    second = suggest_margin_for_config(config, max_items=400)
    assert first.margin == second.margin
    assert first.distance == "squared_euclidean"
    assert 0.02 <= first.margin <= 1.0
    assert first.active_fraction == pytest.approx(0.75, abs=0.01)
