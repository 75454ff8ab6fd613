"""Real image data that ships inside packages, loaded fully offline.

* :func:`load_digits`: scikit-learn's 1,797 handwritten digits, 8×8, 10 classes (a pip dependency).
* :func:`load_fashion_mnist`: 70,000 Zalando product photos, 28×28 grayscale, 10 classes, from
  the Debian package ``dataset-fashion-mnist`` (original IDX files in
  ``/usr/share/datasets/fashion-mnist``). When it is missing, the error gives the install command.

Both return plain numpy arrays: images ``(N, H, W)`` uint8 (0..255), labels ``(N,)`` int64, and
the class names. The text data (WordNet) is in :mod:`tripletkit.data.wordnet`.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from tripletkit.validation import check_choice

__all__ = [
    "DIGITS_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_INSTALL",
    "DataNotInstalledError",
    "LabelledImages",
    "fashion_mnist_available",
    "load_digits",
    "load_fashion_mnist",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_INSTALL = "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


class DataNotInstalledError(FileNotFoundError):
    """A bundled data set's package is not installed; the message says how to install it."""


class LabelledImages(NamedTuple):
    """Images with labels: ``images, labels, classes = load_...()``.

    Attributes:
        images: ``(N, H, W)`` uint8, 0..255.
        labels: ``(N,)`` int64 class ids.
        classes: the class names; ``classes[labels[i]]`` names image ``i``.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]


def load_digits() -> LabelledImages:
    """scikit-learn's handwritten digits: 1,797 images 8×8, classes 0-9 (about 180 each).

    The original pixel values 0..16 are rescaled to 0..255 (``round(v * 255 / 16)``), so the same
    transforms as for any uint8 image apply.

    >>> images, labels, classes = load_digits()
    >>> images.shape, images.dtype, images.max(), labels.dtype, classes[3]
    ((1797, 8, 8), dtype('uint8'), np.uint8(255), dtype('int64'), '3')
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return LabelledImages(images, bunch.target.astype(np.int64), DIGITS_CLASSES)


def _fashion_mnist_dir(root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        return Path(root)
    return Path(os.environ.get("TRIPLETKIT_FASHION_MNIST_DIR", FASHION_MNIST_DIR))


def fashion_mnist_available(root: str | os.PathLike[str] | None = None) -> bool:
    """Whether the four Fashion-MNIST IDX files are present (in ``root`` or the default folder)."""
    folder = _fashion_mnist_dir(root)
    return all((folder / name).is_file() for split in ("train", "t10k") for name in _files(split))


def _files(prefix: str) -> tuple[str, str]:
    return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """An IDX file: a big-endian header (magic, then one count per dimension), then uint8 data."""
    data = gzip.decompress(path.read_bytes())
    dims = len(item_shape) + 1
    header = np.frombuffer(data, dtype=">u4", count=1 + dims)
    if int(header[0]) != magic or tuple(int(d) for d in header[2:]) != item_shape:
        raise ValueError(
            f"{path} is not a Fashion-MNIST IDX file (header {header.tolist()}; expected magic "
            f"{magic} and items of shape {item_shape}); reinstall with: {FASHION_MNIST_INSTALL}"
        )
    count = int(header[1])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 * (1 + dims))
    if body.size != count * int(np.prod(item_shape)):
        raise ValueError(
            f"{path} is truncated: {body.size} bytes of data for {count} items; reinstall with: "
            f"{FASHION_MNIST_INSTALL}"
        )
    return body.reshape(count, *item_shape)


@functools.lru_cache(maxsize=4)
def _fashion_mnist_arrays(folder: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = _files(prefix)
    images = _read_idx(Path(folder) / images_file, _IMAGES_MAGIC, (28, 28))
    labels = _read_idx(Path(folder) / labels_file, _LABELS_MAGIC, ()).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Fashion-MNIST {prefix}: {images.shape[0]} images but {labels.shape[0]} labels"
        )
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_fashion_mnist(
    split: Literal["train", "test"] = "train", root: str | os.PathLike[str] | None = None
) -> LabelledImages:
    """Fashion-MNIST: 60,000 train / 10,000 test images, 28×28 grayscale, 10 balanced classes.

    Read from the IDX files of the Debian package ``dataset-fashion-mnist`` (MIT licence), or from
    ``root`` / ``$TRIPLETKIT_FASHION_MNIST_DIR``. The decoded files are cached per process; each
    call returns fresh copies.

    Raises:
        DataNotInstalledError: the files are missing; the message gives the install command.

    >>> images, labels, classes = load_fashion_mnist("test")  # doctest: +SKIP
    >>> images.shape, labels[:3].tolist(), classes[labels[0]]  # doctest: +SKIP
    ((10000, 28, 28), [9, 2, 1], 'Ankle boot')
    """
    check_choice(split, ("train", "test"), "split")
    folder = _fashion_mnist_dir(root)
    prefix = "train" if split == "train" else "t10k"
    missing = [name for name in _files(prefix) if not (folder / name).is_file()]
    if missing:
        raise DataNotInstalledError(
            f"Fashion-MNIST is not installed: {', '.join(missing)} not found in {folder}. "
            f"Install the Debian package with: {FASHION_MNIST_INSTALL} "
            "(or set TRIPLETKIT_FASHION_MNIST_DIR to a folder holding the IDX .gz files)"
        )
    images, labels = _fashion_mnist_arrays(str(folder), prefix)
    return LabelledImages(images.copy(), labels.copy(), FASHION_MNIST_CLASSES)
