"""ResNet-18 and ResNet-34 (He et al. 2016, "Deep Residual Learning for Image Recognition"),
trained from scratch (no weights are bundled).

Two stems: ``"imagenet"`` (7×7 conv stride 2, then 3×3 max-pool stride 2: 224 px becomes 56) for
photos of 100 px and more, and ``"small"`` (one 3×3 conv stride 1, no pool, as for CIFAR) for
small images such as 28×28, where the ImageNet stem would leave 7×7 maps after the first layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tripletkit.models.input_spec import ImageInputSpec
from tripletkit.models.registry import register_model
from tripletkit.validation import check_choice

__all__ = ["STEMS", "BasicBlock", "ResNet", "resnet18", "resnet34"]

#: The two stems: ``"imagenet"`` (downsamples by 4) and ``"small"`` (keeps the resolution).
STEMS: tuple[str, ...] = ("imagenet", "small")

_STAGE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` with 3×3 convolutions; the shortcut is
    a strided 1×1 conv + batch norm when the shape changes, else the identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(residual + self.shortcut(x))


class ResNet(nn.Module):
    """``(B, in_channels, H, W) -> (B, 512)``: a stem, four stages of basic blocks (64, 128, 256,
    512 channels; stages 2-4 halve the resolution), global average pool.

    Args:
        blocks_per_stage: ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for ResNet-34.
        in_channels: input channels.
        stem: ``"imagenet"`` or ``"small"`` (see the module docstring).
        zero_init_residual: start every block's last batch-norm scale at 0, so each block begins
            as the identity (Goyal et al. 2017); trains from scratch more stably.

    >>> ResNet((1, 1, 1, 1), in_channels=1, stem="small")(torch.randn(2, 1, 8, 8)).shape
    torch.Size([2, 512])
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int],
        in_channels: int = 3,
        stem: str = "imagenet",
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        check_choice(stem, STEMS, "stem")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer; got {in_channels!r}")
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(64),
                # ReLU then max-pool, computed as max-pool then ReLU: the same values and
                # gradients (ReLU is monotone; the pool pads with -inf), on a quarter of the values.
                nn.MaxPool2d(3, stride=2, padding=1),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
            )
        stages: list[nn.Module] = []
        previous = 64
        for index, (width, count) in enumerate(zip(_STAGE_WIDTHS, blocks_per_stage, strict=True)):
            first_stride = 1 if index == 0 else 2
            blocks = [BasicBlock(previous, width, first_stride)]
            blocks += [BasicBlock(width, width, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = previous
        self.input_spec = ImageInputSpec(channels=in_channels, mean=(0.5,), std=(0.5,))
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_spec.check(x)
        return self.pool(self.stages(self.stem(x))).flatten(1)


@register_model
def resnet18(
    in_channels: int = 3, stem: str = "imagenet", zero_init_residual: bool = True
) -> ResNet:
    """ResNet-18 (11.2M parameters without its classifier), from scratch."""
    return ResNet((2, 2, 2, 2), in_channels, stem, zero_init_residual)


@register_model
def resnet34(
    in_channels: int = 3, stem: str = "imagenet", zero_init_residual: bool = True
) -> ResNet:
    """ResNet-34 (21.3M parameters without its classifier), from scratch."""
    return ResNet((3, 4, 6, 3), in_channels, stem, zero_init_residual)
