"""Using a trained model: load a run, open data the way training prepared it, embed it.

Shared by ``tripletkit embed``, ``evaluate``, ``verify``, ``index search`` and the report, so that
an image is resized and normalised exactly as during training (the run's ``config.json``) and a
text goes through the model's own tokenizer.

Data specifications (``--data``):

* ``fashion-mnist`` / ``fashion-mnist:test`` / ``fashion-mnist:train``, ``digits``: bundled data
  (``:test`` of Fashion-MNIST is the standard evaluation set, classes 5-9);
* a folder with one sub-folder per class (images);
* a ``.csv`` / ``.tsv`` / ``.jsonl`` / ``.parquet`` manifest with a ``path`` or ``text`` column
  and, optionally, a ``label`` column (evaluation needs labels; embedding and a hubness bank do
  not);
* a ``.npy`` feature matrix (labels from a ``label`` column for Parquet features).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tripletkit.data import (
    ImageArrayDataset,
    ImageFolderDataset,
    collate_items,
    encode_labels,
    load_features,
    manifest_dataset,
)
from tripletkit.data.bundled import load_digits, load_fashion_mnist
from tripletkit.data.splits import FASHION_MNIST_TRAIN_CLASSES, class_disjoint_split
from tripletkit.training.config import RunConfig, resolve_config

__all__ = [
    "Embedded",
    "LoadedRun",
    "embed_dataset",
    "embed_inputs",
    "label_values",
    "load_run",
    "open_dataset",
    "shared_label_ids",
]


@dataclass
class LoadedRun:
    """A trained model and how its inputs were prepared."""

    model: torch.nn.Module
    config: RunConfig
    directory: Path

    @property
    def kind(self) -> str:
        from tripletkit.models.input_spec import input_kind

        return input_kind(self.model)

    @property
    def image_mode(self) -> str:
        """The Pillow mode image files are decoded in for this model: ``"L"`` for a one-channel
        model (e.g. one trained on Fashion-MNIST), else ``"RGB"``."""
        return "L" if self.model.input_spec.channels == 1 else "RGB"

    def image_transform(self):
        from tripletkit.data import transforms

        spec = self.model.input_spec
        size = self.config.data.image_size or (spec.image_size[0] if spec.image_size else None)
        steps: list[Any] = [transforms.Resize(size)] if size else []
        steps += [transforms.ToFloat(), transforms.Normalize(spec.mean, spec.std)]
        return transforms.Compose(steps)


@dataclass
class Embedded:
    """Embeddings of a dataset with what identifies each row."""

    embeddings: torch.Tensor
    labels: np.ndarray | None
    sources: list[str]


def load_run(path: str | Path) -> LoadedRun:
    """Load the model of a run directory (``RUN_DIR/model``) or of a saved model directory."""
    from tripletkit.models import load_model

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no run or model directory at {str(path)!r}")
    model_dir = path / "model" if (path / "model").is_dir() else path
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is neither a run directory (with model/) nor a saved model "
            "(model.safetensors + config.json); did the training run finish?"
        )
    model = load_model(model_dir)
    model.eval()
    config_file = path / "config.json" if model_dir != path else None
    if config_file is not None and config_file.is_file():
        config = resolve_config([config_file])
    else:
        config = RunConfig()
    return LoadedRun(model, config, path)


def _bundled(name: str, split: str | None, run: LoadedRun):
    transform = run.image_transform()
    if name == "digits":
        data = load_digits()
        return ImageArrayDataset(data.images, data.labels, transform, classes=data.classes), [
            f"digits[{i}]" for i in range(len(data.labels))
        ]
    split = split or "test"
    if split not in ("train", "test", "test-all"):
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; use train, test or test-all")
    data = load_fashion_mnist("train" if split == "train" else "test")
    index = np.arange(len(data.labels))
    if split == "test":  # the standard evaluation set: test images of the held-out classes
        index = class_disjoint_split(data.labels, FASHION_MNIST_TRAIN_CLASSES).test
    dataset = ImageArrayDataset(
        data.images[index], data.labels[index], transform, classes=data.classes
    )
    return dataset, [f"fashion-mnist:{split}[{i}]" for i in index.tolist()]


def _refuse_unless(run: LoadedRun, spec: str, holds: str) -> None:
    """One clear error when ``--data`` holds what the run's model does not take."""
    if holds != f"{run.kind}s":
        raise ValueError(
            f"--data {spec!r} holds {holds}, but the model of {str(run.directory)!r} takes "
            f"{run.kind}s"
        )


def open_dataset(spec: str, run: LoadedRun) -> tuple[torch.utils.data.Dataset, list[str]]:
    """The dataset named by ``spec`` (see the module docstring), prepared for ``run``'s model,
    and a source string per item (file path, text or bundled index)."""
    name, _, split = spec.partition(":")
    if name in ("fashion-mnist", "digits"):
        return _bundled(name, split or None, run)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"--data {spec!r}: no such file or folder (or use fashion-mnist[:split] / digits)"
        )
    if path.is_dir():
        _refuse_unless(run, spec, "images")
        dataset = ImageFolderDataset(path, run.image_transform(), mode=run.image_mode)
        return dataset, [str(p) for p in getattr(dataset, "paths", [])] or [
            str(i) for i in range(len(dataset))
        ]
    if path.suffix == ".npy":
        _refuse_unless(run, spec, "vectors")
    if path.suffix == ".npy" or (path.suffix == ".parquet" and run.kind == "vector"):
        # Labels optional: features to embed need none (evaluation says when it needs them).
        dataset = load_features(path, require_labels=False)
        return dataset, [f"{path.name}[{i}]" for i in range(len(dataset))]
    image = run.kind == "image"
    if run.kind == "vector":
        _refuse_unless(run, spec, "images or texts")
    # Labels are optional here: a corpus to embed or a hubness bank needs none (evaluation,
    # which does, says so when they are missing); nor need two items share one (a corpus of
    # documents, each its own id, is what a text query set retrieves from).
    dataset = manifest_dataset(
        path,
        run.image_transform() if image else None,
        allow_outside_root=True,
        mode=run.image_mode if image else "RGB",
        require_labels=False,
        require_positives=False,
    )
    _refuse_unless(run, spec, "texts" if getattr(dataset, "texts", None) is not None else "images")
    sources = getattr(dataset, "texts", None) or getattr(dataset, "paths", None)
    return dataset, [str(s) for s in sources] if sources is not None else [
        str(i) for i in range(len(dataset))
    ]


def embed_dataset(
    run: LoadedRun,
    dataset: torch.utils.data.Dataset,
    sources: list[str],
    batch_size: int = 256,
    progress: bool = False,
) -> Embedded:
    """Embed every item of ``dataset`` (no gradients, eval mode) with a progress bar if asked."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_items
    )
    embeddings = run.model.embed(loader, progress=progress)
    labels = getattr(dataset, "labels", None)
    return Embedded(embeddings, None if labels is None else np.asarray(labels), sources)


def label_values(dataset: Any, labels: np.ndarray) -> list[str]:
    """The original label of each item (``dataset.classes[id]``) as a string: label ids are
    numbered per dataset (sorted class names), so two datasets' ids only compare through their
    values, and as strings, since a folder's class ``"1"`` is a CSV's label ``1``."""
    classes = getattr(dataset, "classes", None)
    if classes is None:
        return [str(i) for i in labels.tolist()]
    return [str(classes[i]) for i in labels.tolist()]


def shared_label_ids(
    first: Any, first_labels: np.ndarray, second: Any, second_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Label ids of two datasets (queries and gallery, say) on one numbering, so that equal ids
    mean the same class in both; each dataset alone numbers its own classes from 0."""
    values = label_values(first, first_labels) + label_values(second, second_labels)
    ids = encode_labels(values).ids
    return ids[: len(first_labels)], ids[len(first_labels) :]


def embed_inputs(run: LoadedRun, inputs: list[str]) -> torch.Tensor:
    """Embed a few inputs given on the command line: image paths, or texts for text models."""
    if run.kind == "text":
        return run.model.embed(list(inputs))
    if run.kind != "image":
        raise ValueError("this model takes feature vectors; pass them as a .npy file with --data")
    from tripletkit.data.images import decode_image

    transform = run.image_transform()
    images = []
    for item in inputs:
        if not Path(item).is_file():
            raise FileNotFoundError(f"no image file {item!r}")
        image = decode_image(item, mode=run.image_mode)
        images.append(transform(image))
    return run.model.embed(torch.stack(images))
