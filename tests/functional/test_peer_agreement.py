"""tripletkit's definitions agree with the peers' implementations of the same losses.

sentence-transformers' batch losses follow TensorFlow Addons (semi-hard: the FaceNet definition);
pytorch-metric-learning's TripletMarginLoss without a miner is batch-all with a mean over the
triplets with a positive loss. Both compute euclidean distances; pml normalises the embeddings.
"""

from __future__ import annotations

import pytest
import torch

from tripletkit.functional import batch_triplet_loss

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_reducers = pytest.importorskip("pytorch_metric_learning.reducers")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")


def _sentence_transformers_loss(variant: str, margin: float):
    cls, method = {
        "all": (st_losses.BatchAllTripletLoss, "batch_all_triplet_loss"),
        "semihard": (st_losses.BatchSemiHardTripletLoss, "batch_semi_hard_triplet_loss"),
        "hard": (st_losses.BatchHardTripletLoss, "batch_hard_triplet_loss"),
    }[variant]
    loss = cls.__new__(cls)
    torch.nn.Module.__init__(loss)
    loss.margin = loss.triplet_margin = margin
    loss.distance_metric = st_losses.BatchHardTripletLossDistanceFunction.euclidean_distance
    return getattr(loss, method)


def _batch(seed: int, size: int = 48, classes: int = 8):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.nn.functional.normalize(
        torch.randn(size, 6, generator=generator, dtype=torch.float64), dim=1
    )
    labels = torch.arange(classes).repeat_interleave(size // classes)
    return embeddings, labels[torch.randperm(size, generator=generator)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("variant", ["all", "semihard", "hard"])
def test_matches_sentence_transformers(seed, variant):
    embeddings, labels = _batch(seed)
    ours_input = embeddings.clone().requires_grad_()
    theirs_input = embeddings.clone().requires_grad_()
    ours = batch_triplet_loss(ours_input, labels, margin=0.3, mining=variant, distance="euclidean")
    theirs = _sentence_transformers_loss(variant, 0.3)(labels, theirs_input)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ours_input.grad, theirs_input.grad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed", range(5))
def test_batch_all_matches_pytorch_metric_learning(seed):
    embeddings, labels = _batch(seed)
    ours = batch_triplet_loss(embeddings, labels, margin=0.2, mining="all", distance="euclidean")
    theirs = pml_losses.TripletMarginLoss(margin=0.2)(embeddings, labels)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_batch_hard_matches_pytorch_metric_learning_with_mean_reduction(seed):
    embeddings, labels = _batch(seed)
    ours = batch_triplet_loss(embeddings, labels, margin=0.2, mining="hard", distance="euclidean")
    loss_fn = pml_losses.TripletMarginLoss(margin=0.2, reducer=pml_reducers.MeanReducer())
    theirs = loss_fn(embeddings, labels, pml_miners.BatchHardMiner()(embeddings, labels))
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-7, atol=1e-9)
