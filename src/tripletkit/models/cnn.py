"""The small CNN: the image backbone of the side-by-side benchmark with pytorch-metric-learning.

Its architecture is fixed so that both libraries train exactly the same network: three blocks of
``conv 3x3 (32 / 64 / 128 channels) → batch norm → ReLU → max-pool 2x2`` (computed as
max-pool then ReLU, which is the same function with the same gradients), a global average pool to
128 features, and (in :func:`~tripletkit.models.create_model`) a linear layer to a 64-d,
L2-normalised embedding.

``pool_size=s`` pools to an ``s × s`` grid instead of one average (``128·s²`` features): the
head then sees *where* in the image a feature fired, not only that it fired. On Fashion-MNIST's
unseen classes this matters more than any loss setting (see ``benchmarks/train_fmnist.py``). Designed for 1×28×28 Fashion-MNIST; the pools round up (``ceil_mode``)
and the final pool is adaptive, so any size and channel count works (scikit-learn digits: 1×8×8).
"""

from __future__ import annotations

import torch
from torch import nn

from tripletkit.models.input_spec import ImageInputSpec
from tripletkit.models.registry import register_model

__all__ = ["SMALL_CNN_CHANNELS", "SmallCNN", "small_cnn"]

#: Output channels of the three conv blocks.
SMALL_CNN_CHANNELS: tuple[int, int, int] = (32, 64, 128)


class SmallCNN(nn.Module):
    """``(B, in_channels, H, W) -> (B, 128·pool_size²)``; three conv-BN-ReLU-maxpool blocks (run as
    conv-BN-maxpool-ReLU: the same values and gradients, cheaper), then
    an adaptive average pool to ``pool_size × pool_size``.

    >>> SmallCNN(in_channels=1)(torch.randn(2, 1, 8, 8)).shape
    torch.Size([2, 128])
    >>> SmallCNN(in_channels=1, pool_size=3)(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 1152])
    """

    def __init__(
        self,
        in_channels: int = 1,
        pool_size: int = 1,
        mean: float | tuple[float, ...] = 0.5,
        std: float | tuple[float, ...] = 0.5,
    ) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer; got {in_channels!r}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive integer; got {pool_size!r}")
        blocks: list[nn.Module] = []
        previous = in_channels
        for width in SMALL_CNN_CHANNELS:
            blocks += [
                # No conv bias: the batch norm that follows has its own shift.
                nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                # ceil_mode keeps odd sizes' last row/column (7 -> 4) and never shrinks 1 to 0.
                nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),
                # ReLU after the pool: ReLU is monotone, so max(relu(a), relu(b)) is exactly
                # relu(max(a, b)) and the gradients are the same too (a window whose maximum is
                # not positive passes no gradient either way), but the ReLU and its backward run
                # on a quarter of the values: a training step of the Fashion-MNIST recipe 111 ->
                # 97 ms on 2 cores. The state dict is unchanged (neither layer has parameters).
                nn.ReLU(inplace=True),
            ]
            previous = width
        # Channels-last conv weights make oneDNN run the blocks channels-last (a 1-channel input
        # is both layouts at once, so the weights decide): forward + backward + AdamW of the
        # Fashion-MNIST recipe, 160 images, 0.22 s -> 0.15 s on 2 cores. Saved models stay plain
        # contiguous tensors; loading copies into these weights and keeps their layout.
        self.blocks = nn.Sequential(*blocks).to(memory_format=torch.channels_last)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.pool_size = pool_size
        self.feature_dim = SMALL_CNN_CHANNELS[-1] * pool_size * pool_size
        mean_t = tuple(float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean]))
        std_t = tuple(float(s) for s in (std if isinstance(std, (list, tuple)) else [std]))
        # The input normalisation is part of the saved model, so inference applies the same one.
        self.input_spec = ImageInputSpec(channels=in_channels, mean=mean_t, std=std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_spec.check(x)
        features = self.blocks(x)
        if features.requires_grad:
            # The gradient that comes back through flatten or the average pool is NCHW while
            # every saved activation is channels-last, and oneDNN's backward kernels then convert
            # at each layer: one channels-last copy here keeps the whole backward pass
            # channels-last (Fashion-MNIST recipe: 74 -> 71 ms a training step on 2 cores).
            features.register_hook(_channels_last)
        if features.shape[-2:] != (self.pool_size, self.pool_size):
            # The pool is the identity where the map has the grid's size already (28 px, 4×4).
            features = self.pool(features)
        return features.flatten(1)


def _channels_last(gradient: torch.Tensor) -> torch.Tensor:
    return gradient.contiguous(memory_format=torch.channels_last)


@register_model(embedding_dim=64)
def small_cnn(
    in_channels: int = 1,
    pool_size: int = 1,
    mean: float | tuple[float, ...] = 0.5,
    std: float | tuple[float, ...] = 0.5,
) -> SmallCNN:
    """Small 3-block CNN (32/64/128 channels) for small images such as Fashion-MNIST 1×28×28;
    ``pool_size`` > 1 keeps a coarse spatial grid of the last feature map; ``mean``/``std`` the
    input normalisation (of images scaled to [0, 1])."""
    return SmallCNN(in_channels=in_channels, pool_size=pool_size, mean=mean, std=std)
