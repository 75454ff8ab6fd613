"""Short training runs over a grid of margins (and distances), scored by validation MAP@R.

:func:`tune_margin` trains one copy of a :class:`~tripletkit.training.config.RunConfig` per
``(distance, margin)`` with few epochs, each in its own run directory, scores each by the best
validation MAP@R of its run (the validation set is held-out classes; the test set is never looked
at), and writes into the output directory:

``margin_tuning.json``
    the trials and the best one (format below); rewritten after every trial, so a partial grid is
    readable while it runs.
``margin_tuning.png``
    validation MAP@R against the margin, one line per distance, the best trial marked
    (:func:`tripletkit.report.figures.margin_tuning_figure`, which a report can draw from the
    JSON alone).
``config.json``
    the input configuration with ``loss.margin`` (and ``loss.distance``) of the best trial and the
    full number of epochs: ``tripletkit train OUT/config.json`` trains the final model with it.
``trials/<distance>-margin-<margin>/``
    each trial's run directory (``config.json``, ``metrics.jsonl``, ``summary.json``, model...).

Format of ``margin_tuning.json`` (``"format": "tripletkit.margin_tuning"``, ``"version": 1``)::

    {
      "format": "tripletkit.margin_tuning", "version": 1,
      "metric": "map_at_r",               # what ranks the trials (higher is better)
      "split": "validation",
      "loss": "triplet", "mining": "semihard",
      "trial_epochs": 2, "trial_batches_per_epoch": null,
      "margins": [0.05, 0.1, 0.2], "distances": ["squared_euclidean"],
      "trials": [                         # in the order run: distances outer, margins inner
        {"margin": 0.05, "distance": "squared_euclidean",
         "status": "ok",                  # or "failed" (then "error" says why and "score" is null)
         "score": 0.41,                   # the best validation map_at_r of the trial's epochs
         "score_before": 0.20,            # map_at_r of the untrained model
         "validation": {...},             # every validation metric of the best epoch
         "best_epoch": 1, "final_loss": 0.03, "seconds": 12.3,
         "diagnoses": [],                 # stall / collapse warnings from training
         "run_dir": "trials/squared_euclidean-margin-0.05",   # relative to this file
         "error": null,
         "reused": false}                 # true: taken from an earlier run (resume=True)
      ],
      "best": {"margin": 0.1, "distance": "squared_euclidean", "score": 0.45,
               "run_dir": "trials/squared_euclidean-margin-0.1"},   # null until a trial succeeds
      "suggestion": {...} or null,        # MarginSuggestion.as_dict() when one was computed
      "config": "config.json", "plot": "margin_tuning.png",   # both null until complete
      "seconds": 61.5, "complete": true   # false while trials remain
    }

The best trial is the one with the highest score; ties go to the earliest in run order.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tripletkit.distances import METRICS, unit_sphere_range
from tripletkit.files import atomic_write_text, write_atomic
from tripletkit.training.build import DEFAULT_TRIPLET_RECIPE
from tripletkit.training.config import RunConfig

__all__ = [
    "FORMAT",
    "MarginTrial",
    "MarginTuning",
    "check_margin_grid",
    "tune_margin",
]

FORMAT = "tripletkit.margin_tuning"
SCORE_METRIC = "map_at_r"


@dataclass
class MarginTrial:
    """One short training run of the grid (see the JSON format in the module docstring)."""

    margin: float
    distance: str
    status: str = "pending"
    score: float | None = None
    score_before: float | None = None
    validation: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    final_loss: float | None = None
    seconds: float = 0.0
    diagnoses: list[str] = field(default_factory=list)
    run_dir: str = ""
    error: str | None = None
    reused: bool = False

    def line(self, index: int, total: int) -> str:
        """The progress line printed after the trial."""
        head = f"trial {index}/{total}: {self.distance} margin {self.margin:g}"
        if self.status != "ok":
            return f"{head}: failed: {self.error}"
        before = "" if self.score_before is None else f" (before {self.score_before:.4f})"
        warn = f"  warning: {self.diagnoses[0]}" if self.diagnoses else ""
        reused = " (finished earlier, reused)" if self.reused else ""
        return (
            f"{head}: validation MAP@R {self.score:.4f}{before}  {self.seconds:.1f} s{reused}{warn}"
        )


@dataclass
class MarginTuning:
    """What :func:`tune_margin` found and wrote."""

    trials: list[MarginTrial]
    best: MarginTrial
    config: RunConfig
    directory: Path
    seconds: float

    @property
    def json_path(self) -> Path:
        return self.directory / "margin_tuning.json"

    @property
    def config_path(self) -> Path:
        return self.directory / "config.json"

    @property
    def plot_path(self) -> Path | None:
        path = self.directory / "margin_tuning.png"
        return path if path.is_file() else None


def check_margin_grid(
    margins: Sequence[float], distances: Sequence[str], normalized: bool = True
) -> tuple[list[float], list[str]]:
    """Validate a grid: returns the margins as floats and the distances, or raises ``ValueError``.

    Every margin must be a finite number >= 0, listed once, and, for L2-normalised embeddings (and
    for ``cosine`` always), below the width of the distance's range: ``d(a, n) - d(a, p)`` can never
    reach a margin that large, so every triplet would stay active.

    >>> check_margin_grid([0.1, 0.2], ["squared_euclidean"])
    ([0.1, 0.2], ['squared_euclidean'])
    >>> check_margin_grid([3.0], ["cosine"])
    Traceback (most recent call last):
    ...
    ValueError: margin 3 is outside the range of cosine distances, [0, 2] for L2-normalised embeddings: no triplet could satisfy it; use margins below 2
    """
    margins = list(margins)
    distances = list(distances)
    if not margins:
        raise ValueError("the margin grid is empty; give at least one margin (e.g. 0.1, 0.2, 0.4)")
    if not distances:
        raise ValueError("the distance list is empty; give at least one (e.g. squared_euclidean)")
    values = []
    for margin in margins:
        try:
            value = float(margin)
        except (TypeError, ValueError):
            raise ValueError(f"margins must be numbers; got {margin!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"margins must be finite numbers >= 0; got {margin!r}")
        if value in values:
            raise ValueError(f"margin {value:g} is listed twice in the grid")
        values.append(value)
    for distance in distances:
        if distance not in METRICS:
            listed = ", ".join(repr(m) for m in METRICS)
            raise ValueError(f"unknown distance {distance!r}; accepted: {listed}")
    if len(set(distances)) != len(distances):
        raise ValueError(f"a distance is listed twice: {distances}")
    for distance in distances:
        if not normalized and distance != "cosine":
            continue
        low, high = unit_sphere_range(distance)
        width = high - low
        for value in values:
            if value >= width:
                raise ValueError(
                    f"margin {value:g} is outside the range of {distance} distances, "
                    f"[{low:g}, {high:g}] for L2-normalised embeddings: no triplet could satisfy "
                    f"it; use margins below {width:g}"
                )
    return values, distances


def _trial_name(distance: str, margin: float) -> str:
    return f"{distance}-margin-{margin:g}"


def _payload(
    trials: list[MarginTrial],
    best: MarginTrial | None,
    base: RunConfig,
    margins: list[float],
    distances: list[str],
    epochs: int,
    batches_per_epoch: int | None,
    suggestion: dict[str, Any] | None,
    plot: str | None,
    seconds: float,
    complete: bool,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": 1,
        "metric": SCORE_METRIC,
        "split": "validation",
        "loss": base.loss.name,
        "mining": base.loss.mining
        or (DEFAULT_TRIPLET_RECIPE["mining"] if base.loss.name == "triplet" else None),
        "trial_epochs": epochs,
        "trial_batches_per_epoch": batches_per_epoch,
        "margins": margins,
        "distances": distances,
        "trials": [asdict(t) for t in trials],
        "best": None
        if best is None
        else {
            "margin": best.margin,
            "distance": best.distance,
            "score": best.score,
            "run_dir": best.run_dir,
        },
        "suggestion": suggestion,
        "config": "config.json" if complete and best is not None else None,
        "plot": plot,
        "seconds": seconds,
        "complete": complete,
    }


def _best(trials: list[MarginTrial]) -> MarginTrial | None:
    best = None
    for trial in trials:
        if trial.status == "ok" and (best is None or trial.score > best.score):
            best = trial
    return best


def _fill_from_summary(trial: MarginTrial, summary: dict[str, Any]) -> None:
    """Fill ``trial`` from the ``summary.json`` the trainer wrote into its run directory."""
    after, before = summary.get("after") or {}, summary.get("before") or {}
    score = after.get(SCORE_METRIC)
    if not isinstance(score, (int, float)) or not math.isfinite(score):
        raise RuntimeError(f"the trial produced no finite validation {SCORE_METRIC}: {score!r}")
    trial.status = "ok"
    trial.score = float(score)
    trial.score_before = None if before.get(SCORE_METRIC) is None else float(before[SCORE_METRIC])
    trial.validation = {
        k: float(v)
        for k, v in after.items()
        if isinstance(v, (int, float)) and k not in ("epoch", "seconds")
    }
    trial.best_epoch = summary.get("best_epoch")
    history = summary.get("history") or []
    trial.final_loss = float(history[-1]["loss"]) if history and "loss" in history[-1] else None
    trial.diagnoses = list(summary.get("diagnoses") or [])
    trial.seconds = float(summary.get("seconds") or 0.0)


def _finished_summary(config: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished trial in ``run_dir`` trained with exactly ``config``, else None."""
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if saved == config.to_dict() else None


def _run_trial(config: RunConfig, run_dir: Path, trial: MarginTrial) -> None:
    """Train ``config`` into ``run_dir`` and fill ``trial`` (build and fit as ``train()`` does,
    without its test-set evaluation, calibration and report, which a trial does not need)."""
    from tripletkit.training.build import build_run
    from tripletkit.training.trainer import Trainer, seed_everything

    start = time.perf_counter()
    seed_everything(config.train.seed)
    built = build_run(config)
    if built.data.validation is None:
        raise ValueError("margin tuning needs a validation set (data.val_path or held-out classes)")
    Trainer(built.model, built.loss_fn, built.data, config, run_dir).fit()
    _fill_from_summary(trial, json.loads((run_dir / "summary.json").read_text()))
    trial.seconds = time.perf_counter() - start


def tune_margin(
    config: RunConfig,
    margins: Sequence[float],
    distances: Sequence[str] | None = None,
    *,
    epochs: int = 2,
    batches_per_epoch: int | None = None,
    out_dir: str | Path,
    suggestion: Any = None,
    progress: bool | Callable[[MarginTrial, int, int], None] = True,
    resume: bool = False,
) -> MarginTuning:
    """Train ``config`` briefly with each margin (× distance) and keep the best by validation MAP@R.

    Args:
        config: the run to tune (data, model, loss, optimiser); not modified. Its ``loss.margin``
            (and, with ``distances``, ``loss.distance``) is what the grid replaces.
        margins: the margins to try, each a finite number >= 0 below the distance's range width
            (see :func:`check_margin_grid`); e.g. ``MarginSuggestion.grid()``.
        distances: metrics to try (``squared_euclidean``, ``euclidean``, ``cosine``, ``dot``);
            None keeps the config's (the triplet default, squared euclidean, when it is unset).
        epochs: epochs of each trial (``train.epochs`` of the trials only; the written
            ``config.json`` keeps the config's own).
        batches_per_epoch: cap on the batches of a trial's epoch (``data.batches_per_epoch``).
        out_dir: where the trials, ``margin_tuning.json``/``.png`` and ``config.json`` go.
        suggestion: a :class:`~tripletkit.tuning.MarginSuggestion` to record in the JSON.
        progress: True prints a line per trial to stderr; a callable gets ``(trial, index,
            total)`` after each trial instead; False is silent.
        resume: reuse the trials already finished in ``out_dir`` with exactly the same trial
            configuration (their ``config.json`` and ``summary.json``) instead of training them
            again: an interrupted grid continues where it stopped.

    Returns:
        A :class:`MarginTuning` (``.best.margin``, ``.trials``, ``.config`` with the best margin).

    Raises:
        ValueError: an empty grid, a negative margin, a margin outside the distance's range, a
            loss without a margin (or a soft margin), or no validation set.
        RuntimeError: every trial failed (each failure is in ``margin_tuning.json``).

    Example:
        >>> import tempfile
        >>> from tripletkit.training import resolve_config
        >>> config = resolve_config(overrides={"data.dataset": "digits", "data.p": 5,
        ...     "data.k": 8, "train.quiet": True, "train.tensorboard": False})
        >>> found = tune_margin(config, [0.05, 0.2], epochs=1, batches_per_epoch=2,
        ...                     out_dir=tempfile.mkdtemp(), progress=False)
        >>> found.best.margin == max(found.trials, key=lambda t: t.score).margin
        True
        >>> found.config.loss.margin == found.best.margin
        True
    """
    if config.loss.soft:
        raise ValueError("loss.soft is true: the soft-margin loss has no margin to tune")
    from tripletkit.losses import create_loss

    if not hasattr(create_loss(config.loss.name, num_classes=2, embedding_dim=2), "margin"):
        raise ValueError(f"loss {config.loss.name!r} has no margin to tune")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer; got {epochs!r}")
    if batches_per_epoch is not None and (
        isinstance(batches_per_epoch, bool)
        or not isinstance(batches_per_epoch, int)
        or batches_per_epoch < 1
    ):
        raise ValueError(
            f"batches_per_epoch must be a positive integer or None; got {batches_per_epoch!r}"
        )
    default_distance = config.loss.distance or DEFAULT_TRIPLET_RECIPE["distance"]
    margins, distances = check_margin_grid(
        margins,
        list(distances) if distances is not None else [default_distance],
        normalized=config.model.normalize,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suggestion_dict = suggestion.as_dict() if hasattr(suggestion, "as_dict") else suggestion
    grid = [(d, m) for d in distances for m in margins]
    trials = [MarginTrial(margin=m, distance=d) for d, m in grid]
    start = time.perf_counter()

    def write(complete: bool, plot: str | None = None) -> dict[str, Any]:
        payload = _payload(
            trials,
            _best(trials),
            config,
            margins,
            distances,
            epochs,
            batches_per_epoch,
            suggestion_dict,
            plot,
            time.perf_counter() - start,
            complete,
        )
        if plot is not None:  # the figure is drawn from the payload and written first
            from tripletkit.report.figures import margin_tuning_figure, png_bytes

            image = png_bytes(margin_tuning_figure(payload))
            write_atomic(out / plot, lambda temporary: temporary.write_bytes(image))
        atomic_write_text(out / "margin_tuning.json", json.dumps(payload, indent=2) + "\n")
        return payload

    for index, trial in enumerate(trials, 1):
        name = _trial_name(trial.distance, trial.margin)
        trial.run_dir = f"trials/{name}"
        trial_config = copy.deepcopy(config)
        trial_config.loss.margin = trial.margin
        trial_config.loss.distance = trial.distance
        trial_config.train.epochs = epochs
        trial_config.train.run_dir = None
        trial_config.train.report = False
        trial_config.train.quiet = True
        if batches_per_epoch is not None:
            trial_config.data.batches_per_epoch = batches_per_epoch
        trial_start = time.perf_counter()
        finished = _finished_summary(trial_config, out / "trials" / name) if resume else None
        try:
            if finished is not None:
                _fill_from_summary(trial, finished)
                trial.reused = True
            else:
                _run_trial(trial_config, out / "trials" / name, trial)
        except KeyboardInterrupt:
            raise
        except (RuntimeError, ValueError, FloatingPointError) as err:
            trial.status = "failed"
            trial.error = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            trial.seconds = time.perf_counter() - trial_start
        write(complete=False)
        if callable(progress):
            progress(trial, index, len(trials))
        elif progress:
            print(trial.line(index, len(trials)), file=sys.stderr, flush=True)

    best = _best(trials)
    if best is None:
        write(complete=True)
        raise RuntimeError(
            f"every margin trial failed (see {out / 'margin_tuning.json'}); first error: "
            f"{trials[0].error}"
        )
    tuned = copy.deepcopy(config)
    tuned.loss.margin = best.margin
    tuned.loss.distance = best.distance
    tuned.train.run_dir = None
    atomic_write_text(out / "config.json", json.dumps(tuned.to_dict(), indent=2) + "\n")
    write(complete=True, plot="margin_tuning.png")
    return MarginTuning(trials, best, tuned, out, time.perf_counter() - start)
