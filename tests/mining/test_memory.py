"""Cross-batch memory: FIFO contents, the loss it computes, own copies, autograd."""

from __future__ import annotations

import pytest
import torch
from tests.loss_batches import random_batch

from tripletkit.errors import NoTripletsWarning
from tripletkit.functional import batch_triplet_loss, contrastive_loss
from tripletkit.losses import (
    BatchTripletLoss,
    ContrastiveLoss,
    DistanceWeightedMarginLoss,
    InfoNCELoss,
    MultiSimilarityLoss,
    QuadrupletLoss,
)
from tripletkit.mining import CrossBatchMemory


def _batches(count, batch=6, dim=4, classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield (
            torch.randn(batch, dim, generator=generator, dtype=torch.float64),
            torch.randint(0, classes, (batch,), generator=generator),
        )


def test_memory_is_a_fifo_ring_buffer():
    xbm = CrossBatchMemory(BatchTripletLoss(), size=10, embedding_dim=4, dtype=torch.float64)
    seen_x, seen_y = [], []
    for step, (x, y) in enumerate(_batches(5, batch=4)):
        slots = xbm.enqueue(x, y)
        assert slots.tolist() == [(4 * step + i) % 10 for i in range(4)]
        assert xbm.num_filled == min(4 * (step + 1), 10)
        seen_x.append(x)
        seen_y.append(y)
    # Items 10..19 survive, item k in slot k % 10; items 0..9 were overwritten.
    arrived_x, arrived_y = torch.cat(seen_x), torch.cat(seen_y)
    for k in range(10, 20):
        assert torch.equal(xbm.memory_embeddings[k % 10], arrived_x[k])
        assert int(xbm.memory_labels[k % 10]) == int(arrived_y[k])


@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
def test_loss_equals_batch_loss_against_the_stored_items(mining):
    xbm = CrossBatchMemory(
        BatchTripletLoss(margin=0.5, mining=mining),
        size=16,
        embedding_dim=4,
        dtype=torch.float64,
    )
    history_x, history_y = [], []
    for x, y in _batches(5):
        x = x.requires_grad_(True)
        loss = xbm(x, y)
        history_x.append(x.detach())
        history_y.append(y)
        # Reference: the memory holds the last <= 16 items, in ring order.
        all_x, all_y = torch.cat(history_x), torch.cat(history_y)
        keep = min(len(all_x), 16)
        arrival = torch.arange(len(all_x) - keep, len(all_x))
        slot = arrival % 16
        refs_x = torch.empty(keep, 4, dtype=torch.float64)
        refs_y = torch.empty(keep, dtype=torch.int64)
        refs_x[slot], refs_y[slot] = all_x[-keep:], all_y[-keep:]
        own = (torch.arange(len(all_x) - 6, len(all_x))) % 16
        expected = (
            batch_triplet_loss(
                x.detach(), y, refs_x, refs_y, margin=0.5, mining=mining, self_ref_index=own
            )
            if _has_triplets(y, refs_y, own)
            else None
        )
        if expected is not None:
            assert loss.item() == pytest.approx(expected.item(), rel=1e-12)


def _has_triplets(labels, ref_labels, own):
    positive = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
    positive[torch.arange(len(labels)), own] = False
    negative = labels.unsqueeze(1) != ref_labels.unsqueeze(0)
    return bool((positive.any(1) & negative.any(1)).any())


def test_own_copy_is_never_a_positive():
    xbm = CrossBatchMemory(BatchTripletLoss(), size=8, embedding_dim=3)
    x = torch.randn(4, 3, requires_grad=True)
    # Every class is a singleton and the memory held nothing before: no positive exists. Were
    # the stored copies counted, each anchor would have a positive at distance 0.
    with pytest.warns(NoTripletsWarning):
        loss = xbm(x, torch.tensor([0, 1, 2, 3]))
    assert loss.item() == 0.0


def test_gradients_reach_the_batch_only_and_accumulation_works():
    xbm = CrossBatchMemory(ContrastiveLoss(neg_margin=3.0), size=12, embedding_dim=4)
    first = torch.randn(6, 4, requires_grad=True)
    second = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    first_loss = xbm(first, labels)
    second_loss = xbm(second, labels)
    (first_loss + second_loss).backward()  # two forward passes, one backward pass
    assert first.grad is not None and second.grad is not None
    assert not xbm.memory_embeddings.requires_grad
    # The second call mined against both batches (stored detached), its own copies excluded.
    expected = contrastive_loss(
        second.detach(),
        labels,
        torch.cat([first, second]).detach(),
        torch.cat([labels, labels]),
        neg_margin=3.0,
        self_ref_index=torch.arange(6, 12),
    )
    assert second_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert xbm.last_stats.num_positive_pairs == 6 * 3


@pytest.mark.parametrize(
    "loss",
    [
        ContrastiveLoss(),
        InfoNCELoss(),
        MultiSimilarityLoss(epsilon=0.1),
        QuadrupletLoss(mining="hard"),
        DistanceWeightedMarginLoss(),
        BatchTripletLoss(mining="all"),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_every_batch_loss_works_inside_the_memory(loss):
    xbm = CrossBatchMemory(loss, size=32, embedding_dim=8)
    x, labels = random_batch(4, 4, 8, seed=30, dtype=torch.float32)
    for _ in range(3):
        embeddings = x.clone().requires_grad_(True)
        value = xbm(embeddings, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(embeddings.grad).all()


def test_state_dict_round_trip_and_reset():
    xbm = CrossBatchMemory(BatchTripletLoss(), size=8, embedding_dim=3)
    xbm.enqueue(torch.randn(5, 3), torch.arange(5))
    clone = CrossBatchMemory(BatchTripletLoss(), size=8, embedding_dim=3)
    clone.load_state_dict(xbm.state_dict())
    assert clone.num_filled == 5 and int(clone.next_slot) == 5
    assert torch.equal(clone.memory_embeddings, xbm.memory_embeddings)
    clone.reset()
    assert clone.num_filled == 0


def test_half_precision_batches_are_stored_in_the_memory_dtype():
    xbm = CrossBatchMemory(BatchTripletLoss(mining="hard"), size=16, embedding_dim=4)
    x = torch.randn(8, 4).to(torch.bfloat16).requires_grad_(True)
    loss = xbm(x, torch.arange(4).repeat(2))
    loss.backward()
    assert xbm.memory_embeddings.dtype == torch.float32
    assert torch.isfinite(loss) and x.grad.dtype == torch.bfloat16


def test_bad_inputs():
    xbm = CrossBatchMemory(BatchTripletLoss(), size=4, embedding_dim=3)
    with pytest.raises(ValueError, match="size >= batch"):
        xbm.enqueue(torch.randn(5, 3), torch.arange(5))
    with pytest.raises(ValueError, match="3-dimensional"):
        xbm.enqueue(torch.randn(2, 4), torch.arange(2))
    with pytest.raises(ValueError, match="positive integer"):
        CrossBatchMemory(BatchTripletLoss(), size=0, embedding_dim=3)
