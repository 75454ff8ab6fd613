"""Image transforms on tensors, without torchvision: decode once, then resize, crop, flip, jitter.

Every transform is a small picklable callable ``t(x, generator=None) -> tensor`` on an image
``(C, H, W)`` or a batch ``(B, C, H, W)``, uint8 (0..255) or float (0..1 after :class:`ToFloat`).
Random transforms draw from ``generator`` (a :class:`torch.Generator`), or from torch's global
generator when it is None; on a batch each image gets its own random parameters, drawn in one
vectorised call, which is what keeps an augmented loader fast on two cores.

Datasets given a seed pass a generator seeded from ``(seed, epoch, index)`` (from
``(seed, epoch, *batch indices)`` when they fetch a whole batch; :func:`augmentation_generator`),
so augmentation is reproducible whatever the number of workers.

Example:
    >>> import torch
    >>> from tripletkit.data import transforms as T
    >>> augment = T.Compose([T.RandomResizedCrop(28, scale=(0.7, 1.0)), T.RandomHorizontalFlip(),
    ...                      T.ToFloat(), T.Normalize(0.2860, 0.3530)])
    >>> images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    >>> augment(images, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([16, 1, 28, 28])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ToFloat",
    "Transform",
    "apply_transform",
    "augmentation_generator",
    "draws_randomness",
    "resized_crop",
    "supports_batches",
]

Size = int | tuple[int, int]


def augmentation_generator(seed: int, *keys: int) -> torch.Generator:
    """A generator seeded from ``seed`` and ``keys`` (e.g. the epoch and the item's index).

    Different key tuples give independent streams (mixed by :class:`numpy.random.SeedSequence`).

    >>> a = augmentation_generator(0, 1, 2)
    >>> b = augmentation_generator(0, 1, 2)
    >>> bool(torch.rand(3, generator=a).equal(torch.rand(3, generator=b)))
    True
    """
    state = np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def _pair(size: Size, name: str) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and s > 0 for s in size)
    ):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair; got {size!r}")
    return int(size[0]), int(size[1])


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected an image (C, H, W) or a batch (B, C, H, W) tensor; got {shape}")
    return (x.unsqueeze(0), True) if x.dim() == 3 else (x, False)


def _to_working_float(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Float in 0..1 for the arithmetic; remember to return uint8 when the input was uint8."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0), True
    if not x.is_floating_point():
        raise ValueError(f"expected a uint8 or floating image tensor; got dtype {x.dtype}")
    return x, False


def _from_working_float(x: torch.Tensor, was_uint8: bool) -> torch.Tensor:
    if was_uint8:
        return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return x


class Transform:
    """Base class: ``__call__(x, generator=None)`` maps an image or a batch to the same rank.

    ``random`` says whether the transform draws random numbers (from ``generator``); datasets
    seed a generator for a fetch only when it does.
    """

    random: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def apply_transform(
    transform: Callable[..., torch.Tensor], x: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Call a :class:`Transform` with ``generator``; any other callable with the tensor only.

    >>> apply_transform(lambda x: x + 1, torch.zeros(1), None)
    tensor([1.])
    """
    if isinstance(transform, Transform):
        return transform(x, generator=generator)
    return transform(x)


def draws_randomness(transform: Callable[..., torch.Tensor] | None) -> bool:
    """Whether ``transform`` may draw random numbers (any callable that is not a tripletkit
    :class:`Transform` might).

    >>> draws_randomness(Compose([ToFloat(), Normalize(0.5, 0.5)])), draws_randomness(abs)
    (False, True)
    >>> draws_randomness(Compose([ToFloat(), RandomHorizontalFlip()]))
    True
    """
    if transform is None:
        return False
    if isinstance(transform, Transform):
        return transform.random
    return True


def supports_batches(transform: Callable[..., torch.Tensor]) -> bool:
    """Whether ``transform`` accepts a batch ``(B, C, H, W)``: tripletkit transforms do.

    >>> supports_batches(Compose([ToFloat(), RandomHorizontalFlip()])), supports_batches(abs)
    (True, False)
    """
    if isinstance(transform, Compose):
        return all(supports_batches(t) for t in transform.transforms)
    return isinstance(transform, Transform)


class Compose(Transform):
    """Apply ``transforms`` in order, passing the same generator to each.

    >>> Compose([ToFloat(), Normalize(0.5, 0.5)])(torch.full((1, 2, 2), 255, dtype=torch.uint8))
    tensor([[[1., 1.],
             [1., 1.]]])
    """

    def __init__(self, transforms: Sequence[Callable[..., torch.Tensor]]) -> None:
        self.transforms = list(transforms)

    @property
    def random(self) -> bool:  # type: ignore[override]
        return any(draws_randomness(t) for t in self.transforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for transform in self.transforms:
            x = apply_transform(transform, x, generator)
        return x


class ToFloat(Transform):
    """uint8 0..255 -> float32 0..1 (``x / 255``); floating input is cast to float32 unchanged.

    >>> ToFloat()(torch.tensor([[[0, 51, 255]]], dtype=torch.uint8))
    tensor([[[0.0000, 0.2000, 1.0000]]])
    """

    random = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return x.to(torch.float32).div_(255.0)
        if not x.is_floating_point():
            raise ValueError(f"ToFloat expects uint8 or floating images; got dtype {x.dtype}")
        return x.to(torch.float32)


class Normalize(Transform):
    """Per-channel ``(x - mean) / std`` on float images (after :class:`ToFloat`).

    Args:
        mean: one value, or one per channel.
        std: one value > 0, or one per channel.

    >>> Normalize([0.5], [0.25])(torch.full((1, 1, 2), 0.75))
    tensor([[[1., 1.]]])
    """

    random = False

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(
                f"mean has {self.mean.numel()} values but std has {self.std.numel()}; "
                "give one value or one per channel for both"
            )
        if not bool((self.std > 0).all()):
            raise ValueError(f"std must be > 0; got {self.std.tolist()}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not x.is_floating_point():
            raise ValueError(
                f"Normalize expects float images; got dtype {x.dtype} (put ToFloat() before it)"
            )
        channels = x.shape[-3]
        if self.mean.numel() not in (1, channels):
            raise ValueError(
                f"Normalize has {self.mean.numel()} channel values but the image has {channels}"
            )
        shape = (-1, 1, 1)
        return (x - self.mean.reshape(shape)) / self.std.reshape(shape)


class Resize(Transform):
    """Resize to ``size`` (``int``: a square) with bilinear interpolation, antialiased by default.

    >>> Resize((4, 6))(torch.zeros(3, 8, 8, dtype=torch.uint8)).shape
    torch.Size([3, 4, 6])
    """

    random = False

    def __init__(self, size: Size, antialias: bool = True) -> None:
        self.size = _pair(size, "size")
        self.antialias = bool(antialias)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, single = _as_batch(x)
        if tuple(batch.shape[-2:]) == self.size:
            return x
        work, was_uint8 = _to_working_float(batch)
        out = F.interpolate(
            work, size=self.size, mode="bilinear", align_corners=False, antialias=self.antialias
        )
        if was_uint8:
            out = _from_working_float(out, True)
        return out[0] if single else out


class CenterCrop(Transform):
    """Crop the central ``size`` region (the image must be at least that large).

    >>> CenterCrop(2)(torch.arange(16.).reshape(1, 4, 4))
    tensor([[[ 5.,  6.],
             [ 9., 10.]]])
    """

    random = False

    def __init__(self, size: Size) -> None:
        self.size = _pair(size, "size")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        height, width = x.shape[-2:]
        crop_h, crop_w = self.size
        if crop_h > height or crop_w > width:
            raise ValueError(
                f"CenterCrop{self.size} is larger than the image ({height}, {width}); Resize first"
            )
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        return x[..., top : top + crop_h, left : left + crop_w]


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p``.

    >>> RandomHorizontalFlip(p=1.0)(torch.tensor([[[1, 2, 3]]]))
    tensor([[[3, 2, 1]]])
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1]; got {p!r}")
        self.p = float(p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, single = _as_batch(x)
        flip = torch.rand(batch.shape[0], generator=generator) < self.p
        out = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        return out[0] if single else out


def _sample_boxes(
    count: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``(count, 4)`` float crop boxes ``(top, left, crop_h, crop_w)`` in pixels.

    Area fraction ~ U(scale), log aspect ratio (w/h) ~ U(log ratio); a box larger than the image
    is clamped to it (where torchvision would draw again), so one vectorised draw always suffices.
    """
    uniform = torch.rand(count, 4, generator=generator, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * uniform[:, 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * uniform[:, 1])
    crop_w = torch.sqrt(area * aspect).clamp(1.0, width)
    crop_h = torch.sqrt(area / aspect).clamp(1.0, height)
    top = (height - crop_h) * uniform[:, 2]
    left = (width - crop_w) * uniform[:, 3]
    return torch.stack([top, left, crop_h, crop_w], dim=1)


def resized_crop(batch: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop box ``i`` of image ``i`` and resample it to ``size``, for the whole batch in one call.

    Args:
        batch: ``(B, C, H, W)`` uint8 or float images.
        boxes: ``(B, 4)`` float boxes ``(top, left, height, width)`` in pixels (fractional allowed).
        size: ``(height, width)`` of the output.

    Returns:
        ``(B, C, *size)`` of the input dtype: bilinear samples at the output pixel centres mapped
        into the box (``align_corners=False`` convention), edges clamped.

    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> resized_crop(x, torch.tensor([[0., 0., 2., 2.]]), (2, 2))
    tensor([[[[0., 1.],
              [4., 5.]]]])
    """
    work, was_uint8 = _to_working_float(batch)
    count, channels, height, width = work.shape
    top, left, crop_h, crop_w = boxes.to(torch.float64).unbind(1)
    # affine_grid maps output coordinates in [-1, 1] to input coordinates in [-1, 1].
    theta = torch.zeros(count, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = crop_w / width
    theta[:, 0, 2] = (2 * left + crop_w) / width - 1
    theta[:, 1, 1] = crop_h / height
    theta[:, 1, 2] = (2 * top + crop_h) / height - 1
    grid = F.affine_grid(theta.to(work.dtype), [count, channels, *size], align_corners=False)
    out = F.grid_sample(work, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _from_working_float(out, was_uint8)


class RandomResizedCrop(Transform):
    """Crop a random region (area fraction in ``scale``, aspect ratio in ``ratio``), resize to ``size``.

    A single image is cropped to whole pixels and resized with antialiasing; a batch is resampled
    in one call with per-image affine grids (bilinear, no antialiasing: fine when the crop is not
    much larger than ``size``, as with 28×28 images).

    >>> RandomResizedCrop(16)(torch.rand(2, 3, 32, 40)).shape
    torch.Size([2, 3, 16, 16])
    """

    def __init__(
        self,
        size: Size,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        self.size = _pair(size, "size")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1; got {scale!r}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max; got {ratio!r}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, single = _as_batch(x)
        count, _, height, width = batch.shape
        boxes = _sample_boxes(count, height, width, self.scale, self.ratio, generator)
        if single:
            top, left, crop_h, crop_w = (round(float(v)) for v in boxes[0])
            crop_h, crop_w = max(1, min(crop_h, height)), max(1, min(crop_w, width))
            top, left = min(top, height - crop_h), min(left, width - crop_w)
            region = batch[..., top : top + crop_h, left : left + crop_w]
            return Resize(self.size)(region)[0]
        return resized_crop(batch, boxes, self.size)


class ColorJitter(Transform):
    """Random brightness, contrast and saturation, each factor drawn per image from ``[1-v, 1+v]``.

    brightness: ``x · f``; contrast: ``mean + (x - mean) · f`` (mean of the grey image);
    saturation: ``grey + (x - grey) · f`` (3-channel images only; grey is the luma
    ``0.299 R + 0.587 G + 0.114 B``). Applied in that order, clamped to the valid range. Hue is
    not changed.

    >>> ColorJitter(brightness=0.4)(torch.rand(8, 3, 4, 4)).shape
    torch.Size([8, 3, 4, 4])
    """

    def __init__(
        self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0
    ) -> None:
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (factors 1 ± {name}); got {value!r}")
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, single = _as_batch(x)
        work, was_uint8 = _to_working_float(batch)
        count, channels = work.shape[:2]
        factors = 1 + (2 * torch.rand(count, 3, generator=generator) - 1) * torch.tensor(
            [self.brightness, self.contrast, self.saturation]
        )
        factors = factors.to(work.dtype)[:, :, None, None, None]
        out = work * factors[:, 0]
        if self.contrast:
            mean = _grey(out).mean(dim=(-3, -2, -1), keepdim=True)
            out = mean + (out - mean) * factors[:, 1]
        if self.saturation and channels == 3:
            grey = _grey(out)
            out = grey + (out - grey) * factors[:, 2]
        out = out.clamp(0.0, 1.0)
        out = _from_working_float(out, was_uint8)
        return out[0] if single else out


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of ``(B, C, H, W)`` as ``(B, 1, H, W)``; a 1-channel image is its own grey."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).reshape(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)
