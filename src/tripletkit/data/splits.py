"""Class-disjoint splits: train on some classes, evaluate retrieval on classes never seen.

This is how metric learning is evaluated (CUB-200: train on classes 1-100, test on 101-200;
Stanford Online Products likewise): an embedding must generalise to new classes, so the test
classes are disjoint from the training classes. :func:`class_disjoint_split` does it for any
labels; the standard splits used by the demo and the benchmarks are fixed here, once:

* Fashion-MNIST (:func:`fashion_mnist_retrieval_split`): train on the *train* images of classes
  0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat; 30,000 images), evaluate on the *test* images
  of classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot; 5,000 images).
* digits (:func:`digits_retrieval_split`): train on classes 0-4, evaluate on classes 5-9 (all of
  scikit-learn's 1,797 images).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from tripletkit.data.bundled import LabelledImages, load_digits, load_fashion_mnist

__all__ = [
    "DIGITS_EVAL_CLASSES",
    "DIGITS_TRAIN_CLASSES",
    "FASHION_MNIST_EVAL_CLASSES",
    "FASHION_MNIST_TRAIN_CLASSES",
    "LabelledSubset",
    "RetrievalSplit",
    "Split",
    "class_disjoint_split",
    "digits_retrieval_split",
    "fashion_mnist_retrieval_split",
]

FASHION_MNIST_TRAIN_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4)
FASHION_MNIST_EVAL_CLASSES: tuple[int, ...] = (5, 6, 7, 8, 9)
DIGITS_TRAIN_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4)
DIGITS_EVAL_CLASSES: tuple[int, ...] = (5, 6, 7, 8, 9)


class Split(NamedTuple):
    """Indices of the two sides of a split, each ascending ``(n,)`` int64."""

    train: np.ndarray
    test: np.ndarray


class RetrievalSplit(NamedTuple):
    """Training images and evaluation images of disjoint classes (labels keep their class ids)."""

    train: LabelledImages
    evaluation: LabelledImages


class LabelledSubset(torch.utils.data.Subset):
    """The items ``indices`` of a labelled dataset, with their ``labels`` (what the P×K sampler
    reads), passing :meth:`set_epoch` on to the dataset so that its seeded augmentation changes
    with the epoch (a plain ``Subset`` would keep epoch 0's augmentation for every epoch).

    >>> from tripletkit.data import TextDataset
    >>> part = LabelledSubset(TextDataset(["a", "b", "c", "d"], [0, 0, 1, 1]), [1, 2])
    >>> part[0], part.labels.tolist()
    (('b', 0), [0, 1])
    """

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        indices = [int(i) for i in indices]
        super().__init__(dataset, indices)
        self.labels = np.asarray(dataset.labels)[indices]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def class_disjoint_split(
    labels: Sequence[Any] | np.ndarray | torch.Tensor,
    train_classes: Sequence[Any] | int,
    *,
    seed: int = 0,
) -> Split:
    """Split item indices so that no class is on both sides.

    Args:
        labels: ``(N,)`` labels (any hashable values).
        train_classes: the label values that go to ``train`` (all others go to ``test``), or a
            number of classes to draw at random with ``seed``.
        seed: used only when ``train_classes`` is a number.

    Returns:
        :class:`Split` ``(train, test)`` of ascending indices.

    >>> class_disjoint_split([0, 1, 2, 1, 0, 2], train_classes=[0, 2])
    Split(train=array([0, 2, 4, 5]), test=array([1, 3]))
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    values = np.asarray(labels)
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError(f"labels has shape {values.shape}; expected a non-empty 1-D array")
    present = np.unique(values)
    if isinstance(train_classes, (int, np.integer)) and not isinstance(train_classes, bool):
        if not 0 < train_classes < present.shape[0]:
            raise ValueError(
                f"train_classes={train_classes} but there are {present.shape[0]} classes; expected "
                f"a number in 1..{present.shape[0] - 1} so that both sides have classes"
            )
        chosen = np.random.default_rng(seed).choice(present, size=int(train_classes), replace=False)
    else:
        chosen = np.asarray(list(train_classes), dtype=values.dtype)
        unknown = np.setdiff1d(chosen, present)
        if unknown.size:
            raise ValueError(
                f"train_classes {unknown.tolist()} do not occur in labels (classes present: "
                f"{present.tolist()[:20]}{' ...' if present.shape[0] > 20 else ''})"
            )
    in_train = np.isin(values, chosen)
    if in_train.all() or not in_train.any():
        raise ValueError(
            f"train_classes {np.asarray(chosen).tolist()} leave one side empty; both sides need "
            "at least one class"
        )
    return Split(np.flatnonzero(in_train), np.flatnonzero(~in_train))


def _take(data: LabelledImages, index: np.ndarray) -> LabelledImages:
    return LabelledImages(data.images[index], data.labels[index], data.classes)


def fashion_mnist_retrieval_split(root: str | os.PathLike[str] | None = None) -> RetrievalSplit:
    """The standard Fashion-MNIST split: train on train-set classes 0-4, evaluate on test-set 5-9.

    Returns 30,000 training images (labels 0-4) and 5,000 evaluation images (labels 5-9).
    Needs the Debian package ``dataset-fashion-mnist`` (see :func:`load_fashion_mnist`).

    >>> split = fashion_mnist_retrieval_split()  # doctest: +SKIP
    >>> split.train.images.shape, split.evaluation.images.shape  # doctest: +SKIP
    ((30000, 28, 28), (5000, 28, 28))
    """
    train = load_fashion_mnist("train", root)
    test = load_fashion_mnist("test", root)
    train_side = class_disjoint_split(train.labels, FASHION_MNIST_TRAIN_CLASSES).train
    test_side = class_disjoint_split(test.labels, FASHION_MNIST_TRAIN_CLASSES).test
    return RetrievalSplit(_take(train, train_side), _take(test, test_side))


def digits_retrieval_split() -> RetrievalSplit:
    """The standard digits split: classes 0-4 for training, 5-9 for evaluation.

    >>> split = digits_retrieval_split()
    >>> sorted(set(split.train.labels.tolist())), sorted(set(split.evaluation.labels.tolist()))
    ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    """
    digits = load_digits()
    train_side, test_side = class_disjoint_split(digits.labels, DIGITS_TRAIN_CLASSES)
    return RetrievalSplit(_take(digits, train_side), _take(digits, test_side))
