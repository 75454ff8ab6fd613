"""Cross-check against pytorch-metric-learning 2.9 where its loss computes the same quantity.

The float64 references (tests/reference_losses.py) are the standard; agreeing with the peer as
well shows the definitions are the ones users compare against.
"""

from __future__ import annotations

import pytest
import torch

from tests.loss_batches import random_batch
from tripletkit import functional as F
from tripletkit.losses import MultiSimilarityLoss
from tripletkit.mining import CrossBatchMemory

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")


@pytest.fixture
def batch():
    x, labels = random_batch(6, 4, 8, seed=50)
    return torch.nn.functional.normalize(x, dim=1), labels


def test_contrastive(batch):
    x, labels = batch
    theirs = pml_losses.ContrastiveLoss(pos_margin=0.1, neg_margin=1.2)(x, labels)
    ours = F.contrastive_loss(x, labels, pos_margin=0.1, neg_margin=1.2, distance="euclidean")
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)


def test_multi_similarity_with_and_without_its_miner(batch):
    x, labels = batch
    theirs = pml_losses.MultiSimilarityLoss()(x, labels)
    assert F.multi_similarity_loss(x, labels).item() == pytest.approx(theirs.item(), rel=1e-9)
    pairs = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, labels)
    theirs = pml_losses.MultiSimilarityLoss()(x, labels, pairs)
    ours = F.multi_similarity_loss(x, labels, epsilon=0.1)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)


def test_ntxent(batch):
    x, labels = batch
    theirs = pml_losses.NTXentLoss(temperature=0.07)(x, labels)
    assert F.info_nce_loss(x, labels, temperature=0.07).item() == pytest.approx(
        theirs.item(), rel=1e-7
    )


def test_proxy_losses(batch):
    x, labels = batch
    nca = pml_losses.ProxyNCALoss(num_classes=6, embedding_size=8).double()
    ours = F.proxy_nca_loss(x, labels, nca.proxies.detach(), temperature=1.0)
    assert ours.item() == pytest.approx(nca(x, labels).item(), rel=1e-9)
    anchor = pml_losses.ProxyAnchorLoss(num_classes=6, embedding_size=8).double()
    ours = F.proxy_anchor_loss(x, labels, anchor.proxies.detach(), margin=0.1, alpha=32)
    assert ours.item() == pytest.approx(anchor(x, labels).item(), rel=1e-9)


def test_cross_batch_memory(batch):
    x, labels = batch
    theirs = pml_losses.CrossBatchMemory(
        pml_losses.MultiSimilarityLoss(), embedding_size=8, memory_size=20
    ).double()
    ours = CrossBatchMemory(MultiSimilarityLoss(), size=20, embedding_dim=8, dtype=torch.float64)
    for start in range(0, 24, 8):  # three batches of 8: the memory wraps around on the third
        rows = slice(start, start + 8)
        assert ours(x[rows], labels[rows]).item() == pytest.approx(
            theirs(x[rows], labels[rows]).item(), rel=1e-9
        )
