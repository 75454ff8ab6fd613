"""From a :class:`~tripletkit.training.config.RunConfig` to data, model and loss, and ``train()``.

``train(config)`` is what ``tripletkit train`` runs: it builds the datasets (with a class-disjoint
validation split and, for the bundled data, a test set never looked at during training), the model
and the loss, measures the test metrics of the untrained model, trains, and measures them again
with the best checkpoint.

Data sources (``data.dataset``):

==================  ============================================================================
``auto``            Fashion-MNIST when its Debian package is installed, else scikit-learn digits
``fashion-mnist``   train: train-set images of classes 0-4 (30,000); validation: train-set images
                    of classes 5-9 (``data.val_limit``, default 5,000); test: the 5,000 test-set
                    images of classes 5-9
``digits``          train: classes 0-4; validation / test: alternate images of classes 5-9
``image-folder``    ``data.path`` (one sub-folder per class); validation: ``data.val_path``, or the
                    classes not in ``data.train_classes`` (default: a seeded 20% of the classes)
``manifest``        ``data.path`` CSV/JSONL/Parquet with ``path`` or ``text`` and ``label``
``vectors``         ``data.path`` ``.npy``/Parquet features (labels from ``label`` column/file)
==================  ============================================================================
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tripletkit.data import (
    ImageArrayDataset,
    ImageFolderDataset,
    LabelledSubset,
    class_disjoint_split,
    collate_items,
    load_features,
    manifest_dataset,
    transforms,
)
from tripletkit.data.bundled import fashion_mnist_available, load_digits, load_fashion_mnist
from tripletkit.data.manifests import MANIFEST_SUFFIXES
from tripletkit.data.splits import DIGITS_TRAIN_CLASSES, FASHION_MNIST_TRAIN_CLASSES
from tripletkit.files import atomic_write_text
from tripletkit.training.config import RunConfig
from tripletkit.training.trainer import TrainData, Trainer, TrainResult, seed_everything

__all__ = [
    "BuiltRun",
    "RunOutcome",
    "build_loss",
    "build_run",
    "calibrate",
    "default_run_dir",
    "train",
]

DATASETS = ("auto", "fashion-mnist", "digits", "image-folder", "manifest", "vectors")


@dataclass
class BuiltRun:
    """The parts of a run, ready for the :class:`~tripletkit.training.trainer.Trainer`."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    data: TrainData
    test: torch.utils.data.Dataset | None
    kind: str  # "image", "text" or "vector"


@dataclass
class RunOutcome:
    """What ``train()`` returns: the trainer's result and the test metrics before/after."""

    result: TrainResult
    test_before: dict[str, Any]
    test_after: dict[str, Any]
    report: Path | None
    #: False on the other ranks of a ``torchrun`` job: only rank 0 tests, writes and reports.
    is_main: bool = True


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _image_transform(spec, config: RunConfig, augment: bool, native: tuple[int, int] | None):
    size = config.data.image_size or (spec.image_size[0] if spec.image_size else None)
    steps: list[Any] = []
    if augment:
        crop = size or (native[0] if native else 64)
        steps += [
            transforms.RandomResizedCrop(crop, scale=(0.7, 1.0)),
            transforms.RandomHorizontalFlip(),
        ]
    elif size is not None:
        steps.append(transforms.Resize(size))
    steps += [transforms.ToFloat(), transforms.Normalize(spec.mean, spec.std)]
    return transforms.Compose(steps)


def _model_name(config: RunConfig, kind: str) -> str:
    if config.model.name is not None:
        return config.model.name
    return {"image": "small_cnn", "vector": "mlp", "text": "text_encoder"}[kind]


def _build_model(config: RunConfig, kind: str, in_channels: int | None, in_features: int | None):
    from tripletkit.models import create_model
    from tripletkit.models.input_spec import input_kind

    options = dict(config.model.options)
    name = _model_name(config, kind)
    if kind == "vector" and in_features is not None:
        options.setdefault("in_features", in_features)
    if kind == "image" and in_channels is not None and name == "small_cnn":
        options.setdefault("in_channels", in_channels)

    def mismatch(takes: str) -> ValueError:
        return ValueError(
            f"model.name {name!r} takes {takes}, but the data holds {kind}s; choose a model for "
            f"{kind}s (or leave model.name unset: small_cnn for images, mlp for vectors, "
            "text_encoder for texts)"
        )

    try:
        model = create_model(
            name,
            pretrained=config.model.pretrained,
            embedding_dim=config.model.embedding_dim,
            normalize=config.model.normalize,
            projector=config.model.projector,
            projector_frozen=config.model.projector_frozen,
            **options,
        )
    except (TypeError, ValueError) as err:
        if "in_features" in str(err) and "in_features" not in config.model.options:
            raise mismatch("no feature vectors") from err  # refused the features' width
        raise
    if input_kind(model) != kind:
        raise mismatch(f"{input_kind(model)}s")
    return model


#: What ``tripletkit train`` uses for the triplet loss when the configuration leaves it open.
DEFAULT_TRIPLET_RECIPE: dict[str, Any] = {
    "margin": 0.2,
    "mining": "semihard",
    "distance": "squared_euclidean",
    "soft": False,
}


def build_loss(config: RunConfig, num_classes: int, embedding_dim: int) -> torch.nn.Module:
    """The loss named by ``loss.name`` with the config's parameters (None: the defaults)."""
    from tripletkit.losses import create_loss

    chosen = {
        "margin": config.loss.margin,
        "mining": config.loss.mining,
        "distance": config.loss.distance,
        "soft": config.loss.soft,
    }
    if config.loss.name == "triplet":
        chosen = {k: DEFAULT_TRIPLET_RECIPE[k] if v is None else v for k, v in chosen.items()}
    return create_loss(
        config.loss.name,
        num_classes=num_classes,
        embedding_dim=embedding_dim,
        **chosen,
        **config.loss.options,
    )


def _limit_per_class(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` items, spread evenly over the classes (first items of each)."""
    index = np.arange(labels.shape[0])
    if limit is None or limit >= labels.shape[0]:
        return index
    classes = np.unique(labels)
    per_class = max(limit // classes.shape[0], 1)
    return np.sort(np.concatenate([index[labels == c][:per_class] for c in classes]))


def _bundled(config: RunConfig, name: str):
    """Train / validation / test arrays of the bundled image data sets."""
    if name == "fashion-mnist":
        train_set, test_set = load_fashion_mnist("train"), load_fashion_mnist("test")
        train_classes = config.data.train_classes or list(FASHION_MNIST_TRAIN_CLASSES)
        train_side, held_out = class_disjoint_split(train_set.labels, train_classes)
        val_index = held_out[
            _limit_per_class(train_set.labels[held_out], config.data.val_limit or 5000)
        ]
        test_index = class_disjoint_split(test_set.labels, train_classes).test
        return (
            (train_set.images[train_side], train_set.labels[train_side]),
            (train_set.images[val_index], train_set.labels[val_index]),
            (test_set.images[test_index], test_set.labels[test_index]),
            train_set.classes,
        )
    digits = load_digits()
    train_classes = config.data.train_classes or list(DIGITS_TRAIN_CLASSES)
    train_side, held_out = class_disjoint_split(digits.labels, train_classes)
    val_index, test_index = held_out[0::2], held_out[1::2]
    return (
        (digits.images[train_side], digits.labels[train_side]),
        (digits.images[val_index], digits.labels[val_index]),
        (digits.images[test_index], digits.labels[test_index]),
        digits.classes,
    )


def _dataset_of_path(path: str) -> str:
    """``data.dataset`` for ``data.dataset = "auto"`` with a ``data.path``: a folder holds images
    (one sub-folder per class), ``.npy`` features, a table with a ``path`` or ``text`` column is a
    manifest, and any other Parquet table features."""
    location = Path(path)
    if location.is_dir():
        return "image-folder"
    if not location.exists():
        raise FileNotFoundError(f"data.path {path!r} does not exist")
    suffix = location.suffix.lower()
    if suffix == ".npy":
        return "vectors"
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            return "manifest"  # which says how to install Parquet support
        names = set(pq.read_schema(location).names)
        return "manifest" if names & {"path", "text"} else "vectors"
    if suffix in MANIFEST_SUFFIXES:
        return "manifest"
    raise ValueError(
        f"data.path {path!r}: cannot tell what it holds from its suffix; set data.dataset "
        "(--data image-folder, manifest or vectors)"
    )


def build_run(config: RunConfig) -> BuiltRun:
    """Datasets, model and loss of ``config``."""
    name = config.data.dataset
    if name not in DATASETS:
        listed = ", ".join(repr(d) for d in DATASETS)
        raise ValueError(f"unknown data.dataset {name!r}; accepted: {listed}")
    if name == "auto" and config.data.path is not None:
        # The user's own data: never a bundled set in its place.
        name = _dataset_of_path(config.data.path)
    elif name == "auto":
        name = "fashion-mnist" if fashion_mnist_available() else "digits"
    seed = config.train.seed
    summary: dict[str, Any] = {"dataset": name}

    if name in ("fashion-mnist", "digits"):
        (train_x, train_y), (val_x, val_y), (test_x, test_y), classes = _bundled(config, name)
        model = _build_model(config, "image", 1, None)
        spec = model.input_spec
        native = tuple(train_x.shape[-2:])
        train_tf = _image_transform(spec, config, config.data.augment, native)
        eval_tf = _image_transform(spec, config, False, native)
        train = ImageArrayDataset(train_x, train_y, train_tf, classes=classes, seed=seed)
        validation = ImageArrayDataset(val_x, val_y, eval_tf, classes=classes)
        test = ImageArrayDataset(test_x, test_y, eval_tf, classes=classes)
        kind = "image"
        summary.update(
            train_items=len(train),
            train_classes=sorted({int(c) for c in train_y.tolist()}),
            validation_items=len(validation),
            test_items=len(test),
            test_classes=sorted({int(c) for c in test_y.tolist()}),
            class_names=[str(c) for c in classes],
        )
    else:
        if config.data.path is None:
            raise ValueError(f"data.dataset {name!r} needs data.path (the training data)")
        test = None
        if name == "vectors":
            full = load_features(config.data.path, config.data.labels_path)
            model = _build_model(config, "vector", None, int(full.features.shape[1]))
            kind = "vector"
        else:
            # Only what the data holds (images or texts): the files are checked, and unreadable
            # ones reported, once, when the datasets are built below.
            probe = (
                None
                if name == "image-folder"
                else manifest_dataset(
                    config.data.path,
                    allow_outside_root=config.data.allow_outside_root,
                    check="none",
                )
            )
            kind = "text" if probe is not None and not hasattr(probe, "load") else "image"
            model = _build_model(config, kind, 3 if kind == "image" else None, None)
            if kind == "image":
                spec = model.input_spec
                size = config.data.image_size or (spec.image_size[0] if spec.image_size else 64)
                config.data.image_size = size

                def build(path: Any, tf: Any) -> Any:
                    # By what the path is: a validation manifest may go with a training folder.
                    if Path(path).is_dir():
                        return ImageFolderDataset(path, tf, strict=config.data.strict, seed=seed)
                    return manifest_dataset(
                        path,
                        tf,
                        allow_outside_root=config.data.allow_outside_root,
                        strict=config.data.strict,
                        seed=seed,
                    )

                full = build(
                    config.data.path, _image_transform(spec, config, config.data.augment, None)
                )
                # The same checked files, prepared without augmentation: building the dataset
                # again would check (and report) every file a second time.
                full_eval = copy.copy(full)
                full_eval.transform = _image_transform(spec, config, False, None)
            else:
                full = full_eval = probe
        labels = np.asarray(full.labels)
        if config.data.val_path is not None:
            if name == "vectors":
                validation = load_features(config.data.val_path, config.data.val_labels_path)
            elif kind == "image":
                # Prepared as the evaluation side of the training data (no augmentation).
                validation = build(
                    config.data.val_path, _image_transform(spec, config, False, None)
                )
            else:
                validation = manifest_dataset(
                    config.data.val_path, allow_outside_root=config.data.allow_outside_root
                )
            train = full
        else:
            present = np.unique(labels)
            if config.data.train_classes is not None:
                train_classes = config.data.train_classes
            else:
                rng = np.random.default_rng(seed)
                # A fifth of the classes, but at least 2: one validation class makes every
                # retrieval metric 1.0 whatever the model.
                count = present.shape[0]
                # (Only where the rest still fills a batch of data.p classes.)
                second = 2 if count - 2 >= max(2, config.data.p) else 1
                held = max(1, round(0.2 * count), second)
                train_classes = sorted(
                    set(present.tolist()) - set(rng.choice(present, held, replace=False).tolist())
                )
            train_side, val_side = class_disjoint_split(labels, train_classes)
            train = LabelledSubset(full, train_side)
            eval_source = full if name == "vectors" else full_eval
            validation = LabelledSubset(eval_source, val_side)
        summary.update(
            train_items=len(train),
            validation_items=len(validation),
            skipped=int(getattr(full, "num_skipped", 0)),
        )
        validation_classes = np.unique(np.asarray(validation.labels)).shape[0]
        if validation_classes < 2:
            warnings.warn(
                f"the validation set holds {validation_classes} class: its P@1, R-precision and "
                "MAP@R are 1.0 whatever the model, so early stopping and tune-margin cannot tell "
                "runs apart; give data.val_path with more classes, or data with data.p + 2 "
                "classes or more (or a smaller data.p)",
                stacklevel=2,
            )
    num_classes = int(np.unique(np.asarray(train.labels)).shape[0])
    summary["num_train_classes"] = num_classes
    loss_fn = build_loss(config, int(np.asarray(train.labels).max()) + 1, model.loss_dim)
    data = TrainData(train=train, validation=validation, summary=summary)
    return BuiltRun(model, loss_fn, data, test, kind)


def _embed_and_evaluate(model, dataset, evaluate) -> dict[str, Any]:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=512, shuffle=False, collate_fn=collate_items
    )
    embeddings = model.embed(loader)
    labels = torch.as_tensor(np.asarray(dataset.labels))
    metrics = evaluate(embeddings, labels)
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


#: FARs at which ``calibration.json`` stores a verification threshold.
CALIBRATION_FARS = (1e-2, 1e-3, 1e-4)


def calibrate(model: torch.nn.Module, validation, run_dir: str | Path) -> dict[str, Any] | None:
    """Verification thresholds of the model on the validation pairs, written to
    ``run_dir/calibration.json`` (read by ``tripletkit verify``).

    A validation set without both kinds of pair (one class only, or no class with two items)
    cannot calibrate anything: a warning says so and None is returned, no file is written, and
    the trained run is kept (``tripletkit verify`` then needs ``--threshold``).
    """
    from tripletkit.evaluation import evaluate_verification_from_labels

    _, counts = np.unique(np.asarray(validation.labels), return_counts=True)
    if len(counts) < 2 or counts.max() < 2:
        warnings.warn(
            f"no calibration.json: the validation set ({len(validation)} items, {len(counts)} "
            "classes) needs at least 2 classes and a class with 2 items to give verification "
            "pairs of both kinds; give data.val_path or more classes, or pass --threshold to "
            "tripletkit verify",
            stacklevel=2,
        )
        return None
    loader = torch.utils.data.DataLoader(
        validation, batch_size=512, shuffle=False, collate_fn=collate_items
    )
    embeddings = model.embed(loader)
    result = evaluate_verification_from_labels(
        embeddings, np.asarray(validation.labels), distance="cosine", far_targets=CALIBRATION_FARS
    )
    impostor_pairs = int(result.metrics["num_different"])
    # Doddington's rule of 30: a false accept rate is measured to within about ±30% once 30
    # false accepts are seen, i.e. from 30 / FAR impostor pairs on.
    unreliable = [far for far in CALIBRATION_FARS if impostor_pairs * far < 30]
    if unreliable:
        warnings.warn(
            f"calibration.json: the validation set gives {impostor_pairs:,} different-class pairs, "
            f"too few to measure FAR {', '.join(f'{far:g}' for far in unreliable)} (at least "
            f"{30 / min(unreliable):,.0f} for FAR {min(unreliable):g}, to see 30 false "
            'accepts): those thresholds are marked "reliable": false; give a larger '
            "data.val_path for them",
            stacklevel=2,
        )
    calibration = {
        "distance": "cosine",
        "source": "validation set (pairs from its labels)",
        "impostor_pairs": impostor_pairs,
        "thresholds": {
            repr(float(far)): {
                "value": t.value,
                "far": t.far,
                "tar": t.tar,
                "rule": t.rule,
                "reliable": far not in unreliable,
            }
            for far, t in result.thresholds.items()
        },
        "metrics": result.metrics,
    }
    atomic_write_text(Path(run_dir) / "calibration.json", json.dumps(calibration, indent=2) + "\n")
    return calibration


#: What a run writes into its directory (``train.overwrite`` removes these and nothing else).
RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "test.json",
    "calibration.json",
    "report.html",
    "checkpoints",
    "model",
    "model_initial",
    "tensorboard",
)


def run_dir_traces(run_dir: str | Path) -> list[str]:
    """What in ``run_dir`` shows a run was trained there (a ``config.json`` alone may be
    tune-margin's best configuration, waiting to be trained there)."""
    return [n for n in ("metrics.jsonl", "checkpoints", "model") if (Path(run_dir) / n).exists()]


def _claim_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to start a new run over a previous one: a run that fails part-way would leave a
    mix of both (its config, the old model). With ``overwrite``, the old run's files go first."""
    traces = run_dir_traces(run_dir)
    if not traces:
        return
    if not overwrite:
        raise ValueError(
            f"run directory {str(run_dir)!r} already holds a run ({', '.join(traces)}); --resume "
            "continues it, a new --run-dir starts another, --set train.overwrite=true replaces it"
        )
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for path in run_dir.glob("report-*.png"):
        path.unlink()


def train(config: RunConfig, run_dir: str | Path | None = None, resume: bool = False) -> RunOutcome:
    """Build, train and test the run described by ``config`` (see the module docstring).

    Returns the :class:`RunOutcome`; the run directory holds ``config.json``, ``metrics.jsonl``,
    ``checkpoints/``, ``model/``, ``summary.json`` and (with ``train.report``) ``report.html``.
    """
    from tripletkit.evaluation import retrieval_metrics

    run_dir = Path(run_dir or config.train.run_dir or default_run_dir())
    if not resume:
        if int(os.environ.get("RANK", "0")) == 0:
            _claim_run_dir(run_dir, config.train.overwrite)
        # The run directory's config.json must find the data from anywhere (report, resume).
        for key in ("path", "val_path", "labels_path", "val_labels_path"):
            value = getattr(config.data, key)
            if value is not None and Path(value).exists():
                setattr(config.data, key, str(Path(value).resolve()))
    # Seed before building: the model's initial weights are part of what the seed fixes.
    seed_everything(config.train.seed)
    built = build_run(config)

    def evaluate(embeddings, labels):
        return retrieval_metrics(embeddings, labels)

    test_file = run_dir / "test.json"
    test_before: dict[str, Any] = {}
    # Under torchrun only rank 0 measures the test set and writes the run directory's files.
    is_main = int(os.environ.get("RANK", "0")) == 0
    if built.test is not None and is_main:
        if resume and test_file.exists():
            try:
                test_before = json.loads(test_file.read_text()).get("before", {})
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
                raise ValueError(f"{str(test_file)!r} could not be read: {err}") from None
        elif not resume:
            test_before = _embed_and_evaluate(built.model, built.test, evaluate)
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(test_file, json.dumps({"before": test_before}, indent=2) + "\n")
    trainer = Trainer(built.model, built.loss_fn, built.data, config, run_dir, evaluate)
    result = trainer.fit(resume=resume)
    if not is_main:
        return RunOutcome(result, {}, {}, None, is_main=False)
    test_after: dict[str, Any] = {}
    if built.test is not None:
        test_after = _embed_and_evaluate(built.model, built.test, evaluate)
        atomic_write_text(
            test_file, json.dumps({"before": test_before, "after": test_after}, indent=2) + "\n"
        )
    if built.data.validation is not None:
        calibrate(built.model, built.data.validation, run_dir)
    report = None
    if config.train.report:
        try:
            from tripletkit.report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            report = write_report(run_dir)
    return RunOutcome(result, test_before, test_after, report)
