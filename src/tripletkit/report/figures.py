"""The report's figures, drawn with matplotlib's Agg backend (no display needed).

Each function takes the numbers of :mod:`.figure_data` (or of :mod:`tripletkit.evaluation`) and
returns a :class:`matplotlib.figure.Figure`; :func:`png_bytes` renders one. Every figure has a
title, axis labels with units, and a legend where it shows more than one series.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from tripletkit.evaluation import RocCurve
from tripletkit.report.figure_data import DistanceHistograms, TrainingCurves

__all__ = [
    "GalleryRow",
    "MapPanel",
    "embedding_map_figure",
    "gallery_figure",
    "histograms_figure",
    "margin_tuning_figure",
    "png_bytes",
    "roc_figure",
    "training_curves_figure",
]

_FONT = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10}
POSITIVE_COLOUR = "#1f77b4"
NEGATIVE_COLOUR = "#d62728"
CORRECT_COLOUR = "#2ca02c"
WRONG_COLOUR = "#d62728"


def _figure(width: float, height: float) -> Figure:
    # Figure() directly (not pyplot): no global state, no GUI backend, safe in threads.
    import matplotlib

    matplotlib.rcParams.update(_FONT)
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    finite = np.where(np.isfinite(values), values, 0.0)
    weight = np.isfinite(values).astype(np.float64)
    kernel = np.ones(window)
    sums = np.convolve(finite, kernel, mode="same")
    counts = np.convolve(weight, kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def training_curves_figure(curves: TrainingCurves) -> Figure:
    """Loss and active-triplet fraction per step; validation Recall@1 and MAP@R per epoch."""
    figure = _figure(13, 3.8)
    loss_axes, active_axes, val_axes = figure.subplots(1, 3)
    window = max(1, len(curves.steps) // 25)
    for axes, values, colour in (
        (loss_axes, curves.loss, "#1f77b4"),
        (active_axes, curves.active_fraction * 100.0, "#ff7f0e"),
    ):
        if len(curves.steps):
            axes.plot(curves.steps, values, color=colour, alpha=0.3, lw=1, label="per step")
            if window > 1:
                axes.plot(
                    curves.steps,
                    _moving_average(values, window),
                    color=colour,
                    lw=2,
                    label=f"moving mean ({window} steps)",
                )
            axes.legend(loc="upper right")
        else:
            axes.text(0.5, 0.5, "no steps logged", ha="center", va="center")
        axes.set_xlabel("optimizer step (batches)")
        axes.grid(alpha=0.3)
    loss_axes.set_title("Training loss")
    loss_axes.set_ylabel("loss (loss units)")
    active_axes.set_title("Active triplets (violating the margin)")
    active_axes.set_ylabel("active triplets (% of mined)")
    active_axes.set_ylim(bottom=0)
    for key, name, marker in (("recall_at_1", "Recall@1", "o"), ("map_at_r", "MAP@R", "s")):
        values = curves.validation[key] * 100.0
        val_axes.plot(curves.epoch_ends, values, marker=marker, lw=2, label=name)
    val_axes.set_title("Validation retrieval (held-out classes)")
    val_axes.set_xlabel("epochs done (0 = before training)")
    val_axes.set_ylabel("metric (%)")
    val_axes.set_ylim(0, 100)
    if len(curves.epoch_ends):
        val_axes.set_xticks(curves.epoch_ends if len(curves.epoch_ends) <= 12 else None)
    val_axes.grid(alpha=0.3)
    val_axes.legend(loc="lower right")
    return figure


def histograms_figure(
    panels: Sequence[tuple[str, DistanceHistograms]],
    distance_name: str,
    margin: float | None,
    positive_median: Sequence[float] | None = None,
) -> Figure:
    """Positive- vs negative-pair distance histograms, one panel per model (before / after).

    The margin is drawn as a bracket from the median positive distance to that distance plus the
    margin: the triplet loss wants every negative beyond it.
    """
    figure = _figure(6.5 * len(panels), 4.0)
    axes_list = np.atleast_1d(figure.subplots(1, len(panels)))
    for i, (axes, (title, hist)) in enumerate(zip(axes_list, panels, strict=True)):
        width = np.diff(hist.edges)
        for values, name, colour, count in (
            (hist.positive, "positive pairs (same class)", POSITIVE_COLOUR, hist.num_positive),
            (hist.negative, "negative pairs (different class)", NEGATIVE_COLOUR, hist.num_negative),
        ):
            axes.bar(
                hist.edges[:-1],
                values * 100.0,
                width=width,
                align="edge",
                color=colour,
                alpha=0.5,
                label=f"{name}, n={count:,}",
            )
        overlap_patch = np.minimum(hist.positive, hist.negative) * 100.0
        axes.bar(
            hist.edges[:-1],
            overlap_patch,
            width=width,
            align="edge",
            color="none",
            edgecolor="black",
            hatch="///",
            lw=0,
            label=f"overlap area = {hist.overlap:.3f}",
        )
        if margin is not None and positive_median is not None:
            start = float(positive_median[i])
            top = axes.get_ylim()[1]
            axes.axvline(start, color=POSITIVE_COLOUR, ls="--", lw=1.5)
            axes.axvline(start + margin, color="black", ls="--", lw=1.5)
            axes.annotate(
                "",
                xy=(start + margin, top * 0.92),
                xytext=(start, top * 0.92),
                arrowprops={"arrowstyle": "<->", "lw": 1.5},
            )
            axes.text(
                start + margin + 0.01 * (hist.edges[-1] - hist.edges[0]),
                top * 0.92,
                f"margin α = {margin:g}",
                ha="left",
                va="center",
                fontsize=10,
            )
        axes.set_title(f"{title}: overlap {hist.overlap:.3f}")
        axes.set_xlabel(f"{distance_name.replace('_', ' ')} distance (embedding units)")
        axes.grid(alpha=0.3)
        axes.legend(loc="center right", fontsize=9)
        axes.set_ylabel("pairs (% of their kind)")
    return figure


def roc_figure(curves: Sequence[tuple[str, RocCurve, dict[str, float]]]) -> Figure:
    """ROC curves (log FAR axis) with the EER and TAR@FAR operating points marked.

    Args:
        curves: ``(name, roc, metrics)`` with ``metrics`` from
            :class:`~tripletkit.evaluation.VerificationEvaluation` (``eer``,
            ``tar_at_far_<f>``); the first is drawn solid, the others dashed.
    """
    figure = _figure(6.5, 4.8)
    axes = figure.subplots()
    floor = 1e-5
    for i, (name, roc, metrics) in enumerate(curves):
        far = np.maximum(roc.far, floor)
        line = axes.plot(
            far * 100.0,
            roc.tar * 100.0,
            lw=2 if i == 0 else 1.5,
            ls="-" if i == 0 else "--",
            label=f"{name} (AUC {roc.auc:.3f})",
        )[0]
        if i > 0:
            continue
        eer = metrics.get("eer")
        if eer is not None:
            axes.plot(
                max(eer, floor) * 100.0,
                (1 - eer) * 100.0,
                "o",
                ms=9,
                color="black",
                label=f"EER = {eer * 100:.2f}%",
            )
        points = [
            (float(key.removeprefix("tar_at_far_")), value)
            for key, value in metrics.items()
            if key.startswith("tar_at_far_")
        ]
        if points:
            axes.plot(
                [p[0] * 100.0 for p in points],
                [p[1] * 100.0 for p in points],
                "D",
                ms=7,
                ls="none",
                color=line.get_color(),
                markeredgecolor="black",
                label="TAR @ FAR "
                + ", ".join(f"{far * 100:g}%: {tar * 100:.1f}%" for far, tar in points),
            )
    axes.set_xscale("log")
    axes.set_xlim(floor * 100.0, 100.0)
    axes.set_ylim(0, 101)
    axes.set_title("Verification ROC (validation pairs, cosine distance)")
    axes.set_xlabel("false accept rate, FAR (%, log scale)")
    axes.set_ylabel("true accept rate, TAR (%)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="upper left", fontsize=9)
    return figure


@dataclass(frozen=True)
class MapPanel:
    """One 2-D map: its title, ``(N, 2)`` points, their ``(N,)`` labels and the axis labels."""

    title: str
    points: np.ndarray
    labels: np.ndarray
    x_label: str
    y_label: str


def embedding_map_figure(panels: Sequence[MapPanel], class_names: Sequence[str]) -> Figure:
    """Scatter plots of 2-D projections coloured by class (the same colour in every panel), with
    one shared legend."""
    import matplotlib

    figure = _figure(6.2 * len(panels) + 1.8, 5.2)
    axes_list = np.atleast_1d(figure.subplots(1, len(panels)))
    classes = np.unique(np.concatenate([p.labels for p in panels]))
    cmap = matplotlib.colormaps["tab10" if classes.size <= 10 else "tab20"]
    handles = []
    for p, (axes, panel) in enumerate(zip(axes_list, panels, strict=True)):
        for i, label in enumerate(classes):
            mask = panel.labels == label
            name = class_names[label] if 0 <= label < len(class_names) else str(label)
            dots = axes.scatter(
                panel.points[mask, 0],
                panel.points[mask, 1],
                s=8,
                alpha=0.7,
                color=cmap(i % cmap.N),
                label=f"{name} ({int(mask.sum())})",
                rasterized=True,
            )
            if p == 0:  # the legend counts the items of the first (complete) panel
                handles.append(dots)
        axes.set_title(panel.title)
        axes.set_xlabel(panel.x_label)
        axes.set_ylabel(panel.y_label)
        axes.grid(alpha=0.3)
    if classes.size <= 20:
        figure.legend(handles=handles, loc="outside right center", title="class (items)")
    return figure


@dataclass(frozen=True)
class GalleryRow:
    """A query and its nearest neighbours: ``(H, W)`` or ``(H, W, 3)`` images in [0, 1]."""

    query: np.ndarray
    query_name: str
    neighbours: list[np.ndarray]
    neighbour_names: list[str]
    correct: list[bool]
    distances: list[float]


def gallery_figure(rows: Sequence[GalleryRow]) -> Figure:
    """Each query (left) with its top neighbours, framed green when the class matches, else red."""
    columns = 1 + max(len(r.neighbours) for r in rows)
    figure = _figure(1.5 * columns + 0.4, 1.65 * len(rows) + 0.6)
    grid = figure.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        cells = [(row.query, f"query: {row.query_name}", "black", None)]
        cells += [
            (image, name, CORRECT_COLOUR if ok else WRONG_COLOUR, distance)
            for image, name, ok, distance in zip(
                row.neighbours, row.neighbour_names, row.correct, row.distances, strict=True
            )
        ]
        for c in range(columns):
            axes = grid[r, c]
            axes.set_xticks([])
            axes.set_yticks([])
            if c >= len(cells):
                axes.axis("off")
                continue
            image, name, colour, distance = cells[c]
            axes.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            for spine in axes.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4 if c else 1)
            caption = name if distance is None else f"{name}\nd={distance:.3f}"
            axes.set_xlabel(caption, fontsize=9, color=colour if c else "black")
    figure.suptitle(
        "Retrieval gallery: query and its 5 nearest validation items (green: same class, red: other)"
    )
    return figure


def margin_tuning_figure(tuning: dict) -> Figure:
    """Validation MAP@R against the margin, one line per distance (``margin_tuning.json``).

    Args:
        tuning: the payload of ``margin_tuning.json`` (format in :mod:`tripletkit.tuning.tune`):
            its ``trials`` (failed ones are left out), ``best`` and ``suggestion``.

    The untrained model's score is a dotted line per distance, the best trial a star and the
    suggested margin a dashed vertical line. The margin axis is logarithmic when the grid spans
    more than a factor of 4 (grids are usually geometric).
    """
    figure = _figure(6.5, 5.2)
    axes = figure.subplots()
    done = [t for t in tuning["trials"] if t["status"] == "ok"]
    for distance in dict.fromkeys(t["distance"] for t in tuning["trials"]):
        points = sorted(
            (t["margin"], t["score"], t["score_before"]) for t in done if t["distance"] == distance
        )
        if not points:
            continue
        line = axes.plot(
            [p[0] for p in points], [p[1] for p in points], marker="o", label=distance
        )[0]
        befores = [p[2] for p in points if p[2] is not None]
        if befores:
            axes.axhline(
                sum(befores) / len(befores),
                color=line.get_color(),
                ls=":",
                label=f"{distance}: untrained model",
            )
    best = tuning.get("best")
    if best is not None:
        axes.plot(
            [best["margin"]],
            [best["score"]],
            marker="*",
            ms=16,
            ls="none",
            color="gold",
            markeredgecolor="black",
            label=f"best: margin {best['margin']:g} ({best['distance']})",
        )
    suggestion = tuning.get("suggestion")
    if suggestion is not None:
        axes.axvline(
            suggestion["margin"],
            color="grey",
            ls="--",
            label=f"suggested: {suggestion['margin']:.3g} ({suggestion['distance']})",
        )
    margins = sorted({t["margin"] for t in done})
    if margins and min(margins) > 0 and max(margins) / min(margins) > 4:
        axes.set_xscale("log")
        axes.minorticks_off()
    if margins:  # tick exactly the margins tried, written plainly (no 10^-1 notation)
        axes.set_xticks(margins, [f"{m:g}" for m in margins])
    axes.set_title("Margin tuning: short runs scored on held-out classes")
    axes.set_xlabel("margin α (distance units)")
    axes.set_ylabel("validation MAP@R (best epoch)")
    axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, fontsize=9)
    return figure
