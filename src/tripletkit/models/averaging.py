"""Weight averaging of fine-tuned models ("model soups", Wortsman et al., ICML 2022).

Models fine-tuned from the same starting weights with different seeds (or hyper-parameters) tend
to lie in one basin of the loss, so the average of their weights is itself a good model, often
better than each member, at the inference cost of one model. Averaging models trained from
different random initialisations does not work (their units are not aligned); the members must
share a starting point, e.g. the same pretrained encoder.

>>> import copy, torch
>>> from tripletkit.models import average_models, create_model
>>> first = create_model("mlp", in_features=4, embedding_dim=2)
>>> second = copy.deepcopy(first)
>>> with torch.no_grad():
...     _ = [p.add_(1.0) for p in second.parameters()]
>>> soup = average_models([first, second])
>>> w0, w1, ws = (next(m.parameters()) for m in (first, second, soup))
>>> torch.allclose(ws, (w0 + w1) / 2)
True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch

__all__ = ["average_models"]


def average_models(
    models: Sequence[torch.nn.Module], weights: Sequence[float] | None = None
) -> torch.nn.Module:
    """A new model whose weights are the (weighted) mean of ``models``' weights.

    θ_soup = Σ_i w_i θ_i / Σ_i w_i for every floating-point entry of the state dict (parameters and
    float buffers such as batch-norm running statistics), computed in float64 and stored in each
    entry's own dtype. Integer buffers (e.g. batch-norm's ``num_batches_tracked``) are taken from
    the first model. The inputs are left unchanged; the result is a deep copy of ``models[0]``
    (same class, config and projector) in evaluation mode.

    Args:
        models: one or more models of the same architecture (identical state-dict names and
            shapes), fine-tuned from the same starting weights.
        weights: one non-negative weight per model, not all zero (default: uniform).

    Returns:
        The averaged model.

    Raises:
        ValueError: no models, a weight count that does not match, a negative or non-finite
            weight, weights summing to zero, or models whose state dicts differ in names or shapes
            (the message names the first mismatching entry).
    """
    models = list(models)
    if not models:
        raise ValueError("average_models needs at least one model; got none")
    if weights is None:
        weights = [1.0] * len(models)
    weights = [float(w) for w in weights]
    if len(weights) != len(models):
        raise ValueError(f"got {len(weights)} weights for {len(models)} models; expected one each")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and non-negative; got {weights}")
    total = sum(weights)
    if total <= 0:
        raise ValueError(f"weights sum to {total}; at least one must be positive")

    states = [model.state_dict() for model in models]
    reference = states[0]
    for index, state in enumerate(states[1:], start=1):
        missing = sorted(set(reference) - set(state))
        extra = sorted(set(state) - set(reference))
        if missing or extra:
            name = (missing or extra)[0]
            where = "missing from" if missing else "only in"
            raise ValueError(
                f"models[{index}] has a different architecture: state entry {name!r} is {where} "
                f"models[{index}] (compared with models[0])"
            )
        for name, tensor in reference.items():
            if state[name].shape != tensor.shape:
                raise ValueError(
                    f"models[{index}] has a different architecture: state entry {name!r} has "
                    f"shape {tuple(state[name].shape)}, models[0] has {tuple(tensor.shape)}"
                )

    averaged: dict[str, torch.Tensor] = {}
    for name, tensor in reference.items():
        if not tensor.is_floating_point():
            averaged[name] = tensor.clone()
            continue
        accumulator = torch.zeros(tensor.shape, dtype=torch.float64, device=tensor.device)
        for weight, state in zip(weights, states, strict=True):
            if weight:
                accumulator += state[name].detach().to(tensor.device, torch.float64) * weight
        averaged[name] = (accumulator / total).to(tensor.dtype)

    soup = copy.deepcopy(models[0])
    soup.load_state_dict(averaged)
    return soup.eval()
