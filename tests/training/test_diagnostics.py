"""Collapse and stall detection."""

from __future__ import annotations

from tripletkit.training.diagnostics import CollapseDetector


def test_healthy_training_is_quiet():
    detector = CollapseDetector(margin=0.2, window=5)
    for step in range(50):
        assert detector.update(0.15 - step * 0.002, 0.4, 1.5) is None


def test_stall_at_the_margin_is_reported_once_with_advice():
    detector = CollapseDetector(margin=0.2, window=5)
    diagnoses = [detector.update(0.2001, 1.0, 0.5) for _ in range(30)]
    found = [d for d in diagnoses if d is not None]
    assert len(found) == 1 and found[0].kind == "stalled"
    assert "lower learning rate" in found[0].message and "semi-hard" in found[0].message


def test_collapse_is_reported():
    detector = CollapseDetector(margin=0.2, distance_scale=2.0, window=4)
    found = [detector.update(0.2, 1.0, 0.007) for _ in range(4)]
    assert found[-1].kind == "collapsed"
    assert "0.007" in found[-1].message


def test_a_single_odd_step_is_not_a_failure():
    detector = CollapseDetector(margin=0.2, window=5)
    results = [detector.update(0.1, 0.5, 1.0) for _ in range(10)]
    results.append(detector.update(0.2, 1.0, 0.0))
    assert all(r is None for r in results)
