"""Proxy losses as modules: the proxies are parameters of the loss.

Proxies learn best with a learning rate much larger than the network's (Kim et al. 2020 train them
with 100 times the base rate). Each module says so through :meth:`param_groups`, which a trainer (or
you) passes to the optimiser next to the model's parameters::

    optimizer = torch.optim.AdamW(
        [{"params": model.parameters()}, *loss_fn.param_groups(base_lr=1e-4)], lr=1e-4
    )

The multiplier is the attribute ``proxy_lr_multiplier``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tripletkit.functional.pair_stats import PairStats
from tripletkit.functional.proxy import proxy_anchor_loss, proxy_nca_loss
from tripletkit.validation import check_nonnegative, check_positive

__all__ = ["ProxyAnchorLoss", "ProxyNCALoss"]


class _ProxyLoss(nn.Module):
    """Holds ``num_classes`` proxies of ``embedding_dim`` and their learning-rate multiplier."""

    def __init__(self, num_classes: int, embedding_dim: int, proxy_lr_multiplier: float) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.proxy_lr_multiplier = check_positive(proxy_lr_multiplier, "proxy_lr_multiplier")
        # Unit-norm-scale random directions: the losses normalise the proxies, and a norm near 1
        # keeps the proxies' effective step size independent of the number of classes.
        self.proxies = nn.Parameter(
            torch.randn(num_classes, embedding_dim) / math.sqrt(embedding_dim)
        )
        self.last_stats: PairStats | None = None

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the loss: the proxies at ``base_lr * proxy_lr_multiplier``.

        >>> loss_fn = ProxyAnchorLoss(num_classes=3, embedding_dim=4)
        >>> [(len(g["params"]), g["lr"]) for g in loss_fn.param_groups(1e-4)]
        [(1, 0.01)]
        """
        base_lr = check_nonnegative(base_lr, "base_lr")
        return [{"params": [self.proxies], "lr": base_lr * self.proxy_lr_multiplier}]


class ProxyNCALoss(_ProxyLoss):
    """Proxy-NCA loss: a softmax over the (negated, scaled) distances to the C class proxies (see
    :func:`tripletkit.functional.proxy_nca_loss`).

    Input: ``embeddings`` ``(B, D)``, ``labels`` ``(B,)`` class indices in ``[0, num_classes)``.
    No reference set: the proxies play that role. :attr:`last_stats` holds a
    :class:`~tripletkit.functional.pair_stats.PairStats` over (embedding, proxy) pairs.

    Args:
        num_classes: C, the number of proxies.
        embedding_dim: D.
        temperature: τ > 0 (1/9 as in Proxy-NCA++; 1 is pytorch-metric-learning's default).
        proxy_lr_multiplier: the proxies' learning rate relative to the model's (see
            :meth:`param_groups`).

    Example:
        >>> import torch
        >>> from tripletkit.losses import ProxyNCALoss
        >>> loss_fn = ProxyNCALoss(num_classes=10, embedding_dim=16)
        >>> loss = loss_fn(torch.randn(32, 16), torch.randint(0, 10, (32,)))
        >>> loss.backward(); loss_fn.proxies.grad.shape
        torch.Size([10, 16])
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        temperature: float = 1.0 / 9.0,
        proxy_lr_multiplier: float = 100.0,
    ) -> None:
        super().__init__(num_classes, embedding_dim, proxy_lr_multiplier)
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss, self.last_stats = proxy_nca_loss(
            embeddings, labels, self.proxies, temperature=self.temperature, return_stats=True
        )
        return loss

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
            f"temperature={self.temperature:.4g}, proxy_lr_multiplier={self.proxy_lr_multiplier}"
        )


class ProxyAnchorLoss(_ProxyLoss):
    """Proxy Anchor loss (Kim et al. 2020): each proxy pulls its class's embeddings and pushes the
    others, weighted by a log-sum-exp (see :func:`tripletkit.functional.proxy_anchor_loss`).

    Input: ``embeddings`` ``(B, D)``, ``labels`` ``(B,)`` class indices in ``[0, num_classes)``.
    :attr:`last_stats` holds a :class:`~tripletkit.functional.pair_stats.PairStats`.

    Args:
        num_classes: C, the number of proxies.
        embedding_dim: D.
        margin: δ >= 0 (paper: 0.1).
        alpha: the scale α > 0 (paper: 32).
        proxy_lr_multiplier: the proxies' learning rate relative to the model's (paper: 100).

    Example:
        >>> import torch
        >>> from tripletkit.losses import ProxyAnchorLoss
        >>> loss_fn = ProxyAnchorLoss(num_classes=10, embedding_dim=16)
        >>> loss = loss_fn(torch.randn(32, 16), torch.randint(0, 10, (32,)))
        >>> loss_fn.param_groups(base_lr=1e-4)[0]["lr"]
        0.01
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        margin: float = 0.1,
        alpha: float = 32.0,
        proxy_lr_multiplier: float = 100.0,
    ) -> None:
        super().__init__(num_classes, embedding_dim, proxy_lr_multiplier)
        self.margin = check_nonnegative(margin, "margin")
        self.alpha = check_positive(alpha, "alpha")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss, self.last_stats = proxy_anchor_loss(
            embeddings,
            labels,
            self.proxies,
            margin=self.margin,
            alpha=self.alpha,
            return_stats=True,
        )
        return loss

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
            f"margin={self.margin}, alpha={self.alpha}, "
            f"proxy_lr_multiplier={self.proxy_lr_multiplier}"
        )
