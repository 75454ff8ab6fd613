"""The quality bar of every figure: a title, axis labels with units, a legend for several series."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tripletkit.evaluation import equal_error_rate, roc_curve, tar_at_far
from tripletkit.report import figures
from tripletkit.report.figure_data import distance_histograms, pca_2d, training_curves

UNITS = re.compile(r"\(.+\)")  # "... (%)", "... (embedding units)", "... (batches)"


def _check_axes(figure, expect_legend: bool) -> None:
    plotted = [axes for axes in figure.axes if axes.get_visible() and axes.has_data()]
    assert plotted
    for axes in plotted:
        assert axes.get_title(), axes
        for label in (axes.get_xlabel(), axes.get_ylabel()):
            assert label and UNITS.search(label), f"axis label without units: {label!r}"
        if expect_legend:
            assert axes.get_legend() is not None or figure.legends, axes.get_title()
    assert figures.png_bytes(figure).startswith(b"\x89PNG")


def _curves():
    records = [{"kind": "epoch", "epoch": -1, "recall_at_1": 0.5, "map_at_r": 0.2}]
    records += [
        {"kind": "step", "step": s, "loss": 1 / s, "active_triplet_fraction": 1 - s / 100}
        for s in range(1, 80)
    ]
    records += [{"kind": "epoch", "epoch": 0, "recall_at_1": 0.7, "map_at_r": 0.4}]
    return training_curves(records)


def test_training_curves_figure():
    figure = figures.training_curves_figure(_curves())
    _check_axes(figure, expect_legend=True)
    assert figure.axes[0].get_title() == "Training loss"


def test_histograms_figure_marks_the_margin_and_states_the_overlap():
    rng = np.random.default_rng(0)
    panels = [
        (name, distance_histograms(rng.gamma(2, s, 500), rng.gamma(4, s, 500)))
        for name, s in (("Before training", 0.01), ("After training", 0.1))
    ]
    figure = figures.histograms_figure(panels, "squared_euclidean", 0.2, [0.02, 0.2])
    _check_axes(figure, expect_legend=True)
    for axes, (_, hist) in zip(figure.axes, panels, strict=True):
        assert f"overlap {hist.overlap:.3f}" in axes.get_title()
        texts = [t.get_text() for t in axes.texts]
        assert "margin α = 0.2" in texts
        legend = [t.get_text() for t in axes.get_legend().get_texts()]
        assert any(t.startswith("overlap area = ") for t in legend)


def test_roc_figure_marks_eer_and_tar_at_far():
    rng = np.random.default_rng(0)
    same = np.repeat([True, False], 2000)
    distances = np.concatenate([rng.normal(0.3, 0.1, 2000), rng.normal(0.6, 0.1, 2000)])
    roc = roc_curve(same, distances=distances)
    metrics = {"eer": equal_error_rate(roc), "tar_at_far_0.01": tar_at_far(roc, 0.01)}
    figure = figures.roc_figure([("after training", roc, metrics), ("before", roc, metrics)])
    _check_axes(figure, expect_legend=True)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert any(t.startswith("EER = ") for t in legend)
    assert any(t.startswith("TAR @ FAR 1%: ") for t in legend)


@pytest.mark.parametrize("panels", [1, 2])
def test_embedding_map_figure_has_one_legend_with_class_names(panels):
    rng = np.random.default_rng(0)
    labels = np.repeat([5, 7, 9], 30)
    points, _ = pca_2d(rng.normal(size=(90, 8)) + labels[:, None])
    maps = [figures.MapPanel("PCA", points, labels, "PC 1 (units)", "PC 2 (units)")] * panels
    figure = figures.embedding_map_figure(
        maps, [str(i) for i in range(5)] + ["five", "6", "seven", "8", "nine"]
    )
    _check_axes(figure, expect_legend=True)
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [
        "five (30)",
        "seven (30)",
        "nine (30)",
    ]


def test_gallery_frames_correct_green_and_wrong_red():
    image = np.zeros((8, 8))
    row = figures.GalleryRow(image, "a", [image, image], ["a", "b"], [True, False], [0.1, 0.2])
    figure = figures.gallery_figure([row])
    query, right, wrong = figure.axes
    assert query.get_xlabel() == "query: a"
    assert right.spines["top"].get_edgecolor()[:3] == pytest.approx((0.173, 0.627, 0.173), abs=0.01)
    assert wrong.spines["top"].get_edgecolor()[:3] == pytest.approx((0.839, 0.153, 0.157), abs=0.01)
    assert figure.get_suptitle().startswith("Retrieval gallery")
