"""Image files: decoding with Pillow, a dataset over labelled files, and the image-folder layout.

:func:`decode_image` turns a jpg/png/webp file into a ``(C, H, W)`` uint8 tensor (EXIF rotation
applied). :class:`ImageFileDataset` serves labelled files, checking them when it is built and
skipping (and counting) unreadable ones; :class:`ImageFolderDataset` finds the files of the
common ``root/<class name>/<image>`` layout.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from tripletkit.data.labels import encode_labels, require_positive_pair
from tripletkit.data.skipped import ReportsSkipped, SkippedItem, SkippedItemsWarning, SkipRecord
from tripletkit.data.transforms import apply_transform, augmentation_generator
from tripletkit.validation import check_choice

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFileDataset",
    "ImageFolderDataset",
    "decode_image",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")

# What Pillow raises for a missing, unreadable, unknown, truncated or malicious file.
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

Check = Literal["none", "header", "full"]


def decode_image(path: str | os.PathLike[str], mode: str | None = "RGB") -> torch.Tensor:
    """Read an image file as a ``(C, H, W)`` uint8 tensor.

    Args:
        path: a file Pillow can read (jpg, png, webp, ...).
        mode: Pillow mode to convert to: ``"RGB"`` (C=3), ``"L"`` (grayscale, C=1), or None to
            keep the file's own mode.

    Raises:
        OSError / ValueError: the file is missing, not an image, or corrupt.

    >>> import tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "red.png")
    >>> Image.new("RGB", (5, 4), (255, 0, 0)).save(path)
    >>> image = decode_image(path)
    >>> image.shape, image.dtype, image[:, 0, 0].tolist()
    (torch.Size([3, 4, 5]), torch.uint8, [255, 0, 0])
    """
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        if mode is not None and image.mode != mode:
            image = image.convert(mode)
        array = np.array(image)  # a writable copy: torch tensors must be writable
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _check_file(path: str, check: Check, mode: str | None) -> str | None:
    """Why ``path`` cannot be used, or None when it passes ``check``."""
    try:
        if check == "full":
            decode_image(path, mode)
        else:
            with Image.open(path) as image:
                image.size  # noqa: B018 (the header is parsed lazily; touch it)
    except _READ_ERRORS as error:
        return str(error) or type(error).__name__
    return None


class ImageFileDataset(ReportsSkipped, torch.utils.data.Dataset):
    """Labelled image files, decoded on access: ``dataset[i] -> (image, label)``.

    ``image`` is ``transform(decode_image(path), generator=...)`` (a ``(C, H, W)`` uint8 tensor
    without a transform) and ``label`` an int class id; ``classes[label]`` is the original label.

    Files are checked when the dataset is built (``check``): unreadable ones are left out, listed
    in :attr:`skipped` and reported in one :class:`~tripletkit.data.SkippedItemsWarning`. A file
    that still fails when decoded is replaced by the next readable item of the same class and
    recorded too (also from DataLoader workers). ``strict=True`` raises instead.

    Args:
        paths: ``N`` image files.
        labels: ``N`` labels (strings or ints; mapped to ids ``0..C-1``, sorted).
        transform: a :mod:`~tripletkit.data.transforms` callable (or any ``f(tensor)``).
        mode: Pillow mode of the decoded images (``"RGB"``, ``"L"``, or None: as stored).
        check: at build time, ``"header"`` opens each file (fast, catches missing, empty and
            non-image files), ``"full"`` decodes each one, ``"none"`` skips the check.
        strict: raise ``ValueError`` on any unreadable file instead of skipping it.
        seed: seed the augmentation per ``(seed, epoch, index)``, so it is reproducible whatever
            the number of workers; None draws from torch's global generator.
        source: what to call the files in messages (a folder or manifest).
        require_positives: raise when no two items share a label (nothing to train on).

    Attributes:
        paths, labels (``(N,)`` int64 numpy), classes, skipped, num_skipped, epoch.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        labels: Sequence[Any] | np.ndarray,
        transform: Callable[..., torch.Tensor] | None = None,
        *,
        mode: str | None = "RGB",
        check: Check = "header",
        strict: bool = False,
        seed: int | None = None,
        source: str = "image files",
        require_positives: bool = True,
    ) -> None:
        check_choice(check, ("none", "header", "full"), "check")
        paths = [str(p) for p in paths]
        labels = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
        if len(paths) != len(labels):
            raise ValueError(
                f"{source}: {len(paths)} paths but {len(labels)} labels; expected one each"
            )
        skipped, kept = [], []
        for i, path in enumerate(paths):
            reason = _check_file(path, check, mode) if check != "none" else None
            if reason is None:
                kept.append(i)
            else:
                skipped.append(SkippedItem(path, reason))
        self.paths = [paths[i] for i in kept]
        self._record = SkipRecord(source, self.paths, strict=strict)
        self._record.report_build(skipped, total=len(paths))
        if not self.paths:
            raise ValueError(
                f"{source}: no readable images"
                + (f" ({len(skipped)} unreadable)" if skipped else "")
                + "; expected at least two images of some class"
            )
        encoded = encode_labels([labels[i] for i in kept], name=f"labels of {source}")
        self.labels, self.classes = encoded.ids, encoded.classes
        if require_positives:
            require_positive_pair(self.labels, source, "labels")
        self.transform = transform
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.source = source

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch mixed into the augmentation seed (with ``seed`` set)."""
        self.epoch = int(epoch)

    def load(self, index: int) -> torch.Tensor:
        """The decoded image of item ``index`` (or of its same-class replacement, if unreadable)."""
        if not self._record.failed(index):
            try:
                return decode_image(self.paths[index], self.mode)
            except _READ_ERRORS as error:
                self._record.fail_at_load(index, error)
        same_class = np.flatnonzero(self.labels == self.labels[index])
        start = int(np.searchsorted(same_class, index))
        for candidate in np.roll(same_class, -start - 1):
            if self._record.failed(int(candidate)):
                continue
            try:
                return decode_image(self.paths[int(candidate)], self.mode)
            except _READ_ERRORS as error:
                self._record.fail_at_load(int(candidate), error)
        raise ValueError(
            f"{self.source}: every image of class {self.classes[self.labels[index]]!r} failed to "
            "decode; see dataset.skipped"
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.load(index)
        if self.transform is not None:
            generator = (
                augmentation_generator(self.seed, self.epoch, index)
                if self.seed is not None
                else None
            )
            image = apply_transform(self.transform, image, generator)
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, items={len(self)}, classes={len(self.classes)}, "
            f"skipped={self.num_skipped})"
        )


class ImageFolderDataset(ImageFileDataset):
    """Images laid out as ``root/<class name>/**/<image>``: one sub-folder per class.

    The class of an image is the name of the top-level sub-folder it is in; classes are sorted by
    name. Files with other extensions, hidden files and files directly under ``root`` are not
    images of any class: they are listed in :attr:`ignored_files` (and not counted as skipped).
    Other arguments as :class:`ImageFileDataset`.

    Args:
        root: the data folder.
        extensions: file name endings (case-insensitive) that are images.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> root = tempfile.mkdtemp()
        >>> for name in ["cat/1.png", "cat/2.png", "dog/1.jpg"]:
        ...     os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        ...     Image.new("RGB", (8, 8)).save(os.path.join(root, name))
        >>> dataset = ImageFolderDataset(root)
        >>> dataset.classes, dataset.labels.tolist(), dataset[2][0].shape
        (['cat', 'dog'], [0, 0, 1], torch.Size([3, 8, 8]))
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[..., torch.Tensor] | None = None,
        *,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        mode: str | None = "RGB",
        check: Check = "header",
        strict: bool = False,
        seed: int | None = None,
        require_positives: bool = True,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"image folder {root} does not exist or is not a folder; expected "
                "root/<class name>/<image files>"
            )
        wanted = tuple(e.lower() for e in extensions)
        paths, labels, ignored = [], [], []
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                ignored.append(str(entry))
                continue
            for folder, subfolders, files in os.walk(entry):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
                for name in sorted(files):
                    path = os.path.join(folder, name)
                    if name.startswith("."):
                        continue
                    if name.lower().endswith(wanted):
                        paths.append(path)
                        labels.append(entry.name)
                    else:
                        ignored.append(path)
        if not paths:
            raise ValueError(
                f"image folder {root} has no image files ({', '.join(wanted)}) in class "
                "sub-folders; expected root/<class name>/<image files>"
            )
        self.root = root
        self.ignored_files = ignored
        if ignored:
            warnings.warn(
                f"image folder {root}: {len(ignored)} files are not images of a class folder and "
                f"are ignored (first: {ignored[0]}); see dataset.ignored_files",
                SkippedItemsWarning,
                stacklevel=2,
            )
        super().__init__(
            paths,
            labels,
            transform,
            mode=mode,
            check=check,
            strict=strict,
            seed=seed,
            source=f"image folder {root}",
            require_positives=require_positives,
        )
