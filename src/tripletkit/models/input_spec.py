"""What each model expects as input, so that the data pipeline and the CLI can prepare it.

Every model built by :func:`tripletkit.models.create_model` carries one of these as
``model.input_spec``:

* :class:`VectorInputSpec`: feature vectors ``(B, in_features)``.
* :class:`ImageInputSpec`: images ``(B, C, H, W)``; its :meth:`~ImageInputSpec.prepare` turns raw
  images (uint8 0-255 or float 0-1, any channel count the model can use) into normalised input.
* :class:`TextInputSpec`: a list of strings, tokenised inside the model (``max_length`` tokens).

The specs are frozen dataclasses with a JSON-able :meth:`to_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageInputSpec",
    "InputSpec",
    "TextInputSpec",
    "VectorInputSpec",
    "input_kind",
]

#: Per-channel (R, G, B) mean and standard deviation of ImageNet, for models pretrained on it.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# ITU-R BT.601 luma weights: how a colour image becomes the single channel a grayscale model expects.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class VectorInputSpec:
    """Input of a model over feature vectors: a float tensor ``(B, in_features)``.

    >>> VectorInputSpec(64).to_dict()
    {'kind': 'vector', 'in_features': 64}
    """

    in_features: int

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict, with ``"kind"`` naming the input type."""
        return {"kind": "vector", **asdict(self)}

    def check(self, x: Any) -> None:
        """Raise ``ValueError``/``TypeError`` unless ``x`` is a float tensor ``(B, in_features)``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"expected a float tensor of shape (B, {self.in_features}); got {type(x).__name__}"
            )
        if x.dim() != 2 or x.shape[1] != self.in_features or not x.is_floating_point():
            raise ValueError(
                f"input has shape {tuple(x.shape)} and dtype {x.dtype}; expected a float tensor "
                f"of shape (B, {self.in_features})"
            )


@dataclass(frozen=True)
class ImageInputSpec:
    """Input of an image model: a float tensor ``(B, channels, H, W)``, normalised per channel.

    Attributes:
        channels: number of input channels the model's first layer takes.
        image_size: the resolution the model was designed or pretrained at, ``(H, W)``, or ``None``
            when any size works equally well. Other sizes down to ``min_size`` are accepted.
        min_size: the smallest height and width the model accepts.
        mean, std: per-channel normalisation ``(x - mean) / std`` applied to images scaled to
            [0, 1]; ImageNet statistics for pretrained models, 0.5/0.5 (mapping [0, 1] to [-1, 1])
            for models trained from scratch.

    Grayscale images given to a 3-channel model are repeated over the three channels (so a
    pretrained network sees a gray RGB image); colour images given to a 1-channel model are
    converted to luma (0.299 R + 0.587 G + 0.114 B). :meth:`prepare` does both.

    >>> spec = ImageInputSpec(channels=3, image_size=(224, 224))
    >>> spec.prepare(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), size=32).shape
    torch.Size([2, 3, 32, 32])
    """

    channels: int
    image_size: tuple[int, int] | None = None
    min_size: int = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        # Accept lists (from JSON) while keeping the dataclass hashable and immutable.
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        if len(mean) == 1:
            mean = mean * self.channels
        if len(std) == 1:
            std = std * self.channels
        if len(mean) != self.channels or len(std) != self.channels:
            raise ValueError(
                f"mean and std need 1 or {self.channels} values; got {len(mean)} and {len(std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be > 0; got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict, with ``"kind"`` naming the input type."""
        data = asdict(self)
        data["image_size"] = list(self.image_size) if self.image_size is not None else None
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return {"kind": "image", **data}

    def check(self, x: Any) -> None:
        """Raise ``ValueError``/``TypeError`` unless ``x`` is a float ``(B, channels, H, W)`` tensor
        with ``H, W >= min_size``."""
        expected = f"a float tensor of shape (B, {self.channels}, H, W)"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected {expected}; got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.channels or not x.is_floating_point():
            raise ValueError(
                f"input has shape {tuple(x.shape)} and dtype {x.dtype}; expected {expected} "
                "(use model.input_spec.prepare(images) to convert channels, dtype and scale)"
            )
        if min(x.shape[2], x.shape[3]) < self.min_size:
            raise ValueError(
                f"input images are {x.shape[2]}x{x.shape[3]}; this model needs at least "
                f"{self.min_size}x{self.min_size}"
            )

    def prepare(
        self, images: torch.Tensor, size: int | tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Turn raw images into this model's input.

        Steps: uint8 images are scaled to [0, 1] (float images are assumed to be in [0, 1]
        already); a missing channel axis ``(B, H, W)`` is added; channels are adapted (1 → 3 by
        repetition, 3 → 1 by luma); images are resized (bilinear, antialiased) to ``size`` if given,
        else left at their size; finally ``(x - mean) / std`` per channel.

        Args:
            images: ``(B, H, W)`` or ``(B, C, H, W)``, uint8 or float.
            size: target ``(H, W)`` (or one int for square images); ``None`` keeps the size. Use
                ``spec.image_size`` for a pretrained model's native resolution.

        Returns:
            float32 tensor ``(B, channels, H', W')`` on the input's device.

        >>> spec = ImageInputSpec(channels=1, mean=(0.5,), std=(0.5,))
        >>> spec.prepare(torch.tensor([[[0, 255]]], dtype=torch.uint8)).tolist()
        [[[[-1.0, 1.0]]]]
        """
        if not isinstance(images, torch.Tensor):
            raise TypeError(
                f"images must be a torch.Tensor (B, C, H, W); got {type(images).__name__}"
            )
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dim() != 4:
            raise ValueError(
                f"images have shape {tuple(images.shape)}; expected (B, H, W) or (B, C, H, W)"
            )
        if images.dtype == torch.uint8:
            x = images.float().div_(255.0)
        elif images.is_floating_point():
            x = images.float()
        else:
            raise ValueError(
                f"images have dtype {images.dtype}; expected uint8 (0-255) or float (0-1)"
            )
        x = self._adapt_channels(x)
        if size is not None:
            target = (
                (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
            )
            if tuple(x.shape[2:]) != target:
                x = F.interpolate(
                    x, size=target, mode="bilinear", align_corners=False, antialias=True
                )
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def _adapt_channels(self, x: torch.Tensor) -> torch.Tensor:
        have = x.shape[1]
        if have == self.channels:
            return x
        if have == 1:
            return x.expand(-1, self.channels, -1, -1)
        if have == 3 and self.channels == 1:
            weights = torch.tensor(_LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            return (x * weights).sum(dim=1, keepdim=True)
        raise ValueError(
            f"images have {have} channels; this model takes {self.channels} "
            "(1-channel images are repeated, 3-channel images converted to luma; "
            "other counts must be converted by the caller)"
        )


@dataclass(frozen=True)
class TextInputSpec:
    """Input of a text model: a list of strings, tokenised inside the model.

    Attributes:
        max_length: texts are truncated to this many tokens (special tokens included).

    >>> TextInputSpec(256).to_dict()
    {'kind': 'text', 'max_length': 256}
    """

    max_length: int

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict, with ``"kind"`` naming the input type."""
        return {"kind": "text", **asdict(self)}

    def check(self, x: Any) -> None:
        """Raise ``TypeError`` unless ``x`` is a list or tuple of strings."""
        if not isinstance(x, (list, tuple)) or not all(isinstance(t, str) for t in x):
            raise TypeError(
                f"expected a list of strings; got {type(x).__name__}"
                + (f" of {type(x[0]).__name__}" if isinstance(x, (list, tuple)) and x else "")
            )


#: Any of the three input specs.
InputSpec = VectorInputSpec | ImageInputSpec | TextInputSpec


def input_kind(model: torch.nn.Module) -> str:
    """``"image"``, ``"text"`` or ``"vector"``: what ``model.input_spec`` says the model takes
    (a model without a spec is taken to take vectors)."""
    spec = getattr(model, "input_spec", None)
    if isinstance(spec, ImageInputSpec):
        return "image"
    if isinstance(spec, TextInputSpec):
        return "text"
    return "vector"
