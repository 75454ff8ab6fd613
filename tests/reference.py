"""Brute-force float64 references for the core losses: every triplet enumerated, O(B·M²).

Written independently of ``src/`` (own distance formulas, own masks, explicit loops), as plainly as
possible, so that a disagreement points at the library. The loss comes back as an autograd tensor
built from the reference distances, so gradients can be compared too.

Conventions shared with the library (they are part of the definition, not of the algorithm): ties
between equal distances pick the lowest reference index; a reference that is the anchor's own copy
(``self_ref_index``) is never its positive; euclidean distances at or below sqrt(1e-12) are 0 with
gradient 0 (the library's guard against the sqrt-at-zero NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SQRT_FLOOR = 1e-12


def reference_distances(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """``(N, M)`` distances by the textbook formula on differences / normalised vectors."""
    x, y = x.double(), y.double()
    if metric in ("squared_euclidean", "euclidean"):
        squared = ((x.unsqueeze(1) - y.unsqueeze(0)) ** 2).sum(-1)
        if metric == "squared_euclidean":
            return squared
        positive = squared > SQRT_FLOOR
        return torch.where(positive, torch.where(positive, squared, 1.0).sqrt(), 0.0)
    if metric == "cosine":
        x_unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        y_unit = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 1.0 - (x_unit.unsqueeze(1) * y_unit.unsqueeze(0)).sum(-1)
    if metric == "dot":
        return -(x.unsqueeze(1) * y.unsqueeze(0)).sum(-1)
    raise ValueError(metric)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    # log(e^x + e^0); its autograd derivative is exactly sigmoid(x), also at x = 0 (a clamp-based
    # form would give 1 there).
    return torch.logaddexp(x, torch.zeros_like(x))


@dataclass
class ReferenceResult:
    loss: torch.Tensor
    num_valid: int
    num_selected: int
    num_active: int
    mean_pos: float
    mean_neg: float
    hardest_pos: float
    hardest_neg: float


def reference_batch_triplet(
    embeddings: torch.Tensor,
    labels: list[int],
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: list[int] | None = None,
    *,
    margin: float,
    mining: str,
    distance: str,
    soft: bool,
    self_ref_index: list[int] | None = None,
) -> ReferenceResult:
    """The batch triplet loss of every mining mode, by enumeration."""
    if ref_embeddings is None:
        ref_embeddings, ref_labels = embeddings, labels
        if self_ref_index is None:
            self_ref_index = list(range(len(labels)))
    dist = reference_distances(embeddings, ref_embeddings, distance)
    value = dist.detach()
    num_anchors, num_refs = dist.shape
    own = self_ref_index if self_ref_index is not None else [-1] * num_anchors

    positives = [
        [j for j in range(num_refs) if ref_labels[j] == labels[a] and j != own[a]]
        for a in range(num_anchors)
    ]
    negatives = [
        [j for j in range(num_refs) if ref_labels[j] != labels[a]] for a in range(num_anchors)
    ]

    def hinge_or_soft(d_ap: torch.Tensor, d_an: torch.Tensor) -> torch.Tensor:
        # relu, not clamp: at the kink (loss exactly 0) the slope is 0, as in torch.relu.
        return _softplus(d_ap - d_an) if soft else torch.relu(d_ap - d_an + margin)

    terms: list[torch.Tensor] = []
    active = 0
    for a in range(num_anchors):
        pos, neg = positives[a], negatives[a]
        if not pos or not neg:
            continue
        if mining in ("all", "semihard-window", "hard-window"):
            for p in pos:
                for n in neg:
                    d_ap, d_an = float(value[a, p]), float(value[a, n])
                    if mining == "all":
                        chosen = soft or (d_ap - d_an + margin > 0)
                    elif mining == "semihard-window":
                        chosen = d_ap < d_an < d_ap + margin
                    else:
                        chosen = d_an <= d_ap
                    if chosen:
                        term = hinge_or_soft(dist[a, p], dist[a, n])
                        terms.append(term)
                        active += int(float(term.detach()) > 0)
        elif mining in ("hard", "easy-positive"):
            # min()/max() return the first of equal keys: the lowest index, as the library does.
            if mining == "hard":
                p = max(pos, key=lambda j: (float(value[a, j]), -j))
            else:
                p = min(pos, key=lambda j: (float(value[a, j]), j))
            n = min(neg, key=lambda j: (float(value[a, j]), j))
            term = hinge_or_soft(dist[a, p], dist[a, n])
            terms.append(term)
            active += int(float(term.detach()) > 0)
        elif mining == "semihard":
            for p in pos:
                d_ap = float(value[a, p])
                farther = [j for j in neg if float(value[a, j]) > d_ap]
                if farther:
                    n = min(farther, key=lambda j: (float(value[a, j]), j))
                else:
                    n = max(neg, key=lambda j: (float(value[a, j]), -j))
                term = hinge_or_soft(dist[a, p], dist[a, n])
                terms.append(term)
                active += int(float(term.detach()) > 0)
        else:
            raise ValueError(mining)

    num_valid = sum(len(positives[a]) * len(negatives[a]) for a in range(num_anchors))
    if terms:
        loss = torch.stack(terms).mean()
    else:
        loss = (dist * 0).sum()
    pos_values = [float(value[a, p]) for a in range(num_anchors) for p in positives[a]]
    neg_values = [float(value[a, n]) for a in range(num_anchors) for n in negatives[a]]
    return ReferenceResult(
        loss=loss,
        num_valid=num_valid,
        num_selected=len(terms),
        num_active=active,
        mean_pos=sum(pos_values) / len(pos_values) if pos_values else math.nan,
        mean_neg=sum(neg_values) / len(neg_values) if neg_values else math.nan,
        hardest_pos=max(pos_values) if pos_values else math.nan,
        hardest_neg=min(neg_values) if neg_values else math.nan,
    )


def reference_triplet_margin(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    margin: float,
    distance: str,
    swap: bool,
    soft: bool,
) -> torch.Tensor:
    """Mean over explicit triplets, one row at a time."""
    terms = []
    for i in range(anchor.shape[0]):
        a, p, n = anchor[i : i + 1], positive[i : i + 1], negative[i : i + 1]
        d_ap = reference_distances(a, p, distance)[0, 0]
        d_an = reference_distances(a, n, distance)[0, 0]
        if swap:
            d_an = torch.minimum(d_an, reference_distances(p, n, distance)[0, 0])
        terms.append(_softplus(d_ap - d_an) if soft else torch.relu(d_ap - d_an + margin))
    return torch.stack(terms).mean()
