"""``write_report(run_dir)``: the pictures of a finished run in one self-contained ``report.html``.

What it reads from the run directory: ``config.json`` (to rebuild the validation set exactly as
training did, via :func:`tripletkit.training.build.build_run`), ``model/`` and ``model_initial/``
(the trained and the untrained model), ``metrics.jsonl``, ``summary.json``, ``test.json`` and
``calibration.json``. What it writes beside them: ``report.html`` (every image inline as a
``data:`` URI, a Content-Security-Policy that forbids any request, so it opens from disk with no
network) and the same figures as ``report-*.png``.

It runs at the end of every ``tripletkit train``, so it is kept fast: at most ``max_eval_items``
validation items are embedded (per-class table), at most ``max_items`` of those feed the
histograms, ROC, 2-D map and gallery, pairs are capped at ``max_pairs`` of each kind, and the
t-SNE map (UMAP when ``umap-learn`` is installed) is opt-in and runs on at most ``tsne_items``.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tripletkit.data import collate_items
from tripletkit.files import atomic_write_text, write_atomic
from tripletkit.models.embedding import uses_projector
from tripletkit.report import figure_data, figures

__all__ = ["CONTENT_SECURITY_POLICY", "write_report"]

#: The report may load nothing but its own inline images and styles.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

#: The false accept rates marked on the ROC (those of calibration.json).
ROC_FARS = (1e-2, 1e-3, 1e-4)

#: Losses whose margin is the triplet gap d(a, n) - d(a, p) (drawn as a bracket on the histograms).
_TRIPLET_MARGIN_LOSSES = ("triplet", "quadruplet")


@dataclass
class _Figure:
    key: str
    title: str
    png: bytes
    caption: str

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    @property
    def file_name(self) -> str:
        return f"report-{self.key}.png"


@dataclass
class _Report:
    figures: list[_Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data_rows: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)  # of metrics.jsonl
    seconds: dict[str, float] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _loss_geometry(config) -> tuple[str, float | None]:
    """The distance the loss trains with and its triplet margin (None when it has none)."""
    from tripletkit.training.build import DEFAULT_TRIPLET_RECIPE

    triplet_like = config.loss.name in _TRIPLET_MARGIN_LOSSES
    distance = config.loss.distance or (
        DEFAULT_TRIPLET_RECIPE["distance"] if config.loss.name == "triplet" else "cosine"
    )
    margin = config.loss.margin
    if margin is None and config.loss.name == "triplet":
        margin = DEFAULT_TRIPLET_RECIPE["margin"]
    return distance, (float(margin) if triplet_like and margin is not None else None)


def _embed(model: torch.nn.Module, dataset, indices: np.ndarray) -> torch.Tensor:
    subset = torch.utils.data.Subset(dataset, indices.tolist())
    loader = torch.utils.data.DataLoader(
        subset, batch_size=512, shuffle=False, collate_fn=collate_items
    )
    with torch.no_grad():
        return model.embed(loader).float().cpu()


def _as_picture(item: torch.Tensor, mean, std) -> np.ndarray:
    """A normalised ``(C, H, W)`` model input back to a ``(H, W)`` / ``(H, W, 3)`` image in [0, 1]."""
    channels = item.shape[0]
    mean_t = torch.tensor(mean[:channels] if len(mean) >= channels else mean * channels)
    std_t = torch.tensor(std[:channels] if len(std) >= channels else std * channels)
    image = (item.float() * std_t[:, None, None] + mean_t[:, None, None]).clamp(0, 1)
    return image[0].numpy() if channels == 1 else image[:3].permute(1, 2, 0).numpy()


def _item_content(dataset, index: int) -> Any:
    item = dataset[int(index)]
    return item[0] if isinstance(item, (tuple, list)) else item


def _class_name(names: list[str], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def _percent(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{100.0 * value:.2f}%"


def write_report(
    run_dir: str | Path,
    *,
    max_eval_items: int = 10_000,
    max_items: int = 2_000,
    max_pairs: int = 100_000,
    tsne: bool = False,
    tsne_items: int = 500,
    seed: int = 0,
) -> Path:
    """Write ``run_dir/report.html`` (and the ``report-*.png`` figures) and return its path.

    Args:
        run_dir: a run directory written by ``tripletkit train``.
        max_eval_items: validation items embedded for the per-class table (evenly over classes).
        max_items: of those, items behind the histograms, ROC, 2-D map and gallery.
        max_pairs: most positive and most negative pairs for the histograms and ROC.
        tsne: add a t-SNE map (UMAP when ``umap-learn`` is installed) beside the PCA; off by
            default because it takes seconds to minutes (``tripletkit report --tsne``).
        tsne_items: items of the t-SNE map (a seeded, class-balanced subset).
        seed: seeds the subsets and the pairs (the same run gives the same report).

    Raises:
        FileNotFoundError: ``run_dir`` is not a finished run (no ``config.json`` or ``model/``).
    """
    from tripletkit.inference import load_run
    from tripletkit.models import load_model
    from tripletkit.training.build import build_run
    from tripletkit.training.run_log import read_metrics

    start = time.perf_counter()
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(run_dir)!r} is not a run directory (no config.json); "
            "pass the directory written by tripletkit train"
        )
    if not (run_dir / "model" / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(run_dir)!r} has no trained model (model/); did the training run finish?"
        )
    run = load_run(run_dir)
    config = run.config
    summary = _read_json(run_dir / "summary.json")
    report = _Report()

    if (run_dir / "metrics.jsonl").is_file():
        report.records = read_metrics(run_dir / "metrics.jsonl")
    curves = figure_data.training_curves(report.records)
    report.figures.append(
        _Figure(
            "curves",
            "Training curves",
            figures.png_bytes(figures.training_curves_figure(curves)),
            "Loss and the share of mined triplets that still violate the margin, per optimizer "
            "step (light: each step; dark: moving mean). Right: Recall@1 and MAP@R on the "
            "validation set (classes never trained on) after each epoch; 0 is the untrained model.",
        )
    )

    validation = build_run(config).data.validation
    # A Subset of the validation classes keeps the full dataset's label ids and names.
    names = summary.get("data", {}).get("class_names") or getattr(validation, "classes", None)
    if names is None:
        names = getattr(getattr(validation, "dataset", None), "classes", None)
    class_names = [str(c) for c in names or []]
    per_class_rows: list[figure_data.ClassRow] = []
    verification_rows: list[dict[str, str]] = []
    gallery_table: list[dict[str, Any]] = []
    overlaps: dict[str, float] = {}
    if validation is not None and len(validation) > 1:
        section = time.perf_counter()
        labels_all = np.asarray(validation.labels).astype(np.int64)
        eval_index = figure_data.even_subset(labels_all, max_eval_items, seed)
        eval_labels = labels_all[eval_index]
        report.data_rows["validation classes"] = int(np.unique(labels_all).shape[0])
        report.data_rows["validation items in this report"] = (
            f"{len(eval_index):,} (per-class table), {min(len(eval_index), max_items):,} (figures)"
        )
        initial_dir = run_dir / "model_initial"
        models = [("after training", run.model)]
        if (initial_dir / "config.json").is_file():
            initial = load_model(initial_dir)
            initial.eval()
            models.insert(0, ("before training", initial))
        else:
            report.notes.append("no model_initial/ in the run: 'before training' is not shown")
        embedded = {name: _embed(model, validation, eval_index) for name, model in models}
        report.seconds["embedding validation items"] = time.perf_counter() - section

        per_class_rows, retrieval_note = _per_class(embedded, eval_labels, class_names)
        if retrieval_note:
            report.notes.append(retrieval_note)

        section = time.perf_counter()
        map_local = figure_data.even_subset(eval_labels, max_items, seed)
        map_labels = eval_labels[map_local]
        distance_name, margin = _loss_geometry(config)
        if margin is not None and uses_projector(run.model):
            # The margin applies to the projector's output, which the loss sees; these
            # histograms are of the embedding before it, so a bracket there would mislead.
            margin = None
            report.notes.append(
                "the model trains through a projector: the distance histograms show the "
                "embedding before it (what retrieval uses), so the loss's margin, which applies "
                "to the projector's output, is not drawn"
            )
        hist_figure, overlaps, verification_rows, roc_png = _pair_figures(
            embedded, map_local, map_labels, distance_name, margin, max_pairs, seed
        )
        if hist_figure is not None:
            report.figures.append(hist_figure)
            report.figures.append(roc_png)
        report.seconds["histograms and ROC"] = time.perf_counter() - section

        section = time.perf_counter()
        after = embedded["after training"][map_local]
        report.figures.append(
            _map_figure(after, map_labels, class_names, tsne, tsne_items, seed, report)
        )
        report.seconds["2-D map"] = time.perf_counter() - section

        section = time.perf_counter()
        gallery = _gallery(
            run, validation, eval_index[map_local], after, map_labels, class_names, seed
        )
        if isinstance(gallery, _Figure):
            report.figures.append(gallery)
        else:
            gallery_table = gallery
        report.seconds["gallery"] = time.perf_counter() - section
    else:
        report.notes.append("the run has no validation set: no histograms, ROC, map or gallery")

    tuning_file = run_dir / "margin_tuning.json"
    if tuning_file.is_file():  # written by tripletkit tune-margin --train-best next to the run
        report.figures.append(
            _Figure(
                "margin-tuning",
                "Margin tuning",
                figures.png_bytes(figures.margin_tuning_figure(_read_json(tuning_file))),
                "Validation MAP@R of the short trial runs of tripletkit tune-margin against the "
                "margin (one line per distance); the star is the margin this run uses.",
            )
        )

    report.seconds["report (total)"] = time.perf_counter() - start
    html = _render(
        run_dir, config, summary, report, per_class_rows, verification_rows, gallery_table, overlaps
    )
    for figure in report.figures:
        write_atomic(run_dir / figure.file_name, lambda tmp, f=figure: tmp.write_bytes(f.png))
    target = run_dir / "report.html"
    atomic_write_text(target, html)
    return target


def _per_class(
    embedded: dict[str, torch.Tensor], labels: np.ndarray, class_names: list[str]
) -> tuple[list[figure_data.ClassRow], str | None]:
    from tripletkit.evaluation import evaluate_retrieval

    try:
        results = {name: evaluate_retrieval(x, labels) for name, x in embedded.items()}
    except ValueError as err:
        return [], f"no per-class retrieval table: {err}"
    before = results.get("before training")
    rows = figure_data.per_class_rows(
        results["after training"].per_class,
        labels,
        class_names,
        before.per_class if before is not None else None,
    )
    return rows, None


def _pair_figures(embedded, local_index, labels, distance_name, margin, max_pairs, seed):
    from tripletkit.distances import indexed_paired_distances
    from tripletkit.evaluation import (
        equal_error_rate,
        roc_curve,
        sample_verification_pairs,
        tar_at_far,
    )

    first, second, same = sample_verification_pairs(
        labels, max_same=max_pairs, num_different=max_pairs, seed=seed
    )
    if same.all() or not same.any():
        return None, {}, [], None
    first_t, second_t = torch.from_numpy(first), torch.from_numpy(second)
    loss_distances: dict[str, np.ndarray] = {}
    rocs = []
    rows = []
    for name, x in embedded.items():
        points = x[torch.from_numpy(local_index)]
        loss_distances[name] = (
            indexed_paired_distances(points, first_t, second_t, distance_name).double().numpy()
        )
        cosine = indexed_paired_distances(points, first_t, second_t, "cosine").double().numpy()
        roc = roc_curve(same, distances=cosine)
        metrics = {"eer": equal_error_rate(roc)}
        metrics.update({f"tar_at_far_{far:g}": tar_at_far(roc, far) for far in ROC_FARS})
        rocs.append((name, roc, metrics))
        rows.append(
            {
                "model": name,
                "auc": f"{roc.auc:.4f}",
                "eer": _percent(metrics["eer"]),
                **{f"{far:g}": _percent(metrics[f"tar_at_far_{far:g}"]) for far in ROC_FARS},
            }
        )
    panels = []
    medians = []
    overlaps = {}
    for name, distances in loss_distances.items():
        # Each model on its own range: on a shared axis an untrained model's distances fall in a
        # bin or two, and the overlap would measure the bin width rather than the separation.
        hist = figure_data.distance_histograms(distances[same], distances[~same], 50)
        panels.append((name.capitalize(), hist))
        medians.append(float(np.median(distances[same])))
        overlaps[name] = hist.overlap
    margin_text = (
        f"The bracket starts at the median positive distance and spans the margin α = {margin:g}: "
        "the loss wants every negative of an anchor beyond its positive plus α."
        if margin is not None
        else "This loss has no triplet margin to mark."
    )
    hist_figure = _Figure(
        "histograms",
        "Distance histograms: positive vs negative pairs",
        figures.png_bytes(figures.histograms_figure(panels, distance_name, margin, medians)),
        f"{distance_name.replace('_', ' ').capitalize()} distances (the loss's distance) of {int(same.sum()):,} same-class and "
        f"{int((~same).sum()):,} different-class validation pairs, as a share of their kind. "
        "The hatched area is where the histograms overlap (0: fully separated, 1: identical); each "
        "model is binned over its own range of distances (50 bins). " + margin_text,
    )
    # Solid: after training, dashed: before.
    roc = _Figure(
        "roc",
        "Verification ROC",
        figures.png_bytes(figures.roc_figure(rocs[::-1])),
        "True vs false accept rate over every cosine-distance threshold on the same validation "
        "pairs, after training (solid) and before (dashed). The dot is the equal error rate "
        "(FAR = 1 − TAR); diamonds are the TAR at FAR 1%, 0.1% and 0.01%.",
    )
    return hist_figure, overlaps, rows, roc


def _map_figure(after, labels, class_names, tsne, tsne_items, seed, report) -> _Figure:
    points, explained = figure_data.pca_2d(after.numpy())
    panels = [
        figures.MapPanel(
            f"PCA of {len(labels):,} validation embeddings",
            points,
            labels,
            f"PC 1 (embedding units; {explained[0] * 100:.1f}% of variance)",
            f"PC 2 (embedding units; {explained[1] * 100:.1f}% of variance)",
        )
    ]
    extra = ""
    if tsne:
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError:
            umap = None
        local = figure_data.even_subset(labels, tsne_items, seed)
        x = after.numpy()[local]
        if umap is not None:
            reduced = umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
            method = "UMAP"
        else:
            from sklearn.manifold import TSNE

            perplexity = float(min(30.0, max(2.0, (len(local) - 1) / 3.0)))
            reduced = TSNE(
                n_components=2,
                init="pca",
                perplexity=perplexity,
                random_state=seed,
                # Barnes-Hut's OpenMP loop ran 20-300x slower inside this process than alone
                # (torch's and scikit-learn's OpenMP runtimes side by side; OMP_WAIT_POLICY=passive
                # cured it); the exact method is plain NumPy and O(N^2), fine for a few thousand.
                method="exact" if len(local) <= 2000 else "barnes_hut",
            ).fit_transform(x)
            method = "t-SNE"
        panels.append(
            figures.MapPanel(
                f"{method} of {len(local):,} validation embeddings",
                np.asarray(reduced),
                labels[local],
                f"{method} 1 (arbitrary units)",
                f"{method} 2 (arbitrary units)",
            )
        )
        extra = f" Right: {method} (keeps neighbourhoods, not distances)."
    figure = figures.embedding_map_figure(panels, class_names)
    return _Figure(
        "map",
        "2-D map of the validation embeddings",
        figures.png_bytes(figure),
        "Trained embeddings of validation items (classes never seen in training), coloured by "
        "class. "
        + ("Left: the" if extra else "The")
        + " two directions of largest variance (PCA)."
        + extra,
    )


def _gallery(run, validation, dataset_index, after, labels, class_names, seed):
    from tripletkit.evaluation import knn

    queries = figure_data.gallery_queries(labels, 8, seed)
    k = min(5, len(labels) - 1)
    neighbours = knn(after[torch.from_numpy(queries)], after, k + 1, distance="cosine")
    rows = []
    for qi, q in enumerate(queries.tolist()):
        hits = [
            (int(j), float(d))
            for j, d in zip(
                neighbours.indices[qi].tolist(), neighbours.distances[qi].tolist(), strict=True
            )
            if int(j) != q
        ][:k]
        rows.append((q, hits))
    content = _item_content(validation, int(dataset_index[0]))
    name_of = lambda i: _class_name(class_names, int(labels[i]))  # noqa: E731
    if isinstance(content, torch.Tensor) and content.ndim == 3:
        spec = run.model.input_spec
        picture = lambda i: _as_picture(  # noqa: E731
            _item_content(validation, int(dataset_index[i])), list(spec.mean), list(spec.std)
        )
        gallery_rows = [
            figures.GalleryRow(
                query=picture(q),
                query_name=name_of(q),
                neighbours=[picture(j) for j, _ in hits],
                neighbour_names=[name_of(j) for j, _ in hits],
                correct=[bool(labels[j] == labels[q]) for j, _ in hits],
                distances=[d for _, d in hits],
            )
            for q, hits in rows
        ]
        return _Figure(
            "gallery",
            "Retrieval gallery",
            figures.png_bytes(figures.gallery_figure(gallery_rows)),
            "Eight validation queries (one class after another) and their five nearest "
            "validation items by cosine distance d; a green frame is the query's class, red "
            "another class.",
        )

    def shown(i: int) -> str:
        value = _item_content(validation, int(dataset_index[i]))
        return value if isinstance(value, str) else f"item {int(dataset_index[i])}"

    return [
        {
            "query": shown(q),
            "label": name_of(q),
            "hits": [
                {
                    "text": shown(j),
                    "label": name_of(j),
                    "distance": f"{d:.3f}",
                    "correct": bool(labels[j] == labels[q]),
                }
                for j, d in hits
            ],
        }
        for q, hits in rows
    ]


def _render(
    run_dir, config, summary, report, per_class_rows, verification_rows, gallery_table, overlaps
) -> str:
    import jinja2

    from tripletkit import __version__

    test = _read_json(run_dir / "test.json")
    headline_keys = [
        ("precision_at_1", "Recall@1"),
        ("r_precision", "R-precision"),
        ("map_at_r", "MAP@R"),
    ]
    headline = []
    for where, before, after in (
        ("test set", test.get("before", {}), test.get("after", {})),
        ("validation set", summary.get("before", {}), summary.get("after", {})),
    ):
        for key, name in headline_keys:
            if key in before or key in after:
                headline.append(
                    {
                        "where": where,
                        "metric": name,
                        "before": _percent(before.get(key)),
                        "after": _percent(after.get(key)),
                    }
                )
    data_summary = {
        k.replace("_", " "): (", ".join(str(x) for x in v) if isinstance(v, list) else v)
        for k, v in summary.get("data", {}).items()
    }
    data_summary.setdefault("skipped", summary.get("data", {}).get("skipped", 0))
    data_summary["skipped files"] = data_summary.pop("skipped")
    data_summary.update(report.data_rows)
    model_config = _read_json(run_dir / "model" / "config.json")
    model_name = model_config.get("config", {}).get("name") or config.model.name or "?"
    if model_config.get("embedding_dim"):
        model_name += f" ({model_config['embedding_dim']}-d)"
    config_rows = {
        f"{section}.{key}": json.dumps(value)
        for section, values in config.to_dict().items()
        for key, value in values.items()
    }
    samples_per_s = [
        r["samples_per_s"]
        for r in report.records
        if r.get("kind") == "step" and isinstance(r.get("samples_per_s"), (int, float))
    ]
    timings = {}
    if isinstance(summary.get("seconds"), (int, float)):
        timings["training (total)"] = f"{summary['seconds']:.1f} s"
    for entry in summary.get("history", []):
        if isinstance(entry.get("seconds"), (int, float)):
            timings[f"epoch {entry['epoch']}"] = (
                f"{entry['seconds']:.1f} s (validation {entry.get('validation_seconds', 0.0):.1f} s)"
            )
    if samples_per_s:
        timings["throughput (median)"] = f"{float(np.median(samples_per_s)):,.0f} samples/s"
    for name, seconds in report.seconds.items():
        timings[f"report: {name}"] = f"{seconds:.1f} s"
    calibration = _read_json(run_dir / "calibration.json")
    template = resources.files("tripletkit.report").joinpath("report.html.j2").read_text()
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(template).render(
        csp=CONTENT_SECURITY_POLICY,
        run_name=run_dir.resolve().name,
        generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        version=__version__,
        dataset=summary.get("data", {}).get("dataset", config.data.dataset),
        model=model_name,
        loss=config.loss.name,
        best_epoch=summary.get("best_epoch"),
        headline=headline,
        overlaps=overlaps,
        figures=report.figures,
        figure_by_key={f.key: f for f in report.figures},
        verification_rows=verification_rows,
        gallery_table=gallery_table,
        per_class_rows=per_class_rows,
        config_rows=config_rows,
        data_summary=data_summary,
        timings=timings,
        diagnoses=summary.get("diagnoses", []),
        calibration=calibration.get("thresholds", {}),
        notes=report.notes,
    )
