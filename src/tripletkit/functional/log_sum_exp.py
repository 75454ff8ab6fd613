"""Masked log-sum-exp, the smooth maximum behind InfoNCE, multi-similarity and Proxy Anchor."""

from __future__ import annotations

import torch

__all__ = ["masked_logsumexp"]


def masked_logsumexp(
    x: torch.Tensor, mask: torch.Tensor, dim: int, add_one: bool = False
) -> torch.Tensor:
    """``log Σ_{mask} exp(x)`` along ``dim``, or ``log(1 + Σ_{mask} exp(x))`` with ``add_one``.

    Stable for any magnitude (the maximum is factored out), and with finite gradients everywhere:
    an empty selection gives ``-inf`` (or ``0`` with ``add_one``) and a zero gradient, where
    ``torch.logsumexp`` over ``-inf`` entries would give NaN gradients.

    Args:
        x: float tensor.
        mask: boolean tensor of ``x``'s shape; the entries to sum.
        dim: the dimension to reduce.
        add_one: include the constant term ``exp(0) = 1`` (the "log(1 + ...)" of the
            multi-similarity and Proxy Anchor losses).

    Returns:
        ``x`` reduced over ``dim``.

    >>> x = torch.tensor([[0.0, 1000.0], [5.0, 5.0]])
    >>> masked_logsumexp(x, torch.tensor([[True, True], [False, False]]), dim=1)
    tensor([1000.,  -inf])
    >>> masked_logsumexp(x, torch.tensor([[True, False], [False, False]]), dim=1, add_one=True)
    tensor([0.6931, 0.0000])
    """
    masked = x.masked_fill(~mask, float("-inf"))
    peak = masked.amax(dim=dim, keepdim=True).detach()
    if add_one:
        peak = peak.clamp_min(0.0)
    else:
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.exp(masked - peak).sum(dim=dim, keepdim=True)
    if add_one:
        total = total + torch.exp(-peak)
        return (peak + torch.log(total)).squeeze(dim)
    empty = total <= 0
    result = peak + torch.log(torch.where(empty, torch.ones_like(total), total))
    return torch.where(empty, torch.full_like(result, float("-inf")), result).squeeze(dim)
