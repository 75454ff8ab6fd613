"""Benchmark targets for the batch triplet losses: each returns a ``step()`` doing forward + backward.

Every target builds the same batch for a given (batch, k, dim, seed): L2-normalised Gaussian
embeddings, ``batch // k`` classes of ``k`` items in shuffled order, margin 0.2.
"""

from __future__ import annotations

import torch


def _batch(batch: int, k: int, dim: int, seed: int, device: str):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator), dim=1)
    labels = torch.arange(batch // k).repeat_interleave(k)
    labels = labels[torch.randperm(batch, generator=generator)]
    return embeddings.to(device).requires_grad_(), labels.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def floor(batch: int, k: int, dim: int = 128, seed: int = 0, device: str = "cpu"):
    """The distance matrix alone (x·xᵀ with norms), forward + backward, plain torch."""
    x, _ = _batch(batch, k, dim, seed, device)

    def step():
        x.grad = None
        squared_norms = (x * x).sum(1)
        dist = squared_norms[:, None] + squared_norms[None, :] - 2 * x @ x.T
        dist.sum().backward()
        _sync(device)

    return step


def tripletkit(
    batch: int,
    k: int,
    mining: str,
    distance: str = "squared_euclidean",
    dim: int = 128,
    seed: int = 0,
    device: str = "cpu",
):
    from tripletkit.functional import batch_triplet_loss

    x, labels = _batch(batch, k, dim, seed, device)
    stats = {}

    def step():
        x.grad = None
        loss, s = batch_triplet_loss(
            x, labels, margin=0.2, mining=mining, distance=distance, return_stats=True
        )
        loss.backward()
        _sync(device)
        stats.update(loss=float(loss.detach()), active=s.num_active, selected=s.num_selected)

    step.extra = lambda: stats
    return step


def pml(batch: int, k: int, variant: str, dim: int = 128, seed: int = 0, device: str = "cpu"):
    """pytorch-metric-learning 2.9: TripletMarginLoss alone (batch-all), or with a miner."""
    from pytorch_metric_learning import losses, miners

    x, labels = _batch(batch, k, dim, seed, device)
    loss_fn = losses.TripletMarginLoss(margin=0.2)
    miner = {
        "all": None,
        "semihard": miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"),
        "hard": miners.BatchHardMiner(),
    }[variant]

    def step():
        x.grad = None
        mined = miner(x, labels) if miner is not None else None
        loss_fn(x, labels, mined).backward()
        _sync(device)

    return step


def sentence_transformers(
    batch: int, k: int, variant: str, dim: int = 128, seed: int = 0, device: str = "cpu"
):
    """sentence-transformers 6.2 BatchAll/BatchSemiHard/BatchHard triplet losses on embeddings."""
    from sentence_transformers.sentence_transformer import losses as st_losses

    cls, method = {
        "all": (st_losses.BatchAllTripletLoss, "batch_all_triplet_loss"),
        "semihard": (st_losses.BatchSemiHardTripletLoss, "batch_semi_hard_triplet_loss"),
        "hard": (st_losses.BatchHardTripletLoss, "batch_hard_triplet_loss"),
    }[variant]
    # The losses only need their margin and distance to run on embeddings; skip the model.
    loss_fn = cls.__new__(cls)
    torch.nn.Module.__init__(loss_fn)
    loss_fn.margin = loss_fn.triplet_margin = 0.2
    loss_fn.distance_metric = st_losses.BatchHardTripletLossDistanceFunction.euclidean_distance
    x, labels = _batch(batch, k, dim, seed, device)

    def step():
        x.grad = None
        getattr(loss_fn, method)(labels, x).backward()
        _sync(device)

    return step
