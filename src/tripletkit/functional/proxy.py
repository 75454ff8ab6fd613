"""Proxy losses: each class is represented by a learned proxy vector, and embeddings are compared
with the C proxies instead of with each other (O(B·C) instead of O(B²) pairs, no sampling needed).

Both losses compare L2-normalised embeddings with L2-normalised proxies, so only directions matter.
The ``(B, C)`` similarity matrix is dense (it is small: C classes, not M references).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tripletkit.functional.log_sum_exp import log_sum_exp_weights
from tripletkit.functional.pair_stats import PairStats, pair_stats
from tripletkit.functional.reference_set import warn_no_pairs
from tripletkit.validation import (
    check_embeddings,
    check_labels,
    check_nonnegative,
    check_positive,
    check_same_dim,
)

__all__ = ["proxy_anchor_loss", "proxy_nca_loss"]


def _checked(
    embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit embeddings and proxies in a common float dtype (float32 for half inputs), and labels."""
    embeddings = check_embeddings(embeddings, "embeddings")
    proxies = check_embeddings(proxies, "proxies")
    check_same_dim(embeddings, proxies, "embeddings", "proxies")
    labels = check_labels(labels, embeddings.shape[0], embeddings.device, "labels")
    num_classes = proxies.shape[0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must be class indices in [0, {num_classes}) for {num_classes} proxies; got "
            f"values in [{int(labels.min())}, {int(labels.max())}] (map labels to 0..C-1 first)"
        )
    dtype = torch.promote_types(torch.promote_types(embeddings.dtype, proxies.dtype), torch.float32)
    unit = F.normalize(embeddings.to(dtype), dim=1)
    unit_proxies = F.normalize(proxies.to(dtype), dim=1)
    return unit, labels, unit_proxies


def _proxy_stats(cosine: torch.Tensor, labels: torch.Tensor, distance: torch.Tensor) -> PairStats:
    """Pairs are (embedding, proxy); active: embeddings whose own proxy is not strictly nearest."""
    with torch.no_grad():
        batch, num_classes = cosine.shape
        own = cosine.gather(1, labels.unsqueeze(1)).squeeze(1)
        others = cosine.scatter(1, labels.unsqueeze(1), float("-inf"))
        misranked = int((others.amax(dim=1) >= own).sum()) if num_classes > 1 else 0
        own_distance = distance.gather(1, labels.unsqueeze(1))
        return pair_stats(
            own_distance.sum(),
            batch,
            distance.sum() - own_distance.sum(),
            batch * (num_classes - 1),
            batch,
            misranked,
        )


def proxy_nca_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    proxies: torch.Tensor,
    *,
    temperature: float = 1.0 / 9.0,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, PairStats]:
    """Proxy-NCA loss (Movshovitz-Attias et al. 2017), in the softmax form of Proxy-NCA++ (Teh et al.
    2020): ``mean_i -log softmax_c(-d(x_i, p_c) / τ)[y_i]``, with ``d = 2 - 2 cos(x_i, p_c)``, the
    squared euclidean distance between the L2-normalised embedding and proxy (a zero vector has
    cosine 0 with everything).

    The denominator includes the positive proxy (a cross-entropy over the C proxies, as
    pytorch-metric-learning's ``ProxyNCALoss``), which keeps the loss bounded below by 0.
    ``temperature=1`` is pytorch-metric-learning's default (``softmax_scale=1``); Proxy-NCA++ found
    a low temperature (1/9, the default here) much better.

    Args:
        embeddings: ``(B, D)`` float embeddings.
        labels: ``(B,)`` class indices in ``[0, C)``.
        proxies: ``(C, D)`` float proxies (a parameter of the loss module).
        temperature: τ > 0.
        return_stats: also return :class:`~tripletkit.functional.pair_stats.PairStats` over the
            (embedding, proxy) pairs; active: embeddings whose own proxy is not the nearest.

    Returns:
        The scalar loss (float32 for half-precision inputs), and the statistics if asked.

    Example:
        >>> proxies = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> embeddings = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
        >>> loss = proxy_nca_loss(embeddings, torch.tensor([0, 1]), proxies, temperature=1.0)
        >>> round(float(loss), 4)  # (log(1 + e^-2) + log 2) / 2
        0.41
    """
    temperature = check_positive(temperature, "temperature")
    unit, labels, unit_proxies = _checked(embeddings, labels, proxies)
    if unit.shape[0] == 0:
        return _empty_batch(unit, unit_proxies, return_stats)
    cosine = unit @ unit_proxies.T
    # -(2 - 2 cos) / τ up to the constant -2 / τ, to which the softmax is blind.
    loss = F.cross_entropy(cosine * (2.0 / temperature), labels)
    if not return_stats:
        return loss
    return loss, _proxy_stats(cosine, labels, 2.0 - 2.0 * cosine.detach())


def proxy_anchor_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    proxies: torch.Tensor,
    *,
    margin: float = 0.1,
    alpha: float = 32.0,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, PairStats]:
    """Proxy Anchor loss (Kim et al. 2020, "Proxy Anchor Loss for Deep Metric Learning").

    Each proxy is an anchor, and the batch its positives and negatives. With ``s`` the cosine
    similarity, δ the margin and α the scale::

        L = 1/|P+| Σ_{p ∈ P+} log(1 + Σ_{x ∈ X_p+} exp(-α (s(x, p) - δ)))
          + 1/|P|  Σ_{p ∈ P}  log(1 + Σ_{x ∈ X_p-} exp( α (s(x, p) + δ)))

    where P is every proxy, P+ the proxies with at least one positive in the batch, X_p+ the
    embeddings of p's class and X_p- the others. Computed with a masked log-sum-exp: no overflow at
    α = 32, and no NaN for proxies without positives; the gradient with respect to the
    ``(C, B)`` similarities is written in the same pass (no autograd graph over them).

    Args:
        embeddings: ``(B, D)`` float embeddings.
        labels: ``(B,)`` class indices in ``[0, C)``.
        proxies: ``(C, D)`` float proxies.
        margin: δ >= 0.
        alpha: α > 0.
        return_stats: also return :class:`~tripletkit.functional.pair_stats.PairStats` over the
            (embedding, proxy) pairs; active: embeddings whose own proxy is not the nearest.

    Returns:
        The scalar loss (float32 for half-precision inputs), and the statistics if asked.

    Example:
        >>> proxies = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> loss = proxy_anchor_loss(embeddings, torch.tensor([0, 1]), proxies, margin=0.0,
        ...                          alpha=1.0)
        >>> round(float(loss), 4)  # log(1 + e^-1) + log(1 + e^0)
        1.0064
    """
    margin = check_nonnegative(margin, "margin")
    alpha = check_positive(alpha, "alpha")
    unit, labels, unit_proxies = _checked(embeddings, labels, proxies)
    if unit.shape[0] == 0:
        return _empty_batch(unit, unit_proxies, return_stats)
    loss, similarity = _ProxyAnchor.apply(unit, unit_proxies, labels, margin, alpha)
    if not return_stats:
        return loss
    cosine = similarity.T
    return loss, _proxy_stats(cosine, labels, 1.0 - cosine)


class _ProxyAnchor(torch.autograd.Function):
    """The Proxy Anchor loss of unit embeddings and unit proxies.

    Its gradient with respect to the ``(C, B)`` similarities (softmax weights of the two
    log-sum-exps) is written in the forward pass, in the buffers of the log-sum-exps: no autograd
    graph over ``(C, B)`` intermediates, and the backward pass is two matrix products.
    """

    @staticmethod
    def forward(ctx: Any, unit, unit_proxies, labels, margin: float, alpha: float):
        similarity = unit_proxies @ unit.T
        num_classes = similarity.shape[0]
        classes = torch.arange(num_classes, device=labels.device).unsqueeze(1)
        positive = labels.unsqueeze(0) == classes
        # -α (s - δ) = -α s + αδ and α (s + δ) = α s + αδ: the constant folds into the shift.
        pos_lse, pos_weights, _ = log_sum_exp_weights(
            similarity * -alpha, positive, add_one=True, offset=alpha * margin
        )
        neg_lse, neg_weights, _ = log_sum_exp_weights(
            similarity * alpha, ~positive, add_one=True, offset=alpha * margin
        )
        # Proxies without positives have pos_lse = log(1) = 0: summing all of them is exact.
        num_with_positives = max(int(torch.bincount(labels, minlength=num_classes).gt(0).sum()), 1)
        loss = pos_lse.sum() / num_with_positives + neg_lse.sum() / num_classes
        grad = pos_weights.mul_(-alpha / num_with_positives)
        grad.add_(neg_weights, alpha=alpha / num_classes)
        ctx.save_for_backward(unit, unit_proxies, grad)
        ctx.mark_non_differentiable(similarity)
        return loss, similarity

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_similarity: torch.Tensor):
        unit, unit_proxies, grad = ctx.saved_tensors
        grad_unit = (grad.T @ unit_proxies) * grad_loss
        grad_proxies = (grad @ unit) * grad_loss
        return grad_unit, grad_proxies, None, None, None


def _empty_batch(unit: torch.Tensor, unit_proxies: torch.Tensor, return_stats: bool):
    warn_no_pairs("the batch is empty")
    zero = (unit * 0).sum() + (unit_proxies * 0).sum()
    if return_stats:
        return zero, pair_stats(zero.detach(), 0, zero.detach(), 0, 0, 0)
    return zero
