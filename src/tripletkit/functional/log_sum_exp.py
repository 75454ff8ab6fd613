"""Masked log-sum-exp and its gradient, the smooth maximum behind InfoNCE, multi-similarity and
Proxy Anchor, computed without autograd (the losses write their gradients themselves)."""

from __future__ import annotations

import torch

__all__ = ["log_sum_exp_weights"]


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
