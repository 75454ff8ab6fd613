"""Transforms: exact small cases, float64 references, seeding, batches vs single images, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tripletkit.data import transforms as T


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_to_float_and_normalize_match_the_formula():
    x = torch.randint(0, 256, (2, 3, 5, 4), dtype=torch.uint8)
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    out = T.Compose([T.ToFloat(), T.Normalize(mean, std)])(x)
    ref = (
        x.double() / 255 - torch.tensor(mean, dtype=torch.float64)[:, None, None]
    ) / torch.tensor(std, dtype=torch.float64)[:, None, None]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)


def test_normalize_rejects_uint8_and_channel_mismatch():
    with pytest.raises(ValueError, match="put ToFloat"):
        T.Normalize(0.5, 0.5)(torch.zeros(1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="2 channel values but the image has 3"):
        T.Normalize([0.5, 0.5], [1.0, 1.0])(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="std must be > 0"):
        T.Normalize(0.0, 0.0)


def test_flip_mirrors_exactly_the_drawn_images():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 1, 2 * 3, 4).repeat(8, 1, 1, 1)
    out = T.RandomHorizontalFlip(p=0.5)(x, generator=generator(3))
    drawn = torch.rand(8, generator=generator(3)) < 0.5
    for i in range(8):
        expected = x[i].flip(-1) if drawn[i] else x[i]
        assert torch.equal(out[i], expected)
    assert 0 < int(drawn.sum()) < 8


def test_resize_matches_pillow_bilinear_within_rounding():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ours = T.Resize((20, 24))(torch.from_numpy(array).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    pillow = np.asarray(Image.fromarray(array).resize((24, 20), Image.BILINEAR))
    assert ours.shape == pillow.shape
    assert np.abs(ours.astype(int) - pillow.astype(int)).max() <= 2


def test_center_crop_and_its_error():
    x = torch.arange(36).reshape(1, 6, 6)
    assert torch.equal(T.CenterCrop((2, 4))(x), x[:, 2:4, 1:5])
    with pytest.raises(ValueError, match="larger than the image"):
        T.CenterCrop(8)(x)


def test_random_resized_crop_full_box_is_identity():
    x = torch.rand(5, 3, 12, 12)
    out = T.RandomResizedCrop(12, scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, generator=generator())
    torch.testing.assert_close(out, x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.uint8])
def test_resized_crop_equals_integer_crop_then_interpolate(dtype):
    # Independent reference: slice the box, then bilinear interpolation (no antialiasing). For
    # boxes at whole pixels resized by exactly 1/2, both sample the same points.
    x = torch.rand(3, 2, 32, 40, dtype=torch.float64)
    if dtype == torch.uint8:
        x = (x * 255).round().to(torch.uint8)
    boxes = torch.tensor([[0, 0, 16, 16], [5, 7, 16, 24], [16, 16, 16, 24]], dtype=torch.float64)
    out = T.resized_crop(x, boxes, (8, 8))
    assert out.dtype == dtype
    out2 = T.resized_crop(x[1:2], boxes[1:2], (8, 12))
    for i, (top, left, h, w) in enumerate(boxes.int().tolist()):
        region = x[i : i + 1, :, top : top + h, left : left + w].double()
        ref = F.interpolate(region, size=(h // 2, w // 2), mode="bilinear", align_corners=False)
        # uint8 output is rounded from float32: an exact .5 may round either way.
        atol = 1.0 if dtype == torch.uint8 else 1e-6
        if (h // 2, w // 2) == (8, 8):
            torch.testing.assert_close(out[i : i + 1].double(), ref, atol=atol, rtol=0)
        if i == 1:
            torch.testing.assert_close(out2.double(), ref, atol=atol, rtol=0)


def test_random_resized_crop_boxes_respect_scale_ratio_and_bounds():
    boxes = T._sample_boxes(2000, 40, 60, (0.2, 0.6), (0.5, 2.0), generator(1))
    top, left, h, w = boxes.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all())
    assert bool((top + h <= 40 + 1e-9).all() and (left + w <= 60 + 1e-9).all())
    unclamped = (h < 40) & (w < 60)
    area = (h * w / (40 * 60))[unclamped]
    assert float(area.min()) >= 0.2 - 1e-9 and float(area.max()) <= 0.6 + 1e-9
    ratio = (w / h)[unclamped]
    assert float(ratio.min()) >= 0.5 - 1e-9 and float(ratio.max()) <= 2.0 + 1e-9


def test_single_image_crop_has_the_size_and_dtype():
    x = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    out = T.RandomResizedCrop((20, 30))(x, generator=generator())
    assert out.shape == (3, 20, 30) and out.dtype == torch.uint8


def test_color_jitter_matches_a_float64_reference():
    x = torch.rand(4, 3, 6, 5, dtype=torch.float64)
    jitter = T.ColorJitter(brightness=0.4, contrast=0.3, saturation=0.5)
    out = jitter(x, generator=generator(9))
    u = torch.rand(4, 3, generator=generator(9)).double()
    factors = 1 + (2 * u - 1) * torch.tensor([0.4, 0.3, 0.5], dtype=torch.float64)
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    for i in range(4):
        b, c, s = factors[i].tolist()
        img = x[i] * b
        grey = (img * luma[:, None, None]).sum(0)
        img = grey.mean() + (img - grey.mean()) * c
        grey = (img * luma[:, None, None]).sum(0)
        img = (grey + (img - grey) * s).clamp(0, 1)
        torch.testing.assert_close(out[i], img, rtol=1e-6, atol=1e-6)


def test_color_jitter_zero_is_identity_and_uint8_round_trips():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(T.ColorJitter()(x), x)
    assert T.ColorJitter(brightness=0.5)(x).dtype == torch.uint8


def test_same_generator_seed_same_augmentation_and_batch_independence():
    augment = T.Compose(
        [T.RandomResizedCrop(16, scale=(0.5, 1.0)), T.RandomHorizontalFlip(), T.ColorJitter(0.3)]
    )
    x = torch.rand(8, 3, 20, 20)
    a = augment(x, generator=generator(1))
    b = augment(x, generator=generator(1))
    c = augment(x, generator=generator(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Each image of the batch gets its own parameters.
    assert not torch.equal(a[0], augment(x[:1].repeat(8, 1, 1, 1), generator=generator(1))[1])


def test_augmentation_generator_streams_are_reproducible_and_distinct():
    draws = {
        key: torch.rand(4, generator=T.augmentation_generator(0, *key)).tolist()
        for key in [(0, 1), (1, 0), (0, 2)]
    }
    assert len({tuple(v) for v in draws.values()}) == 3
    assert draws[(0, 1)] == torch.rand(4, generator=T.augmentation_generator(0, 0, 1)).tolist()


def test_transforms_pickle_and_plain_callables_compose():
    augment = T.Compose([T.RandomHorizontalFlip(), T.ToFloat(), lambda x: x * 2])
    assert not T.supports_batches(augment)
    restored = pickle.loads(
        pickle.dumps(T.Compose([T.RandomResizedCrop(8), T.Normalize(0.5, 0.2)]))
    )
    assert restored.transforms[0].size == (8, 8)
    out = augment(torch.full((1, 2, 2), 255, dtype=torch.uint8), generator=generator())
    assert torch.equal(out, torch.full((1, 2, 2), 2.0))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: T.Resize(0), "size must be a positive int"),
        (lambda: T.RandomResizedCrop(8, scale=(0.5, 0.2)), "scale must satisfy"),
        (lambda: T.RandomHorizontalFlip(p=2), "p must be a probability"),
        (lambda: T.ColorJitter(brightness=1.5), "brightness must be in"),
    ],
)
def test_bad_parameters_are_explained(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match=r"expected an image \(C, H, W\)"):
        T.RandomHorizontalFlip()(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="uint8 or floating"):
        T.ToFloat()(torch.zeros(1, 2, 2, dtype=torch.int32))
