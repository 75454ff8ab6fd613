"""One rank of the 2-process gather test (run by tests/mining/test_distributed.py, not by pytest).

Usage: python distributed_worker.py RANK WORLD_SIZE STORE_FILE OUT_FILE

Every rank builds the same model and global data, embeds its own slice (uneven sizes), gathers,
and records the losses and parameter gradients of both ways of mining across processes.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from tripletkit.losses import BatchTripletLoss, MultiSimilarityLoss
from tripletkit.mining import gather_batch

SIZES = (5, 7)


def shared_problem():
    """The global inputs, labels and model, identical on every rank and in the parent test."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(sum(SIZES), 6, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 0])
    model = torch.nn.Linear(6, 4).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 6, generator=generator, dtype=torch.float64))
        model.bias.copy_(torch.randn(4, generator=generator, dtype=torch.float64))
    return inputs, labels, model


def losses():
    return {
        "triplet_hard": BatchTripletLoss(margin=0.5, mining="hard", backend="torch"),
        "triplet_all": BatchTripletLoss(margin=0.5, mining="all", backend="torch"),
        "multi_similarity": MultiSimilarityLoss(beta=10.0),
    }


def main() -> None:
    rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    inputs, labels, model = shared_problem()
    start = sum(SIZES[:rank])
    rows = slice(start, start + SIZES[rank])
    results = {}
    for name, loss_fn in losses().items():
        for pattern in ("global", "local"):
            model.zero_grad()
            embeddings = model(inputs[rows])
            batch = gather_batch(embeddings, labels[rows])
            if pattern == "global":
                loss = loss_fn(batch.embeddings, batch.labels)
            else:
                loss = loss_fn(
                    embeddings,
                    labels[rows],
                    batch.embeddings,
                    batch.labels,
                    self_ref_index=batch.self_ref_index,
                )
            loss.backward()
            results[(name, pattern)] = {
                "loss": loss.detach(),
                "weight_grad": model.weight.grad.clone(),
                "bias_grad": model.bias.grad.clone(),
                "gathered_labels": batch.labels.clone(),
                "offset": batch.offset,
            }
    torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
