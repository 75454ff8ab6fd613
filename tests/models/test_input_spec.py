"""Input specs: checks, and image preparation against hand-computed float64 values."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tripletkit.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageInputSpec,
    TextInputSpec,
    VectorInputSpec,
)


def test_uint8_is_scaled_and_normalised_per_channel() -> None:
    spec = ImageInputSpec(channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    images = torch.randint(0, 256, (2, 3, 5, 4), dtype=torch.uint8)
    out = spec.prepare(images)
    expected = images.double() / 255.0
    for c in range(3):
        expected[:, c] = (expected[:, c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-6)


def test_grayscale_is_repeated_for_three_channel_models() -> None:
    spec = ImageInputSpec(channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    gray = torch.rand(2, 1, 6, 6)
    out = spec.prepare(gray)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (gray[:, 0] - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    # A channel-less (B, H, W) batch is treated as grayscale.
    torch.testing.assert_close(spec.prepare(gray[:, 0]), out)


def test_colour_becomes_luma_for_one_channel_models() -> None:
    spec = ImageInputSpec(channels=1, mean=(0.0,), std=(1.0,))
    # Pure red, green and blue pixels: luma weights 0.299, 0.587, 0.114 (ITU-R BT.601).
    images = torch.zeros(3, 3, 1, 1)
    images[0, 0], images[1, 1], images[2, 2] = 1.0, 1.0, 1.0
    assert spec.prepare(images).flatten().tolist() == pytest.approx([0.299, 0.587, 0.114])


def test_resize_uses_antialiased_bilinear_and_keeps_size_when_not_asked() -> None:
    spec = ImageInputSpec(channels=1)
    images = torch.rand(2, 1, 28, 28)
    assert spec.prepare(images).shape == (2, 1, 28, 28)
    resized = spec.prepare(images, size=(14, 10))
    expected = F.interpolate(images, size=(14, 10), mode="bilinear", antialias=True)
    torch.testing.assert_close(resized, (expected - 0.5) / 0.5)
    assert spec.prepare(images, size=56).shape == (2, 1, 56, 56)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(2, 2, 4, 4), "2 channels"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.int16), "dtype"),
        (torch.rand(4, 4), "expected \\(B, H, W\\)"),
    ],
)
def test_prepare_rejects_what_it_cannot_convert(images: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageInputSpec(channels=3).prepare(images)


def test_prepare_rejects_non_tensors() -> None:
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        ImageInputSpec(channels=1).prepare([[0.0]])


def test_mean_and_std_are_broadcast_or_rejected() -> None:
    spec = ImageInputSpec(channels=3)
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="1 or 3 values"):
        ImageInputSpec(channels=3, mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="> 0"):
        ImageInputSpec(channels=1, std=(0.0,))


def test_image_check_messages_say_what_is_expected() -> None:
    spec = ImageInputSpec(channels=3, min_size=4)
    spec.check(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"expected a float tensor of shape \(B, 3, H, W\)"):
        spec.check(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="at least 4x4"):
        spec.check(torch.rand(1, 3, 3, 8))
    with pytest.raises(TypeError, match="list"):
        spec.check([1.0])


def test_vector_and_text_checks() -> None:
    VectorInputSpec(3).check(torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        VectorInputSpec(3).check(torch.rand(2, 4))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        VectorInputSpec(3).check(torch.ones(2, 3, dtype=torch.int64))
    TextInputSpec(8).check(["a", "b"])
    with pytest.raises(TypeError, match="list of strings"):
        TextInputSpec(8).check("a single string")
    with pytest.raises(TypeError, match="of int"):
        TextInputSpec(8).check([1, 2])


@pytest.mark.parametrize(
    "spec",
    [
        VectorInputSpec(7),
        TextInputSpec(128),
        ImageInputSpec(channels=3, image_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ImageInputSpec(channels=1, min_size=2),
    ],
)
def test_to_dict_is_json_and_rebuilds_the_spec(spec: object) -> None:
    data = json.loads(json.dumps(spec.to_dict()))
    kind = data.pop("kind")
    cls = {"vector": VectorInputSpec, "text": TextInputSpec, "image": ImageInputSpec}[kind]
    assert cls(**data) == spec
