"""A multilayer perceptron backbone for feature vectors (tabular data, precomputed features)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tripletkit.models.input_spec import VectorInputSpec
from tripletkit.models.registry import register_model

__all__ = ["MLPBackbone", "mlp"]


class MLPBackbone(nn.Module):
    """``(B, in_features) -> (B, hidden_dims[-1])``: a stack of ``linear [→ batch norm] → ReLU
    [→ dropout]`` layers (no layers at all when ``hidden_dims`` is empty: the input passes through).

    >>> MLPBackbone(8, hidden_dims=(16, 4))(torch.randn(3, 8)).shape
    torch.Size([3, 4])
    """

    def __init__(
        self,
        in_features: int,
        hidden_dims: Sequence[int] = (256,),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive integer; got {in_features!r}")
        widths = list(hidden_dims)
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"hidden_dims must be positive integers; got {hidden_dims!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        layers: list[nn.Module] = []
        previous = in_features
        for width in widths:
            layers.append(nn.Linear(previous, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            previous = width
        self.layers = nn.Sequential(*layers)
        self.feature_dim = previous
        self.input_spec = VectorInputSpec(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_spec.check(x)
        return self.layers(x)


@register_model(embedding_dim=64)
def mlp(
    in_features: int,
    hidden_dims: Sequence[int] = (256,),
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> MLPBackbone:
    """MLP over feature vectors ``(B, in_features)``; see :class:`MLPBackbone`."""
    return MLPBackbone(in_features, hidden_dims=hidden_dims, dropout=dropout, batch_norm=batch_norm)
