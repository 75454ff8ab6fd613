"""Hypothesis strategies for labelled batches (with ties, duplicates and degenerate label layouts),
and small helpers shared by the tests of the loss family."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from tripletkit.errors import NoTripletsWarning


@dataclass
class Batch:
    """A labelled batch, optionally with a separate reference set."""

    x: np.ndarray
    labels: list[int]
    refs: np.ndarray | None = None
    ref_labels: list[int] | None = None
    self_ref: list[int] | None = None

    def tensors(self, dtype=torch.float64, requires_grad=False):
        """``(embeddings, labels, ref_embeddings, ref_labels, self_ref_index)`` as tensors."""
        x = torch.tensor(self.x, dtype=dtype, requires_grad=requires_grad)
        labels = torch.tensor(self.labels, dtype=torch.int64)
        if self.refs is None:
            return x, labels, None, None, None
        refs = torch.tensor(self.refs, dtype=dtype, requires_grad=requires_grad)
        ref_labels = torch.tensor(self.ref_labels, dtype=torch.int64)
        self_ref = None if self.self_ref is None else torch.tensor(self.self_ref)
        return x, labels, refs, ref_labels, self_ref

    def reference_args(self):
        """The positional arguments of the reference functions."""
        return self.x, self.labels, self.refs, self.ref_labels, self.self_ref


def _matrix(draw, rows: int, dim: int, grid: bool) -> np.ndarray:
    if grid:
        element = st.integers(-2, 2).map(float)
    else:
        element = st.floats(-2.0, 2.0, allow_nan=False, width=32)
    values = draw(st.lists(element, min_size=rows * dim, max_size=rows * dim))
    return np.array(values, dtype=np.float64).reshape(rows, dim)


@st.composite
def labelled_batches(
    draw,
    max_items: int = 8,
    max_classes: int = 4,
    grid: bool = True,
    refs: bool | None = None,
    min_dim: int = 1,
) -> Batch:
    """Random batches: 1..max_items items of up to max_classes classes (so single-class batches,
    singletons and batches without positives all occur); integer-grid embeddings give exact ties
    and duplicate rows. With ``refs`` (drawn when None) a separate reference set and a random
    ``self_ref`` (each anchor's own copy, or -1)."""
    n = draw(st.integers(1, max_items))
    dim = draw(st.integers(min_dim, 3))
    labels = draw(st.lists(st.integers(0, max_classes - 1), min_size=n, max_size=n))
    x = _matrix(draw, n, dim, grid)
    use_refs = draw(st.booleans()) if refs is None else refs
    if not use_refs:
        return Batch(x, labels)
    m = draw(st.integers(1, max_items))
    ref_labels = draw(st.lists(st.integers(0, max_classes - 1), min_size=m, max_size=m))
    ref_x = _matrix(draw, m, dim, grid)
    self_ref = draw(st.lists(st.integers(-1, m - 1), min_size=n, max_size=n))
    return Batch(x, labels, ref_x, ref_labels, self_ref)


def quietly(fn, *args, **kwargs):
    """Call ``fn``, ignoring tripletkit's "nothing to learn from" warnings (degenerate batches)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoTripletsWarning)
        return fn(*args, **kwargs)


def random_batch(
    num_classes: int, per_class: int, dim: int, seed: int = 0, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """A P×K batch of random (generic: no ties) embeddings."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_classes * per_class, dim, generator=generator, dtype=dtype)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return x, labels
