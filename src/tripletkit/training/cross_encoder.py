"""Training a re-ranker (a cross-encoder) on queries, their positives and candidate negatives.

Each step takes ``batch_size`` queries; each query's positive and ``num_negatives`` of its
candidates (drawn anew at every step from its list, e.g. the hard negatives a bi-encoder mined with
:func:`tripletkit.mining.negatives.mine_hard_negatives`) are scored by the model, and the loss is
the softmax cross-entropy of the positive among them (InfoNCE over the query's list, with the
model's scores as logits)::

    ℓ(q) = -log( exp(s(q, p)) / (exp(s(q, p)) + Σ_n exp(s(q, n))) )

averaged over the batch's queries. Train it on the kind of candidates it will re-order: the
negatives a first-stage retriever ranks high, not random documents.

AdamW with linear warm-up and decay (:func:`tripletkit.training.schedule.lr_factor`; weight
decay on every parameter, biases and norms included), gradient clipping; a model with a ``head`` attribute (the score layer of
:class:`~tripletkit.models.cross_encoder.CrossEncoder`) trains that layer at ``head_lr``, since it
starts from random weights while the transformer starts trained.

Example:
    >>> import torch
    >>> class LetterOverlap(torch.nn.Module):   # a toy pair scorer: shared letters, weighted
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.head = torch.nn.Linear(26, 1)
    ...     def forward(self, queries, documents):
    ...         rows = [[float(chr(97 + c) in q and chr(97 + c) in d) for c in range(26)]
    ...                 for q, d in zip(queries, documents)]
    ...         return self.head(torch.tensor(rows)).squeeze(-1)
    >>> result = train_cross_encoder(
    ...     LetterOverlap(), ["a cat", "a dog"], ["cat", "dog"], [["cow", "cap"], ["dot", "cow"]],
    ...     num_negatives=1, batch_size=2, epochs=2, lr=1e-2, progress=False)
    >>> result.steps, len(result.losses)
    (2, 2)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tripletkit.training.steps import StepLoop
from tripletkit.validation import check_positive, check_texts

__all__ = ["RerankerTrainResult", "train_cross_encoder"]


@dataclass
class RerankerTrainResult:
    """What a re-ranker training did.

    Attributes:
        steps: optimizer steps taken.
        losses: the loss of every step.
        seconds: wall-clock seconds of the call.
        skipped_queries: queries left out because none of their candidates differs from their
            positive (nothing to rank it against).
    """

    steps: int
    losses: list[float]
    seconds: float
    skipped_queries: int


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


def train_cross_encoder(
    model: torch.nn.Module,
    queries: Sequence[str],
    positives: Sequence[str],
    candidates: Sequence[Sequence[str]],
    *,
    num_negatives: int = 7,
    epochs: float = 1,
    batch_size: int = 16,
    lr: float = 5e-5,
    head_lr: float | None = 1e-3,
    warmup_fraction: float = 0.1,
    schedule: str = "linear",
    weight_decay: float = 0.01,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> RerankerTrainResult:
    """Train ``model`` (``(queries, documents) -> (B,)`` scores) in place; see the module docstring.

    Args:
        model: a pair scorer, e.g. :class:`~tripletkit.models.cross_encoder.CrossEncoder`.
        queries, positives: ``P`` texts each (pair ``i`` = ``(queries[i], positives[i])``).
        candidates: ``P`` lists of negatives to draw from (a candidate equal to its query's
            positive is dropped; a query left with none is skipped and counted).
        num_negatives: negatives per query and step (fewer when its list is shorter).
        epochs: passes over the queries (a fraction trains on part of the last pass).
        batch_size: queries per step (each scored with its positive and negatives).
        lr: learning rate of the model; ``head_lr``: of its ``head`` (``None``: ``lr``).
        warmup_fraction, schedule, weight_decay, max_grad_norm: optimisation.
        seed: the order of the queries and the negatives drawn (dropout uses torch's generator).
        progress: a progress bar on stderr.
        on_step: called as ``on_step(step, loss)`` after each step.
    """
    queries = check_texts(queries, "queries")
    positives = check_texts(positives, "positives")
    candidates = [check_texts(c, f"candidates[{i}]") for i, c in enumerate(candidates)]
    if not (len(queries) == len(positives) == len(candidates)):
        raise ValueError(
            f"queries, positives and candidates must have one entry per pair; got "
            f"{len(queries)}, {len(positives)} and {len(candidates)}"
        )
    num_negatives = _check_count(num_negatives, "num_negatives")
    batch_size = _check_count(batch_size, "batch_size")
    epochs = check_positive(epochs, "epochs")
    lr = check_positive(lr, "lr")
    head_lr = lr if head_lr is None else check_positive(head_lr, "head_lr")

    pools = [[c for c in cands if c != p] for p, cands in zip(positives, candidates, strict=True)]
    usable = [i for i, pool in enumerate(pools) if pool]
    skipped = len(queries) - len(usable)
    if not usable:
        raise ValueError(
            "no query has a candidate that differs from its positive: nothing to train on"
        )
    steps_per_epoch = math.ceil(len(usable) / batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))

    head = getattr(model, "head", None)
    head_params = [p for p in head.parameters() if p.requires_grad] if head is not None else []
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": body_params, "lr": lr}]
    if head_params:
        groups.append({"params": head_params, "lr": head_lr})
    loop = StepLoop(
        groups,
        total_steps=total_steps,
        warmup_fraction=warmup_fraction,
        schedule=schedule,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        what="the re-ranker's loss",
        progress="training the re-ranker" if progress else None,
        on_step=on_step,
    )
    rng = random.Random(seed)
    start = time.perf_counter()
    order: list[int] = []
    model.train()
    try:
        for _ in range(total_steps):
            if not order:
                order = list(usable)
                rng.shuffle(order)
            batch, order = order[:batch_size], order[batch_size:]
            pair_queries: list[str] = []
            pair_documents: list[str] = []
            sizes = []
            for i in batch:
                pool = pools[i]
                drawn = rng.sample(pool, min(num_negatives, len(pool)))
                pair_queries += [queries[i]] * (1 + len(drawn))
                pair_documents += [positives[i], *drawn]
                sizes.append(1 + len(drawn))
            scores = model(pair_queries, pair_documents)
            if scores.shape != (len(pair_queries),):
                raise ValueError(
                    f"the model must return one score per pair, shape ({len(pair_queries)},); "
                    f"got {tuple(scores.shape)}"
                )
            # Each query's list [positive, negatives...] is one softmax; lists of different
            # lengths are padded with -inf (which take no probability).
            lists = torch.full(
                (len(batch), max(sizes)), -math.inf, dtype=scores.dtype, device=scores.device
            )
            columns = torch.cat([torch.arange(n) for n in sizes]).to(scores.device)
            rows = torch.repeat_interleave(torch.arange(len(batch)), torch.tensor(sizes))
            lists = lists.index_put((rows.to(scores.device), columns), scores)
            targets = torch.zeros(len(batch), dtype=torch.long, device=scores.device)
            loop.step(F.cross_entropy(lists, targets))
    finally:
        loop.close()
        model.eval()
    return RerankerTrainResult(
        steps=len(loop.losses),
        losses=loop.losses,
        seconds=time.perf_counter() - start,
        skipped_queries=skipped,
    )
