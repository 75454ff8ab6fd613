"""Verification metrics: is pair ``(a, b)`` the same identity? ROC, AUC, EER, TAR@FAR, LFW accuracy.

Face, signature and pair verification decide "same" when a pair's *score* passes a threshold.
Scores are "higher means more likely the same" (a similarity, a classifier's logit); tripletkit's
distances are "smaller means closer", so every function here takes either ``scores=`` or
``distances=`` and reports thresholds in the units it was given:

* ``scores``: a pair is accepted as "same" when ``score >= threshold``;
* ``distances``: a pair is accepted as "same" when ``distance <= threshold``.

Definitions, for a threshold ``t`` (``P`` same-pairs, ``N`` different-pairs):

* TAR (true accept rate, TPR) = accepted same-pairs / ``P``; FAR (false accept rate, FPR) =
  accepted different-pairs / ``N``; FRR = 1 - TAR.
* The ROC curve has one point per distinct score (thresholds descending, the first ``+inf``,
  accepting nothing), exactly scikit-learn's ``roc_curve(..., drop_intermediate=False)``; the AUC
  is its trapezoidal area (scikit-learn's ``roc_auc_score``).
* EER: the FAR where FAR = FRR, linearly interpolated between the two ROC points around the
  crossing.
* TAR@FAR=f: the highest TAR among ROC points with FAR <= f (no interpolation), at the loosest
  threshold that keeps FAR <= f. With ``N`` different-pairs, FAR moves in steps of ``1/N``: FAR
  targets below ``1/N`` can only be met with FAR = 0 (``num_different`` is reported).
* LFW accuracy (Huang et al., 2007, "unrestricted" protocol): pairs are split into 10 folds; for
  each fold the threshold that maximises accuracy on the other nine is applied to it; the mean and
  standard deviation of the ten accuracies are reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tripletkit.distances import Metric, indexed_paired_distances
from tripletkit.evaluation.search import as_embeddings
from tripletkit.validation import check_labels

__all__ = [
    "DEFAULT_FAR_TARGETS",
    "LfwAccuracy",
    "RocCurve",
    "Threshold",
    "VerificationEvaluation",
    "equal_error_rate",
    "evaluate_verification",
    "evaluate_verification_from_labels",
    "lfw_accuracy",
    "roc_curve",
    "sample_verification_pairs",
    "suggest_threshold",
    "tar_at_far",
]

#: The FAR operating points reported when none are given.
DEFAULT_FAR_TARGETS: tuple[float, ...] = (1e-2, 1e-3, 1e-4)


@dataclass(frozen=True)
class RocCurve:
    """A ROC curve, one point per threshold.

    Attributes:
        far: ``(T,)`` false accept rates (FPR), non-decreasing.
        tar: ``(T,)`` true accept rates (TPR), non-decreasing.
        thresholds: ``(T,)`` in the caller's units (scores descending from ``+inf``, or distances
            ascending from ``-inf``).
        higher_is_same: True for scores, False for distances.
        num_same: number of same-pairs ``P``; num_different: number of different-pairs ``N``.
    """

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    higher_is_same: bool
    num_same: int
    num_different: int

    @property
    def auc(self) -> float:
        """Area under the curve (trapezoidal rule)."""
        return float(np.sum(np.diff(self.far) * (self.tar[1:] + self.tar[:-1])) / 2.0)


@dataclass(frozen=True)
class Threshold:
    """An operating point: accept a pair as "same" when its value passes ``value`` (see ``rule``).

    Attributes:
        value: the threshold, in the caller's units.
        far: false accept rate at it; tar: true accept rate at it.
        rule: ``"score >= value"`` or ``"distance <= value"``.
    """

    value: float
    far: float
    tar: float
    rule: str


@dataclass(frozen=True)
class LfwAccuracy:
    """The LFW protocol's cross-validated accuracy.

    Attributes:
        mean: mean accuracy over the folds; std: their standard deviation (population, ddof=0,
            as the LFW reference results report it).
        fold_accuracies: ``(F,)``; fold_thresholds: ``(F,)`` threshold chosen on the other folds,
            in the caller's units.
    """

    mean: float
    std: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray


@dataclass(frozen=True)
class VerificationEvaluation:
    """Everything a verification evaluation measured.

    Attributes:
        metrics: flat ``{name: value}``: ``auc``, ``eer``, ``tar_at_far_<f>`` (e.g.
            ``tar_at_far_0.001``), ``lfw_accuracy``, ``lfw_accuracy_std``, ``num_same``,
            ``num_different``.
        roc: the :class:`RocCurve` (for plotting).
        lfw: the :class:`LfwAccuracy` with per-fold values.
        thresholds: ``{far target: Threshold}`` for each requested FAR.
    """

    metrics: dict[str, float]
    roc: RocCurve = field(repr=False)
    lfw: LfwAccuracy = field(repr=False)
    thresholds: dict[float, Threshold] = field(repr=False)


def _as_1d_float(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1 or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ValueError(
            f"{name} has shape {array.shape} and dtype {array.dtype}; expected a 1-D array of "
            "numbers, one per pair"
        )
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has {int((~np.isfinite(array)).sum())} NaN or Inf values")
    return array


def _scores_and_labels(
    same: Any, scores: Any, distances: Any
) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(scores as higher-is-same, same as bool, higher_is_same of the caller's units)``."""
    if (scores is None) == (distances is None):
        raise ValueError("pass exactly one of scores= (higher means same) or distances=")
    values = _as_1d_float(
        scores if scores is not None else distances, "scores" if scores is not None else "distances"
    )
    if isinstance(same, torch.Tensor):
        same = same.detach().cpu().numpy()
    same = np.asarray(same)
    if same.shape != values.shape:
        raise ValueError(
            f"same has shape {same.shape} but there are {values.shape[0]} pairs; expected one "
            "bool (or 0/1) per pair"
        )
    if same.dtype != np.bool_:
        if not np.isin(same, (0, 1)).all():
            raise ValueError("same must hold booleans or 0/1 (1 = the pair is the same identity)")
        same = same.astype(bool)
    if not same.any() or same.all():
        raise ValueError(
            f"verification needs both same and different pairs; got {int(same.sum())} same and "
            f"{int((~same).sum())} different"
        )
    higher_is_same = scores is not None
    return (values if higher_is_same else -values), same, higher_is_same


def _to_caller_units(score_thresholds: np.ndarray, higher_is_same: bool) -> np.ndarray:
    return score_thresholds if higher_is_same else -score_thresholds


def _roc_from_scores(scores: np.ndarray, same: np.ndarray, higher_is_same: bool) -> RocCurve:
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_same = same[order]
    # The last position of each run of equal scores: a threshold there accepts the whole run.
    run_ends = np.flatnonzero(np.diff(sorted_scores) != 0)
    run_ends = np.append(run_ends, sorted_scores.size - 1)
    accepted_same = np.cumsum(sorted_same)[run_ends]
    accepted_different = (run_ends + 1) - accepted_same
    num_same = int(same.sum())
    num_different = int(same.size - num_same)
    tar = np.concatenate([[0.0], accepted_same / num_same])
    far = np.concatenate([[0.0], accepted_different / num_different])
    thresholds = np.concatenate([[np.inf], sorted_scores[run_ends]])
    return RocCurve(
        far,
        tar,
        _to_caller_units(thresholds, higher_is_same),
        higher_is_same,
        num_same,
        num_different,
    )


def roc_curve(same: Any, *, scores: Any = None, distances: Any = None) -> RocCurve:
    """The ROC curve of scored pairs (one point per distinct value; see the module docstring).

    Args:
        same: ``(P,)`` bool (or 0/1): whether pair ``i`` is the same identity.
        scores: ``(P,)`` higher means same; or ``distances``: ``(P,)`` smaller means same.

    >>> curve = roc_curve([True, False, True, False], scores=[0.9, 0.8, 0.4, 0.1])
    >>> curve.tar.tolist(), curve.far.tolist(), curve.auc
    ([0.0, 0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5, 1.0], 0.75)
    """
    values, same_bool, higher_is_same = _scores_and_labels(same, scores, distances)
    return _roc_from_scores(values, same_bool, higher_is_same)


def equal_error_rate(curve: RocCurve) -> float:
    """The rate where FAR equals FRR (= 1 - TAR), interpolated linearly on the ROC curve.

    >>> equal_error_rate(roc_curve([1, 0, 1, 0], scores=[0.9, 0.8, 0.4, 0.1]))
    0.5
    """
    frr = 1.0 - curve.tar
    gap = frr - curve.far
    # gap starts at 1 (accept nothing) and ends at -1 (accept everything): find where it crosses 0.
    crossing = int(np.flatnonzero(gap <= 0)[0])
    if gap[crossing] == 0 or crossing == 0:
        return float(curve.far[crossing])
    before, after = crossing - 1, crossing
    fraction = gap[before] / (gap[before] - gap[after])
    return float(curve.far[before] + fraction * (curve.far[after] - curve.far[before]))


def _operating_point(curve: RocCurve, far: float) -> int:
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be a rate in [0, 1]; got {far!r}")
    # far is non-decreasing along the curve, so the last point within the target is the loosest.
    return int(np.searchsorted(curve.far, far, side="right") - 1)


def tar_at_far(curve: RocCurve, far: float) -> float:
    """The true accept rate at the loosest threshold whose false accept rate is ``<= far``.

    >>> tar_at_far(roc_curve([1, 0, 1, 0], scores=[0.9, 0.8, 0.4, 0.1]), 0.0)
    0.5
    """
    return float(curve.tar[_operating_point(curve, far)])


def _threshold_at(curve: RocCurve, far: float) -> Threshold:
    point = _operating_point(curve, far)
    rule = "score >= value" if curve.higher_is_same else "distance <= value"
    return Threshold(
        float(curve.thresholds[point]), float(curve.far[point]), float(curve.tar[point]), rule
    )


def suggest_threshold(
    same: Any, *, scores: Any = None, distances: Any = None, far: float = 1e-3
) -> Threshold:
    """The deployment threshold for a target false accept rate, from labelled validation pairs.

    The loosest threshold whose FAR on these pairs is ``<= far``: it accepts as many same-pairs as
    the target allows. Estimate it on pairs the model was not trained on, with at least ``10/far``
    different-pairs for a stable estimate.

    Args:
        same: ``(P,)`` bool: whether pair ``i`` is the same identity.
        scores: ``(P,)`` higher means same; or ``distances``: ``(P,)`` smaller means same.
        far: the false accept rate to stay within.

    Returns:
        A :class:`Threshold` (value in the units given, its FAR and TAR, and the rule).

    >>> t = suggest_threshold([1, 0, 1, 0], distances=[0.1, 0.2, 0.6, 0.9], far=0.0)
    >>> t.value, t.tar, t.rule
    (0.1, 0.5, 'distance <= value')
    """
    return _threshold_at(roc_curve(same, scores=scores, distances=distances), far)


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (higher-is-same units) of highest accuracy on these pairs.

    Candidates cut between consecutive distinct scores, at the midpoint (plus ``+inf``: accept
    nothing, and ``-inf``: accept everything); ties in accuracy go to the highest threshold.
    """
    distinct = np.unique(scores)[::-1]
    cuts = np.concatenate([[np.inf], (distinct[:-1] + distinct[1:]) / 2.0, [-np.inf]])
    curve = _roc_from_scores(scores, same, True)
    # Point j of the curve accepts every score >= distinct[j - 1]: the same set as cut j.
    correct = curve.tar * curve.num_same + (1.0 - curve.far) * curve.num_different
    return float(cuts[int(np.argmax(correct))])


def lfw_accuracy(
    same: Any,
    *,
    scores: Any = None,
    distances: Any = None,
    folds: int = 10,
    fold_ids: Any = None,
) -> LfwAccuracy:
    """The LFW protocol's accuracy: each fold is classified with the threshold of the others.

    Args:
        same: ``(P,)`` bool: whether pair ``i`` is the same identity.
        scores: ``(P,)`` higher means same; or ``distances``: ``(P,)`` smaller means same.
        folds: number of folds when ``fold_ids`` is not given: pairs are split into ``folds``
            consecutive blocks (LFW's ``pairs.txt`` lists its 10 sets one after another).
        fold_ids: ``(P,)`` int fold of each pair, overriding ``folds``.

    Returns:
        An :class:`LfwAccuracy`. Thresholds are the midpoints between consecutive distinct
        training values with the best training accuracy (the highest score threshold, i.e. the
        smallest distance threshold, among ties).

    >>> result = lfw_accuracy([1, 0] * 10, scores=[0.9, 0.1] * 10, folds=5)
    >>> result.mean, result.fold_thresholds.tolist()
    (1.0, [0.5, 0.5, 0.5, 0.5, 0.5])
    """
    values, same_bool, higher_is_same = _scores_and_labels(same, scores, distances)
    if fold_ids is None:
        if not isinstance(folds, (int, np.integer)) or folds < 2 or folds > values.size:
            raise ValueError(f"folds must be an integer in [2, {values.size}]; got {folds!r}")
        fold_of = np.arange(values.size) * folds // values.size
    else:
        fold_of = check_labels(fold_ids, values.size, torch.device("cpu"), "fold_ids").numpy()
    fold_names = np.unique(fold_of)
    if fold_names.size < 2:
        raise ValueError("lfw_accuracy needs at least 2 folds")
    accuracies, thresholds = [], []
    for fold in fold_names:
        held_out = fold_of == fold
        train = ~held_out
        if same_bool[train].all() or not same_bool[train].any():
            threshold = np.inf if not same_bool[train].any() else -np.inf
        else:
            threshold = _best_threshold(values[train], same_bool[train])
        predicted = values[held_out] >= threshold
        accuracies.append(float((predicted == same_bool[held_out]).mean()))
        thresholds.append(threshold if higher_is_same else -threshold)
    accuracy_array = np.array(accuracies)
    return LfwAccuracy(
        float(accuracy_array.mean()),
        float(accuracy_array.std()),
        accuracy_array,
        np.array(thresholds, dtype=np.float64),
    )


def _far_key(far: float) -> str:
    return f"tar_at_far_{far:g}"


def evaluate_verification(
    same: Any,
    *,
    scores: Any = None,
    distances: Any = None,
    far_targets: Iterable[float] = DEFAULT_FAR_TARGETS,
    folds: int = 10,
    fold_ids: Any = None,
) -> VerificationEvaluation:
    """ROC, AUC, EER, TAR@FAR and the LFW 10-fold accuracy of scored pairs.

    Args:
        same: ``(P,)`` bool (or 0/1): whether pair ``i`` is the same identity.
        scores: ``(P,)`` higher means same; or ``distances``: ``(P,)`` smaller means same (e.g.
            ``tripletkit.distances.paired_distances(a, b, "cosine")``).
        far_targets: the FARs of ``tar_at_far_<f>`` and of the suggested thresholds.
        folds, fold_ids: the folds of the LFW accuracy (see :func:`lfw_accuracy`).

    Returns:
        A :class:`VerificationEvaluation`.

    >>> result = evaluate_verification([1, 0, 1, 0], distances=[0.1, 0.3, 0.2, 0.9], folds=2)
    >>> result.metrics["auc"], result.metrics["eer"]
    (1.0, 0.0)
    """
    values, same_bool, higher_is_same = _scores_and_labels(same, scores, distances)
    curve = _roc_from_scores(values, same_bool, higher_is_same)
    lfw = lfw_accuracy(
        same_bool,
        scores=values if higher_is_same else None,
        distances=None if higher_is_same else -values,
        folds=folds,
        fold_ids=fold_ids,
    )
    metrics: dict[str, float] = {"auc": curve.auc, "eer": equal_error_rate(curve)}
    thresholds: dict[float, Threshold] = {}
    for far in far_targets:
        thresholds[float(far)] = _threshold_at(curve, float(far))
        metrics[_far_key(float(far))] = thresholds[float(far)].tar
    metrics["lfw_accuracy"] = lfw.mean
    metrics["lfw_accuracy_std"] = lfw.std
    metrics["num_same"] = float(curve.num_same)
    metrics["num_different"] = float(curve.num_different)
    return VerificationEvaluation(metrics, curve, lfw, thresholds)


def _pair_codes(members: np.ndarray, others: np.ndarray, n: int) -> np.ndarray:
    """``low * n + high`` of every pair of one item of ``members`` and one of ``others``."""
    a = np.repeat(members.astype(np.int64), others.size)
    b = np.tile(others.astype(np.int64), members.size)
    return np.minimum(a, b) * n + np.maximum(a, b)


def sample_verification_pairs(
    labels: Any,
    *,
    max_same: int = 1_000_000,
    num_different: int = 1_000_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verification pairs from class labels: every same-label pair (up to ``max_same``, sampled
    uniformly beyond that) and ``num_different`` distinct different-label pairs drawn uniformly.

    Args:
        labels: ``(N,)`` int labels.
        max_same: most same-pairs kept.
        num_different: different-pairs to draw (all of them when there are fewer).
        seed: the random seed (the same seed gives the same pairs).

    Returns:
        ``(first, second, same)``: ``(P,)`` int64 item indices with ``first < second`` and a bool
        ``(P,)``; same-pairs first, each group in ascending ``(first, second)`` order.

    >>> first, second, same = sample_verification_pairs([0, 0, 1], num_different=10)
    >>> first.tolist(), second.tolist(), same.tolist()
    ([0, 0, 1], [1, 2, 2], [True, False, False])
    """
    label_array = check_labels(labels, len(labels), torch.device("cpu"), "labels").numpy()
    n = label_array.size
    rng = np.random.default_rng(seed)
    order = np.argsort(label_array, kind="stable")
    _, starts, sizes = np.unique(label_array[order], return_index=True, return_counts=True)
    same_codes = []
    for start, size in zip(starts, sizes, strict=True):
        if size < 2:
            continue
        members = np.sort(order[start : start + size]).astype(np.int64)
        i, j = np.triu_indices(size, k=1)
        same_codes.append(members[i] * n + members[j])
    same_pairs = np.concatenate(same_codes) if same_codes else np.empty(0, dtype=np.int64)
    if same_pairs.size > max_same:
        same_pairs = rng.choice(same_pairs, size=max_same, replace=False)
    same_pairs = np.sort(same_pairs)
    total_different = (n * (n - 1) // 2) - int(sum(int(s) * (int(s) - 1) // 2 for s in sizes))
    wanted = min(int(num_different), total_different)
    different = np.empty(0, dtype=np.int64)
    if 2 * wanted >= total_different:
        # Most of them are wanted: rejection sampling would hunt for the last few for a long time
        # (coupon collector), so list every different pair (at most 2 * wanted) and choose.
        everything = np.concatenate(
            [np.empty(0, dtype=np.int64)]
            + [
                _pair_codes(order[start : start + size], order[start + size :], n)
                for start, size in zip(starts, sizes, strict=True)
            ]
        )
        if wanted < everything.size:
            everything = rng.choice(everything, size=wanted, replace=False)
        different = np.sort(everything)
    while different.size < wanted:
        draw = max(2 * (wanted - different.size), 1024)
        a = rng.integers(0, n, size=draw)
        b = rng.integers(0, n, size=draw)
        keep = label_array[a] != label_array[b]
        low, high = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
        fresh = np.unique(np.concatenate([different, low.astype(np.int64) * n + high]))
        if fresh.size > wanted:
            # Keep a uniform subset rather than the smallest codes.
            fresh = np.sort(rng.choice(fresh, size=wanted, replace=False))
        different = fresh
    codes = np.concatenate([same_pairs, different])
    same_flags = np.concatenate(
        [np.ones(same_pairs.size, dtype=bool), np.zeros(different.size, dtype=bool)]
    )
    return codes // n, codes % n, same_flags


def evaluate_verification_from_labels(
    embeddings: Any,
    labels: Any,
    *,
    distance: Metric | str = "cosine",
    max_same: int = 1_000_000,
    num_different: int = 1_000_000,
    seed: int = 0,
    far_targets: Iterable[float] = DEFAULT_FAR_TARGETS,
    folds: int = 10,
) -> VerificationEvaluation:
    """Verification metrics of labelled embeddings, on pairs from :func:`sample_verification_pairs`.

    Distances of the pairs come from ``tripletkit.distances.indexed_paired_distances`` (blocks of
    the distance matrix, or the pairs' rows a cache-sized chunk at a time; never every pair's rows
    at once). Folds are random (the pairs are shuffled with ``seed`` before the consecutive split).

    >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> evaluate_verification_from_labels(x, [0, 0, 1, 1], folds=2).metrics["auc"]
    1.0
    """
    x = as_embeddings(embeddings, "embeddings")
    first, second, same = sample_verification_pairs(
        labels, max_same=max_same, num_different=num_different, seed=seed
    )
    if same.all() or not same.any():
        raise ValueError(
            "verification needs both same-label and different-label pairs; the labels give "
            f"{int(same.sum())} same-pairs and {int((~same).sum())} different-pairs"
        )
    shuffle = np.random.default_rng(seed).permutation(same.size)
    first, second, same = first[shuffle], second[shuffle], same[shuffle]
    with torch.no_grad():
        distances = (
            indexed_paired_distances(x, torch.from_numpy(first), torch.from_numpy(second), distance)
            .cpu()
            .double()
            .numpy()
        )
    return evaluate_verification(same, distances=distances, far_targets=far_targets, folds=folds)
