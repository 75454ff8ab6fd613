"""A starting margin from the distances a model produces before training.

**The rule.** A triplet ``(a, p, n)`` is *active* (it has a loss and a gradient) when
``d(a, p) + α > d(a, n)``, i.e. when its *gap* ``g = d(a, n) - d(a, p)`` is below the margin α. So
the fraction of triplets a margin makes active is the cumulative distribution of the gaps at α, and
the margin that makes a fraction ``q`` of them active is the ``q``-quantile of the gaps:

    α = clip(quantile_q(d(a, n) - d(a, p)), lower, upper)

measured on the embeddings of the model that is about to be trained (random or pretrained weights),
over every valid triplet of a sample of the training data (a uniform sample of triplets when there
are too many). With ``q = 0.75`` (the default) three quarters of the triplets start active:

* a margin far below that (nearly every gap already above α) leaves almost nothing to learn from:
  the loss is 0 for most triplets from the first step, and semi-hard mining finds no negatives
  inside the window ``d_ap < d_an < d_ap + α``;
* a margin far above it (every triplet active, by a lot) makes the loss ≈ α + d_ap - d_an for all of
  them, so the gradient is dominated by pushing *every* negative away rather than by the triplets
  that are wrong; on the unit sphere that cannot be satisfied, the loss stalls near α and the
  embeddings spread out or collapse (see ``docs/margin.md``).

The quantile adapts to the model's scale: a random network maps everything close together (small
gaps, a small margin), a pretrained one already separates the classes (larger gaps). The clip keeps
the result within what the distance can express. For L2-normalised embeddings (and for ``cosine``
always) the distance lies in a fixed range of width ``W`` (:func:`tripletkit.distances.unit_sphere_range`:
4 for squared euclidean, 2 for euclidean, cosine and dot); ``lower = W / 200`` and ``upper = W / 4``
(1.0 for squared euclidean: negatives of a well-spread embedding sit near d = 2, so α = 1 still lets
positives keep a spread of up to 60°). For embeddings that are not normalised ``W`` is the
99th percentile of the observed pair distances.

The suggestion is a starting point for :func:`tripletkit.tuning.tune_margin`, which searches a grid
around it (:meth:`MarginSuggestion.grid`) with short training runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from tripletkit.distances import METRICS, pairwise_distances, unit_sphere_range
from tripletkit.models.embedding import uses_projector
from tripletkit.validation import check_choice, check_embeddings, check_labels

__all__ = [
    "DEFAULT_TARGET_ACTIVE_FRACTION",
    "MarginSuggestion",
    "margin_bounds",
    "suggest_margin",
    "suggest_margin_for_config",
    "suggest_margin_from_embeddings",
    "triplet_gaps",
]

#: The fraction of triplets the suggested margin makes active at the start of training.
DEFAULT_TARGET_ACTIVE_FRACTION = 0.75

# The clip of the suggestion, as fractions of the width of the distance's range.
_LOWER_FRACTION = 1 / 200
_UPPER_FRACTION = 1 / 4
_UNIT_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class MarginSuggestion:
    """A proposed margin and the measurements behind it.

    Attributes:
        margin: the suggested α.
        distance: the metric the gaps were measured with.
        target_active_fraction: ``q``, the fraction of triplets asked to be active.
        quantile_gap: the ``q``-quantile of the gaps, before clipping.
        lower, upper: the clip (see the module docstring).
        clipped: ``"lower"``, ``"upper"`` or None.
        active_fraction: the fraction of the measured triplets active at ``margin``.
        gap_quantiles: the 5/25/50/75/95 % quantiles of ``d_an - d_ap``.
        mean_positive_distance, mean_negative_distance: over the measured triplets.
        num_items: embeddings measured; num_triplets: triplets measured; exact: all triplets
            (True) or a uniform sample of them.
        range_width: ``W``; unit_norm: whether the embeddings were L2-normalised.
    """

    margin: float
    distance: str
    target_active_fraction: float
    quantile_gap: float
    lower: float
    upper: float
    clipped: str | None
    active_fraction: float
    gap_quantiles: dict[str, float]
    mean_positive_distance: float
    mean_negative_distance: float
    num_items: int
    num_triplets: int
    exact: bool
    range_width: float
    unit_norm: bool

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form."""
        return asdict(self)

    def grid(self, factors: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)) -> list[float]:
        """Margins around the suggestion (``margin × factor``), kept inside ``[lower, upper]``,
        rounded to 3 significant digits and without repeats: a grid for ``tune_margin``.

        The default factors reach far above the suggestion: for a randomly initialised network
        (everything embedded close together) the suggestion is a lower bound; in the measurements
        of ``docs/margin.md`` the best margin was 4× to 16× the suggestion.

        >>> MarginSuggestion(0.2, "squared_euclidean", 0.75, 0.2, 0.02, 1.0, None, 0.75, {},
        ...                  0.5, 0.7, 100, 1000, True, 4.0, True).grid()
        [0.1, 0.2, 0.4, 0.8, 1.0]
        """
        margins = []
        for factor in factors:
            value = float(f"{min(max(self.margin * factor, self.lower), self.upper):.3g}")
            if value not in margins:
                margins.append(value)
        return sorted(margins)

    def summary(self) -> str:
        """One paragraph for people: the margin, why, and what the gaps look like."""
        quantiles = ", ".join(f"{k} {v:+.4f}" for k, v in self.gap_quantiles.items())
        clip = f" (clipped to the {self.clipped} bound)" if self.clipped else ""
        how = "all" if self.exact else "a uniform sample of"
        return (
            f"suggested margin {self.margin:.4g} for {self.distance}{clip}: the "
            f"{100 * self.target_active_fraction:.0f}% quantile of d(a,n) - d(a,p) is "
            f"{self.quantile_gap:+.4f}; {100 * self.active_fraction:.0f}% of the triplets are "
            f"active at this margin.\n"
            f"measured on {how} {self.num_triplets} triplets of {self.num_items} embeddings: "
            f"mean d(a,p) {self.mean_positive_distance:.4f}, mean d(a,n) "
            f"{self.mean_negative_distance:.4f}; gap quantiles {quantiles}.\n"
            f"bounds [{self.lower:.4g}, {self.upper:.4g}] (range width {self.range_width:g}"
            f"{', unit-norm embeddings' if self.unit_norm else ', from the observed distances'})."
        )


def margin_bounds(distance: str, range_width: float) -> tuple[float, float]:
    """``(lower, upper)`` clip of a suggested margin for a distance range of width ``range_width``.

    >>> margin_bounds("squared_euclidean", 4.0)
    (0.02, 1.0)
    """
    check_choice(distance, METRICS, "distance")
    return range_width * _LOWER_FRACTION, range_width * _UPPER_FRACTION


def _triplet_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item: number of positives (same label, itself excluded) and of negatives."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    same = counts[inverse]
    return same - 1, labels.shape[0] - same


def triplet_gaps(
    embeddings: torch.Tensor,
    labels: Any,
    distance: str = "squared_euclidean",
    *,
    max_triplets: int = 1_000_000,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """``d(a, p)``, ``d(a, n)`` and the gap ``d(a, n) - d(a, p)`` of every valid triplet.

    A valid triplet has ``a != p``, ``label[a] == label[p]`` and ``label[n] != label[a]``. When there
    are more than ``max_triplets``, that many are drawn uniformly (with replacement) from all valid
    triplets instead, with ``seed``.

    Args:
        embeddings: ``(N, D)`` float; labels: ``(N,)`` int.

    Returns:
        ``(positive_distances, negative_distances, gaps, exact)``: three ``(T,)`` float tensors and
        whether they hold every triplet.

    >>> x = torch.tensor([[0.0], [1.0], [3.0]])
    >>> d_ap, d_an, gaps, exact = triplet_gaps(x, [0, 0, 1], "euclidean")
    >>> gaps.tolist(), exact
    ([2.0, 1.0], True)
    """
    embeddings = check_embeddings(embeddings, "embeddings")
    labels = check_labels(labels, embeddings.shape[0], torch.device("cpu")).numpy()
    check_choice(distance, METRICS, "distance")
    positives, negatives = _triplet_counts(labels)
    per_anchor = positives.astype(np.int64) * negatives.astype(np.int64)
    total = int(per_anchor.sum())
    if total == 0:
        raise ValueError(
            "no valid triplet: need at least one class with two items and a second class "
            f"(got {embeddings.shape[0]} items in {np.unique(labels).size} classes)"
        )
    dist = pairwise_distances(embeddings.detach().cpu(), metric=distance)
    labels_t = torch.from_numpy(labels)
    if total <= max_triplets:
        d_ap_parts, d_an_parts = [], []
        for anchor in np.flatnonzero(per_anchor):
            same = labels_t == labels_t[anchor]
            same[anchor] = False
            row = dist[anchor]
            d_ap = row[same]
            d_an = row[labels_t != labels_t[anchor]]
            d_ap_parts.append(d_ap.repeat_interleave(d_an.shape[0]))
            d_an_parts.append(d_an.repeat(d_ap.shape[0]))
        d_ap_all, d_an_all = torch.cat(d_ap_parts), torch.cat(d_an_parts)
        return d_ap_all, d_an_all, d_an_all - d_ap_all, True
    rng = np.random.default_rng(seed)
    # Each triplet equally likely: the anchor with probability ∝ its number of triplets, then a
    # positive and a negative uniformly among the anchor's.
    anchors = rng.choice(labels.shape[0], size=max_triplets, p=per_anchor / total)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    block_start = np.searchsorted(sorted_labels, labels, side="left")
    block_size = positives + 1
    rank_in_block = np.empty_like(order)
    rank_in_block[order] = np.arange(order.shape[0]) - block_start[order]
    a_start, a_size = block_start[anchors], block_size[anchors]
    pick = rng.integers(0, a_size - 1)  # a positive: any other member of the anchor's block
    pick = pick + (pick >= rank_in_block[anchors])
    positive_items = order[a_start + pick]
    pick = rng.integers(0, labels.shape[0] - a_size)  # a negative: any item outside the block
    pick = pick + np.where(pick >= a_start, a_size, 0)
    negative_items = order[pick]
    a = torch.from_numpy(anchors)
    d_ap = dist[a, torch.from_numpy(positive_items)]
    d_an = dist[a, torch.from_numpy(negative_items)]
    return d_ap, d_an, d_an - d_ap, False


def suggest_margin_from_embeddings(
    embeddings: torch.Tensor,
    labels: Any,
    distance: str = "squared_euclidean",
    *,
    target_active_fraction: float = DEFAULT_TARGET_ACTIVE_FRACTION,
    max_triplets: int = 1_000_000,
    seed: int = 0,
) -> MarginSuggestion:
    """The margin rule of the module docstring applied to given embeddings.

    Args:
        embeddings: ``(N, D)`` float, what the loss will see (normalised or not).
        labels: ``(N,)`` int.
        distance: the loss's metric, one of ``tripletkit.distances.METRICS``.
        target_active_fraction: ``q`` in (0, 1).
        max_triplets: measure at most this many triplets (a uniform sample beyond it).
        seed: the sampling seed.

    Example:
        Two classes on the unit circle, every positive pair at squared distance 1 and the
        negatives at 3 or 4: the gaps are 2 and 3, half each; asking a quarter of the triplets to
        be active gives 2, which the upper bound (4 / 4 = 1) clips to 1.

        >>> import math
        >>> c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
        >>> x = torch.tensor([[c, s], [c, -s], [-c, s], [-c, -s]])
        >>> found = suggest_margin_from_embeddings(x, [0, 0, 1, 1], target_active_fraction=0.25)
        >>> round(found.quantile_gap, 4), found.margin, found.clipped
        (2.0, 1.0, 'upper')
    """
    if not isinstance(target_active_fraction, (int, float)) or not (0 < target_active_fraction < 1):
        raise ValueError(
            f"target_active_fraction must be a number in (0, 1); got {target_active_fraction!r}"
        )
    d_ap, d_an, gaps, exact = triplet_gaps(
        embeddings, labels, distance, max_triplets=max_triplets, seed=seed
    )
    norms = embeddings.detach().float().norm(dim=1)
    unit_norm = bool(((norms - 1).abs() <= _UNIT_NORM_TOLERANCE).all())
    if unit_norm or distance == "cosine":
        low, high = unit_sphere_range(distance)
        width = high - low
    else:
        pair_distances = torch.cat([d_ap, d_an])
        spread = pair_distances - (pair_distances.min() if distance == "dot" else 0.0)
        width = float(torch.quantile(spread, 0.99))
        if not width > 0:
            raise ValueError(
                "every measured distance is 0: the model maps all items to one point; a margin "
                "cannot be suggested (check the model and its input normalisation)"
            )
    lower, upper = margin_bounds(distance, width)
    gaps64 = gaps.double()
    quantile_gap = float(torch.quantile(gaps64, float(target_active_fraction)))
    margin = min(max(quantile_gap, lower), upper)
    clipped = "lower" if quantile_gap < lower else "upper" if quantile_gap > upper else None
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    values = torch.quantile(gaps64, torch.tensor(levels, dtype=torch.float64))
    return MarginSuggestion(
        margin=float(margin),
        distance=distance,
        target_active_fraction=float(target_active_fraction),
        quantile_gap=quantile_gap,
        lower=float(lower),
        upper=float(upper),
        clipped=clipped,
        active_fraction=float((gaps < margin).double().mean()),
        gap_quantiles={
            f"q{round(100 * q):02d}": float(v) for q, v in zip(levels, values, strict=True)
        },
        mean_positive_distance=float(d_ap.double().mean()),
        mean_negative_distance=float(d_an.double().mean()),
        num_items=int(embeddings.shape[0]),
        num_triplets=int(gaps.shape[0]),
        exact=exact,
        range_width=float(width),
        unit_norm=unit_norm,
    )


def _embed(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    collate: Callable | None,
) -> torch.Tensor:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate
    )
    if hasattr(model, "embed"):
        # The margin applies to what the loss sees: the projector's output when there is one.
        if uses_projector(model):
            return model.embed(loader, project=True)
        return model.embed(loader)
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outputs = []
    try:
        with torch.no_grad():
            for inputs, _ in loader:
                if isinstance(inputs, torch.Tensor):
                    inputs = inputs.to(device)
                outputs.append(model(inputs).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs)


def suggest_margin(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    distance: str = "squared_euclidean",
    *,
    target_active_fraction: float = DEFAULT_TARGET_ACTIVE_FRACTION,
    max_items: int = 2000,
    max_triplets: int = 1_000_000,
    batch_size: int = 256,
    collate: Callable | None = None,
    seed: int = 0,
) -> MarginSuggestion:
    """Propose a starting margin for training ``model`` on ``dataset`` (see the module docstring).

    Args:
        model: the embedding model as it is before training (random or pretrained weights);
            called in eval mode without gradients (``model.embed`` when it has one).
        dataset: ``(input, label)`` items exposing ``labels`` (the training data).
        distance: the loss's metric: ``squared_euclidean``, ``euclidean``, ``cosine`` or ``dot``.
        target_active_fraction: the fraction of triplets the margin should make active.
        max_items: embed at most this many items (a seeded random subset).
        max_triplets, seed: see :func:`suggest_margin_from_embeddings`.
        batch_size, collate: how the items are batched for the model.

    Returns:
        A :class:`MarginSuggestion` (``.margin``, ``.summary()``, ``.grid()``).

    Example:
        >>> from tripletkit.data import FeatureDataset
        >>> from tripletkit.models import create_model
        >>> torch.manual_seed(0) and None
        >>> data = FeatureDataset(torch.randn(60, 8), torch.arange(6).repeat_interleave(10))
        >>> model = create_model("mlp", in_features=8, embedding_dim=4)
        >>> found = suggest_margin(model, data, "squared_euclidean")
        >>> found.lower <= found.margin <= found.upper
        True
    """
    check_choice(distance, METRICS, "distance")
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise ValueError("the dataset must expose `labels` (one int label per item)")
    labels = np.asarray(labels)
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 3:
        raise ValueError(f"max_items must be an integer >= 3; got {max_items!r}")
    index = np.arange(labels.shape[0])
    if labels.shape[0] > max_items:
        index = np.sort(np.random.default_rng(seed).choice(index, max_items, replace=False))
    subset = torch.utils.data.Subset(dataset, index.tolist())
    embeddings = _embed(model, subset, batch_size, collate)
    return suggest_margin_from_embeddings(
        embeddings,
        torch.as_tensor(labels[index]),
        distance,
        target_active_fraction=target_active_fraction,
        max_triplets=max_triplets,
        seed=seed,
    )


def suggest_margin_for_config(
    config: Any,
    distance: str | None = None,
    *,
    target_active_fraction: float = DEFAULT_TARGET_ACTIVE_FRACTION,
    max_items: int = 2000,
) -> MarginSuggestion:
    """:func:`suggest_margin` for the model and training data of a
    :class:`~tripletkit.training.config.RunConfig`, built exactly as ``train(config)`` builds them
    (same seed, so the same initial weights; pretrained weights where the config asks for them).

    ``distance`` None takes the config's ``loss.distance`` (the triplet default when unset).
    """
    from tripletkit.training.build import DEFAULT_TRIPLET_RECIPE, build_run
    from tripletkit.training.trainer import seed_everything

    seed_everything(config.train.seed)
    built = build_run(config)
    return suggest_margin(
        built.model,
        built.data.train,
        distance or config.loss.distance or DEFAULT_TRIPLET_RECIPE["distance"],
        target_active_fraction=target_active_fraction,
        max_items=max_items,
        collate=built.data.collate,
        seed=config.train.seed,
    )
