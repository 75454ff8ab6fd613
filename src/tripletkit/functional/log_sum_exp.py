"""Masked log-sum-exp, the smooth maximum behind InfoNCE, multi-similarity and Proxy Anchor."""

from __future__ import annotations

import torch

__all__ = ["log_sum_exp_weights", "masked_logsumexp"]


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


def log_sum_exp_weights(
    x: torch.Tensor, mask: torch.Tensor, add_one: bool = False, offset: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row-wise log-sum-exp of the masked entries and its gradient, without autograd.

    For a ``(B, M)`` ``x`` and a constant ``c = offset``: ``T = log Σ_{mask} exp(x + c)`` per row
    (``log(1 + Σ ...)`` with ``add_one``), the weights ``exp(x + c - T)`` on the mask and 0
    elsewhere (``∂T/∂x``, a softmax), and the row maxima of ``x`` over the mask (``-inf`` for an
    empty row). An empty row has ``T = -inf`` (0 with ``add_one``) and zero weights. The constant
    never touches ``x``: it folds into each row's shift.

    ``x`` is overwritten (it becomes the weights): callers pass a temporary, so that the whole
    computation is six passes over ``x`` and no ``(B, M)`` allocation.

    >>> T, w, peak = log_sum_exp_weights(torch.tensor([[0.0, 0.0, 9.0]]),
    ...                                  torch.tensor([[True, True, False]]))
    >>> round(float(T), 4), w.tolist(), float(peak)
    (0.6931, [[0.5, 0.5, 0.0]], 0.0)
    """
    weights = x.masked_fill_(~mask, float("-inf"))
    peak = weights.amax(dim=1, keepdim=True)
    # shift: the largest exponent, over the entries (and the constant term 0 with add_one); 0 for
    # an empty row.
    shift = peak + offset
    if add_one:
        shift = shift.clamp_min(0.0)
    shift = torch.where(torch.isfinite(peak), shift, 0.0)
    weights.sub_(shift - offset).exp_()
    total = weights.sum(dim=1, keepdim=True)
    if add_one:
        total = total + torch.exp(-shift)
    nonempty = total > 0
    safe_total = torch.where(nonempty, total, torch.ones_like(total))
    log_total = torch.where(nonempty, shift + torch.log(safe_total), float("-inf"))
    weights.mul_(1.0 / safe_total)
    return log_total.squeeze(1), weights, peak.squeeze(1)
