"""Datasets over data already in memory: image arrays, texts and numeric feature vectors.

All three return ``(item, label)`` with ``label`` an int class id, and expose ``labels`` (``(N,)``
int64 numpy) and ``classes`` without touching the items, which is what :class:`PKSampler` needs.
:class:`ImageArrayDataset` and :class:`FeatureDataset` also implement ``__getitems__``, which
:class:`torch.utils.data.DataLoader` calls with a whole batch of indices: one indexing operation
and one vectorised transform per batch instead of one per item.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tripletkit.data.labels import encode_labels, require_positive_pair
from tripletkit.data.skipped import ReportsSkipped
from tripletkit.data.transforms import (
    apply_transform,
    augmentation_generator,
    draws_randomness,
    supports_batches,
)

if TYPE_CHECKING:
    from tripletkit.data.manifests import UnlabelledDataset

__all__ = [
    "FeatureDataset",
    "ImageArrayDataset",
    "ItemBatch",
    "TextDataset",
    "collate_items",
    "load_features",
]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run a batch fetch on one intra-op thread, then restore the setting.

    The work per batch (indexing, uint8 -> float, crops of 160 small images) is too small to gain
    from a second thread, and with two threads every op is an OpenMP parallel region that waits
    for the other thread: on two busy cores that wait measured 10-30 ms per op instead of 0.1 ms.
    Switching the thread count costs microseconds. DataLoader workers already run on one thread.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _labels_and_classes(
    labels: Any, n: int, classes: Sequence[Any] | None, source: str
) -> tuple[np.ndarray, list[Any]]:
    """Int64 ids and class names: ids checked against ``classes`` if given, else encoded."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if len(labels) != n:
        raise ValueError(
            f"{source}: {n} items but {len(labels)} labels; expected one label per item"
        )
    if classes is None:
        encoded = encode_labels(labels, name=f"labels of {source}")
        return encoded.ids, encoded.classes
    ids = np.asarray(labels)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"{source}: with classes given, labels must be integer ids 0..{len(classes) - 1}; "
            f"got dtype {ids.dtype}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= len(classes)):
        raise ValueError(
            f"{source}: labels range {ids.min()}..{ids.max()} but there are {len(classes)} classes; "
            f"expected ids in 0..{len(classes) - 1}"
        )
    return ids.astype(np.int64), list(classes)


class ItemBatch(Sequence):
    """A fetched batch held as one tensor of items and one of labels, which is what
    :func:`collate_items` returns without the copy of re-stacking the items (about 0.5 ms a
    batch of 160 images). Item ``i`` is ``(items[i], int(labels[i]))``, so torch's default
    collation handles it as any list of ``(item, label)`` pairs.

    >>> batch = ItemBatch(torch.zeros(3, 2), torch.tensor([4, 5, 6]))
    >>> len(batch), batch[1][1]
    (3, 5)
    >>> x, y = collate_items(batch)
    >>> x.shape, y.tolist()
    (torch.Size([3, 2]), [4, 5, 6])
    """

    def __init__(self, items: torch.Tensor, labels: torch.Tensor) -> None:
        self.items = items
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.items[index], int(self.labels[index])


def collate_items(batch: Sequence[Any]) -> Any:
    """A DataLoader ``collate_fn``: an :class:`ItemBatch` as ``(items, labels)`` tensors
    (contiguous, exactly what torch's default collation would stack), anything else through
    :func:`torch.utils.data.default_collate`."""
    if isinstance(batch, ItemBatch):
        return batch.items.contiguous(), batch.labels
    return torch.utils.data.default_collate(batch)


class _SeededItems(ReportsSkipped, torch.utils.data.Dataset):
    """Shared by the in-memory datasets: labels, classes, epoch and the augmentation seed."""

    labels: np.ndarray
    classes: list[Any]
    seed: int | None
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch mixed into the augmentation seed (with ``seed`` set)."""
        self.epoch = int(epoch)

    def _generator(self, *indices: int) -> torch.Generator | None:
        # Seeding a generator from every index of a batch costs about 0.4 ms for 160 items: none
        # for transforms that draw no random numbers.
        if self.seed is None or not draws_randomness(getattr(self, "transform", None)):
            return None
        return augmentation_generator(self.seed, self.epoch, *indices)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class ImageArrayDataset(_SeededItems):
    """Images held in one uint8 array: ``dataset[i] -> (transform(image_i), label_i)``.

    Args:
        images: ``(N, H, W)`` (grayscale) or ``(N, C, H, W)`` uint8 array or tensor; with
            ``channels_last=True``, ``(N, H, W, C)``. Not copied when already uint8.
        labels: ``N`` labels: ids ``0..len(classes)-1`` when ``classes`` is given, else any
            labels (mapped to sorted ids).
        transform: a :mod:`~tripletkit.data.transforms` callable; without one, items are the
            ``(C, H, W)`` uint8 images.
        classes: the class names, when ``labels`` are already ids.
        seed: seed the augmentation per ``(seed, epoch, index)`` (per batch under
            ``__getitems__``); None uses torch's global generator.
        require_positives: raise when no two items share a label.

    Example:
        >>> from tripletkit.data.transforms import ToFloat
        >>> images = np.zeros((6, 28, 28), dtype=np.uint8)
        >>> dataset = ImageArrayDataset(images, [0, 0, 1, 1, 2, 2], transform=ToFloat())
        >>> image, label = dataset[3]
        >>> image.shape, image.dtype, label
        (torch.Size([1, 28, 28]), torch.float32, 1)
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: Sequence[Any] | np.ndarray | torch.Tensor,
        transform: Callable[..., torch.Tensor] | None = None,
        *,
        classes: Sequence[Any] | None = None,
        channels_last: bool = False,
        seed: int | None = None,
        require_positives: bool = True,
    ) -> None:
        tensor = torch.as_tensor(images)
        if tensor.dtype != torch.uint8:
            raise ValueError(
                f"images have dtype {tensor.dtype}; expected uint8 0..255 (scale and convert "
                "float images first)"
            )
        if channels_last and tensor.dim() == 4:
            tensor = tensor.permute(0, 3, 1, 2)
        if tensor.dim() == 3:
            tensor = tensor.unsqueeze(1)
        if tensor.dim() != 4 or tensor.shape[0] == 0:
            raise ValueError(
                f"images have shape {tuple(torch.as_tensor(images).shape)}; expected a non-empty "
                "(N, H, W) or (N, C, H, W) array ((N, H, W, C) with channels_last=True)"
            )
        self.images = tensor
        self.labels, self.classes = _labels_and_classes(
            labels, tensor.shape[0], classes, "image array"
        )
        if require_positives:
            require_positive_pair(self.labels, "image array", "label")
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self._labels_tensor = torch.from_numpy(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = apply_transform(self.transform, image, self._generator(index))
        return image, int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> Sequence[tuple[torch.Tensor, int]]:
        if self.transform is not None and not supports_batches(self.transform):
            return [self[i] for i in indices]
        index = torch.as_tensor(indices, dtype=torch.int64)
        with _one_thread():
            batch = self.images[index]
            if self.transform is not None:
                batch = self.transform(batch, generator=self._generator(*index.tolist()))
        return ItemBatch(batch, self._labels_tensor[index])


class TextDataset(_SeededItems):
    """Texts with labels: ``dataset[i] -> (text_i, label_i)``.

    >>> dataset = TextDataset(["a red shoe", "a blue shoe", "a hat"], ["shoe", "shoe", "hat"])
    >>> dataset[1], dataset.classes
    (('a blue shoe', 1), ['hat', 'shoe'])
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[Any] | np.ndarray | torch.Tensor,
        *,
        classes: Sequence[Any] | None = None,
        require_positives: bool = True,
    ) -> None:
        self.texts = [str(t) for t in texts]
        if not self.texts:
            raise ValueError("texts is empty; expected at least two labelled texts")
        self.labels, self.classes = _labels_and_classes(labels, len(self.texts), classes, "texts")
        if require_positives:
            require_positive_pair(self.labels, "texts", "label")
        self.seed = None
        self.epoch = 0

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.texts[index], int(self.labels[index])


class FeatureDataset(_SeededItems):
    """Numeric feature vectors: ``dataset[i] -> (features_i float32 (D,), label_i)``.

    Args:
        features: ``(N, D)`` numbers; NaN or Inf rows are an error naming the rows.
        labels: ``N`` labels (ids with ``classes``, or any labels).
        classes: the class names, when ``labels`` are already ids.
        source: what to call the features in messages (a file name).

    >>> dataset = FeatureDataset(np.eye(4), [1, 1, 0, 0])
    >>> dataset[0]
    (tensor([1., 0., 0., 0.]), 1)
    """

    def __init__(
        self,
        features: np.ndarray | torch.Tensor,
        labels: Sequence[Any] | np.ndarray | torch.Tensor,
        *,
        classes: Sequence[Any] | None = None,
        source: str = "features",
        require_positives: bool = True,
    ) -> None:
        array = torch.as_tensor(
            np.asarray(features) if not isinstance(features, torch.Tensor) else features
        )
        if array.dim() != 2 or array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(
                f"{source} has shape {tuple(array.shape)}; expected a non-empty 2-D array (N, D)"
            )
        if (
            array.dtype == torch.bool
            or array.is_complex()
            or not (
                array.is_floating_point()
                or array.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
            )
        ):
            raise ValueError(f"{source} has dtype {array.dtype}; expected real numbers")
        array = array.to(torch.float32)
        finite = torch.isfinite(array).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            shown = ", ".join(str(i) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise ValueError(
                f"{source}: {len(bad)} of {array.shape[0]} rows contain NaN or Inf (rows {shown}); "
                "expected finite feature vectors"
            )
        self.features = array
        self.labels, self.classes = _labels_and_classes(labels, array.shape[0], classes, source)
        self._labels_tensor = torch.from_numpy(self.labels)
        if require_positives:
            require_positive_pair(self.labels, source, "label")
        self.seed = None
        self.epoch = 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.features[index], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> Sequence[tuple[torch.Tensor, int]]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        with _one_thread():
            rows = self.features[index]
        return ItemBatch(rows, self._labels_tensor[index])


def _unlabelled(dataset: FeatureDataset) -> UnlabelledDataset:
    from tripletkit.data.manifests import UnlabelledDataset

    return UnlabelledDataset(dataset)


def load_features(
    path: str | os.PathLike[str],
    labels: str | os.PathLike[str] | Sequence[Any] | np.ndarray | None = None,
    *,
    label_column: str = "label",
    feature_columns: Sequence[str] | None = None,
    require_labels: bool = True,
) -> FeatureDataset | UnlabelledDataset:
    """Feature vectors from a ``.npy`` file (labels beside it) or a Parquet table.

    * ``.npy``: an ``(N, D)`` array; ``labels`` is a ``.npy`` file of ``N`` labels or the labels
      themselves.
    * ``.parquet``: ``label_column`` holds the labels; the features are ``feature_columns``, or
      else every other column, each either a number or a list of numbers (one vector column, as
      written by ``pyarrow`` / pandas from arrays).

    With ``require_labels=False``, features without labels (a ``.npy`` and no ``labels``, a
    table without ``label_column``) come back as an
    :class:`~tripletkit.data.manifests.UnlabelledDataset` (to embed or index) instead of an error.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> np.save(folder / "x.npy", np.ones((4, 3)))
    >>> np.save(folder / "y.npy", np.array([0, 0, 1, 1]))
    >>> load_features(folder / "x.npy", folder / "y.npy").features.shape
    torch.Size([4, 3])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        features = np.load(path, allow_pickle=False)
        if labels is None and not require_labels:
            return _unlabelled(FeatureDataset(features, np.zeros(len(features)), source=str(path)))
        if labels is None:
            raise ValueError(
                f"{path} holds only features; pass labels (a .npy file or a sequence; in a "
                "training config: data.labels_path / data.val_labels_path)"
            )
        if isinstance(labels, (str, os.PathLike)):
            label_path = Path(labels)
            if not label_path.is_file():
                raise FileNotFoundError(f"label file {label_path} does not exist")
            labels = np.load(label_path, allow_pickle=False)
        return FeatureDataset(features, labels, source=str(path))
    if suffix == ".parquet":
        from tripletkit.data.manifests import read_manifest

        table = read_manifest(path)
        labelled = require_labels or label_column in table.columns
        if labelled:
            table.require(
                [label_column], f"a '{label_column}' column of labels and feature columns"
            )
        names = (
            list(feature_columns)
            if feature_columns is not None
            else [c for c in table.columns if c != label_column]
        )
        table.require(names, "numeric feature columns")
        if not names:
            raise ValueError(f"{path} has no feature columns besides '{label_column}'")
        try:
            parts = [
                np.asarray(table.columns[c], dtype=np.float64).reshape(table.num_rows, -1)
                for c in names
            ]
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{path}: feature columns {names} must hold numbers or equal-length lists of "
                f"numbers ({error})"
            ) from error
        features = np.concatenate(parts, axis=1)
        if not labelled:
            return _unlabelled(FeatureDataset(features, np.zeros(len(features)), source=str(path)))
        label_values = table.columns[label_column]
        table.require_labels(label_column)
        return FeatureDataset(features, label_values, source=str(path))
    raise ValueError(f"feature file {path} has suffix {suffix!r}; expected .npy or .parquet")
