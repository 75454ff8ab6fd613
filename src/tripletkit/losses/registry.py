"""Losses by name, so that configs, the CLI and tests name them the same way.

``create_loss(name, **options)`` builds the loss and passes it only the options it accepts, so one
configuration (margin, mining, distance, number of classes, embedding size...) can build any loss.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["create_loss", "list_losses", "register_loss"]

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str, builder: Callable[..., nn.Module]) -> None:
    """Make ``builder`` (a loss class or function) available as ``create_loss(name)``."""
    _LOSSES[name] = builder


def list_losses() -> list[str]:
    """The registered loss names."""
    _register_builtins()
    return sorted(_LOSSES)


def create_loss(name: str, **options: Any) -> nn.Module:
    """Build the loss ``name`` with the ``options`` its constructor accepts (others are ignored).

    >>> create_loss("triplet", margin=0.3, mining="hard", num_classes=10)
    BatchTripletLoss(margin=0.3, mining='hard', distance='squared_euclidean', soft=False)
    """
    _register_builtins()
    if name not in _LOSSES:
        close = difflib.get_close_matches(name, list(_LOSSES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown loss {name!r}{hint} accepted: {', '.join(repr(n) for n in sorted(_LOSSES))}"
        )
    builder = _LOSSES[name]
    accepted = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    # None means "the loss's own default": one config can name any loss without overriding its
    # defaults (InfoNCE's distance, Proxy Anchor's margin) with another loss's.
    chosen = {k: v for k, v in options.items() if v is not None and (takes_any or k in accepted)}
    return builder(**chosen)


def _register_builtins() -> None:
    if _LOSSES:
        return
    from tripletkit import losses

    for name, builder in {
        "triplet": losses.BatchTripletLoss,
        "contrastive": losses.ContrastiveLoss,
        "quadruplet": losses.QuadrupletLoss,
        "proxy_nca": losses.ProxyNCALoss,
        "proxy_anchor": losses.ProxyAnchorLoss,
        "info_nce": losses.InfoNCELoss,
        "multi_similarity": losses.MultiSimilarityLoss,
        "distance_weighted_margin": losses.DistanceWeightedMarginLoss,
    }.items():
        register_loss(name, builder)
