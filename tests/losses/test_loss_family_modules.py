"""The loss modules: same values as the functions, statistics, parameters and their groups."""

from __future__ import annotations

import pytest
import torch

from tests.loss_batches import random_batch
from tripletkit import functional as F
from tripletkit.losses import (
    ContrastiveLoss,
    DistanceWeightedMarginLoss,
    InfoNCELoss,
    MinedTripletLoss,
    MultipleNegativesRankingLoss,
    MultiSimilarityLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    QuadrupletLoss,
)
from tripletkit.mining import mine_pairs, mine_triplets


@pytest.mark.parametrize(
    ("module", "function", "kwargs"),
    [
        (
            ContrastiveLoss(0.1, 2.0, mining="hard"),
            F.contrastive_loss,
            {"pos_margin": 0.1, "neg_margin": 2.0, "mining": "hard"},
        ),
        (QuadrupletLoss(1.0, 0.5), F.quadruplet_loss, {"margin": 1.0, "margin2": 0.5}),
        (InfoNCELoss(0.1), F.info_nce_loss, {"temperature": 0.1}),
        (MultiSimilarityLoss(epsilon=0.1), F.multi_similarity_loss, {"epsilon": 0.1}),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, torch.nn.Module) else "",
)
def test_batch_modules_match_their_functions(module, function, kwargs):
    x, labels = random_batch(4, 3, 5, seed=40)
    refs, ref_labels = random_batch(3, 4, 5, seed=41)
    assert module(x, labels).item() == pytest.approx(function(x, labels, **kwargs).item())
    own = torch.full((12,), -1)
    with_refs = module(x, labels, refs, ref_labels, own)
    assert with_refs.item() == pytest.approx(
        function(x, labels, refs, ref_labels, self_ref_index=own, **kwargs).item()
    )
    assert module.last_stats is not None
    assert isinstance(repr(module), str)


def test_proxy_modules_hold_trainable_proxies_with_their_learning_rate():
    for cls in (ProxyNCALoss, ProxyAnchorLoss):
        loss_fn = cls(num_classes=5, embedding_dim=8, proxy_lr_multiplier=50.0)
        assert [name for name, _ in loss_fn.named_parameters()] == ["proxies"]
        groups = loss_fn.param_groups(base_lr=2e-4)
        assert groups[0]["params"][0] is loss_fn.proxies
        assert groups[0]["lr"] == pytest.approx(1e-2)
        x = torch.randn(10, 8, requires_grad=True)
        loss = loss_fn(x, torch.arange(5).repeat(2))
        loss.backward()
        assert loss_fn.proxies.grad is not None and x.grad is not None
        assert loss_fn.last_stats.num_selected_pairs == 10
        # A trainer builds its optimiser from the model's parameters and the loss's groups.
        torch.optim.SGD([{"params": [x]}, *groups], lr=2e-4).step()
    with pytest.raises(ValueError, match="num_classes"):
        ProxyAnchorLoss(num_classes=0, embedding_dim=4)


def test_proxy_state_dict_round_trip():
    loss_fn = ProxyAnchorLoss(num_classes=3, embedding_dim=4)
    clone = ProxyAnchorLoss(num_classes=3, embedding_dim=4)
    clone.load_state_dict(loss_fn.state_dict())
    assert torch.equal(clone.proxies, loss_fn.proxies)


def test_margin_module_learns_beta():
    loss_fn = DistanceWeightedMarginLoss(num_classes=4, beta=1.0, beta_lr_multiplier=10.0)
    loss_fn.generator = torch.Generator().manual_seed(0)
    x, labels = random_batch(4, 4, 8, seed=42, dtype=torch.float32)
    x.requires_grad_(True)
    loss_fn(x, labels).backward()
    assert loss_fn.beta.shape == (4,) and loss_fn.beta.grad is not None
    assert loss_fn.param_groups(1e-3)[0]["lr"] == pytest.approx(1e-2)
    fixed = DistanceWeightedMarginLoss(learn_beta=False)
    assert fixed.param_groups(1e-3) == [] and not fixed.beta.requires_grad


def test_margin_module_accepts_mined_triplets():
    x, labels = random_batch(4, 3, 6, seed=43, dtype=torch.float32)
    mined = mine_triplets(x, labels, mining="hard", distance="euclidean")
    loss_fn = DistanceWeightedMarginLoss()
    assert loss_fn(x, labels, mined=mined).item() == pytest.approx(
        F.distance_weighted_margin_loss(x, labels, beta=1.2, mined=mined).item()
    )


def test_mined_modules():
    x, labels = random_batch(4, 3, 6, seed=44, dtype=torch.float32)
    loss_fn = MinedTripletLoss(margin=0.2)
    mined = mine_triplets(x, labels, mining="semihard", margin=0.2)
    assert loss_fn(mined).item() == pytest.approx(
        F.batch_triplet_loss(x, labels, margin=0.2, mining="semihard").item(), rel=1e-6
    )
    assert loss_fn.last_stats.num_selected == len(mined)
    pairs = mine_pairs(x, labels, mining="hard")
    contrastive = ContrastiveLoss(neg_margin=2.0)
    assert contrastive(x, labels, mined=pairs).item() == pytest.approx(
        F.contrastive_loss(x, labels, neg_margin=2.0, mining="hard").item()
    )


def test_ranking_module():
    loss_fn = MultipleNegativesRankingLoss(temperature=0.05, symmetric=True)
    q, p, n = torch.randn(3, 6, 8).unbind(0)
    value = loss_fn(q, p, n)
    assert value.item() == pytest.approx(
        F.multiple_negatives_ranking_loss(q, p, n, temperature=0.05, symmetric=True).item()
    )
    assert loss_fn.last_stats.num_selected_pairs == 6
