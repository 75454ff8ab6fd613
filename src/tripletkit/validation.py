"""Checks at the API boundary: each says what was wrong and what is accepted.

Every public function that takes embeddings, labels or a named choice calls these, so the same
mistake gets the same message everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "check_choice",
    "check_embeddings",
    "check_finite_distances",
    "check_labels",
    "check_nonnegative",
    "check_positive",
    "check_same_dim",
    "check_texts",
]


def check_embeddings(x: Any, name: str = "embeddings") -> torch.Tensor:
    """Return ``x`` as a 2-D floating tensor, or raise ``ValueError``/``TypeError``.

    Rejects non-tensors, integer dtypes, wrong rank, and NaN/Inf values (saying how many rows).

    >>> check_embeddings(torch.zeros(4, 3)).shape
    torch.Size([4, 3])
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D); got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected a 2-D tensor (N, D)")
    if not x.is_floating_point():
        raise ValueError(f"{name} has dtype {x.dtype}; expected a floating dtype")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; the embedding dimension D is 0")
    finite = torch.isfinite(x.detach())
    if not bool(finite.all()):
        bad_rows = torch.nonzero(~finite.all(dim=1)).flatten()
        first = ", ".join(str(int(i)) for i in bad_rows[:5])
        more = ", ..." if bad_rows.numel() > 5 else ""
        raise ValueError(
            f"{name} has {bad_rows.numel()} of {x.shape[0]} rows containing NaN or Inf "
            f"(rows {first}{more}); check the model output (learning rate, mixed precision)"
        )
    return x


def check_labels(labels: Any, n: int, device: torch.device, name: str = "labels") -> torch.Tensor:
    """Return ``labels`` as a 1-D int64 tensor of length ``n`` on ``device``, or raise ``ValueError``.

    Lists and numpy arrays of integers are accepted and converted.

    >>> check_labels([0, 1, 1], 3, torch.device("cpu"))
    tensor([0, 1, 1])
    """
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{name} must be a 1-D tensor of {n} integer labels; got {type(labels).__name__}"
            ) from err
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{name} has shape {tuple(labels.shape)}; expected a 1-D tensor of {n} integer labels"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"{name} has dtype {labels.dtype}; expected integer class labels "
            "(map strings or floats to integers first)"
        )
    return labels.to(device=device, dtype=torch.int64)


def check_same_dim(x: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str) -> None:
    """Raise ``ValueError`` unless ``x`` and ``y`` have the same number of columns and device."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{x_name} has dimension {x.shape[1]} but {y_name} has dimension {y.shape[1]}; "
            "they must match"
        )
    if x.device != y.device:
        raise ValueError(f"{x_name} is on {x.device} but {y_name} is on {y.device}")


def check_choice(value: Any, accepted: Iterable[str], name: str) -> str:
    """Return ``value`` if it is one of ``accepted``; otherwise raise ``ValueError`` listing them.

    >>> check_choice("hard", ("all", "hard"), "mining")
    'hard'
    """
    accepted = tuple(accepted)
    if value not in accepted:
        listed = ", ".join(repr(a) for a in accepted)
        raise ValueError(f"unknown {name} {value!r}; accepted: {listed}")
    return value


def check_nonnegative(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a finite number >= 0; otherwise raise ``ValueError``."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number >= 0; got {value!r}") from err
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return number


def check_finite_distances(values: torch.Tensor, what: str = "distances") -> None:
    """Raise ``ValueError`` if distances overflowed (finite embeddings, infinite distances).

    Squared distances of float32 embeddings with entries above ~1e19 exceed float32's range; the
    loss would be Inf or NaN. Callers pass a reduction of the distances (a sum is enough: it is
    finite exactly when every term is).
    """
    if not bool(torch.isfinite(values).all()):
        raise ValueError(
            f"{what} overflowed to Inf/NaN although the embeddings are finite: their magnitude is "
            "too large for the dtype. L2-normalise the embeddings (or compute in float64)."
        )


def check_positive(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a finite number > 0; otherwise raise ``ValueError``.

    >>> check_positive(0.05, "temperature")
    0.05
    """
    number = check_nonnegative(value, name)
    if number == 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return number


def check_texts(values: Any, name: str) -> list[str]:
    """``values`` as a list of strings; ``TypeError`` naming the first non-string (or for one
    string where a list was meant).

    >>> check_texts(("a", "b"), "queries")
    ['a', 'b']
    """
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of strings, not one string")
    values = list(values)
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise TypeError(
            f"{name}[{bad[0]}] is {type(values[bad[0]]).__name__}; expected strings "
            f"({len(bad)} non-string values)"
        )
    return values
