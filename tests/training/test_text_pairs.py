"""The text-pair training loop: it learns, re-mines on schedule, and rejects bad options."""

from __future__ import annotations

import zlib

import pytest
import torch

from tripletkit.training.text_pairs import train_text_pairs


class BagOfWords(torch.nn.Module):
    """A trainable text model: hashed words -> summed embeddings (a tiny stand-in for a
    transformer)."""

    def __init__(self, buckets: int = 512, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.buckets = buckets
        self.table = torch.nn.Parameter(torch.randn(buckets, dim, generator=generator))

    def forward(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            ids = torch.tensor([zlib.crc32(w.encode()) % self.buckets for w in text.split()])
            rows.append(self.table[ids].sum(0))
        return torch.nn.functional.normalize(torch.stack(rows), dim=1)


def _pairs(n: int = 32) -> tuple[list[str], list[str]]:
    # Query words and document words are disjoint: only training can connect them.
    queries = [f"q{i} q{i}x common" for i in range(n)]
    documents = [f"d{i} d{i}y" for i in range(n)]
    return queries, documents


def _top1(model: BagOfWords, queries: list[str], documents: list[str]) -> float:
    with torch.no_grad():
        scores = model(queries) @ model(documents).T
    return float((scores.argmax(1) == torch.arange(len(queries))).float().mean())


@pytest.mark.parametrize("loss", ["triplet", "mnrl"])
def test_learns_the_pairs(loss) -> None:
    queries, documents = _pairs(16)
    model = BagOfWords()
    before = _top1(model, queries, documents)
    result = train_text_pairs(
        model,
        queries,
        documents,
        corpus=documents,
        loss=loss,
        epochs=20,
        batch_size=8,
        lr=0.1,
        warmup_fraction=0.0,
        remine_every=8,
        progress=False,
    )
    after = _top1(model, queries, documents)
    assert before < 0.4
    assert after >= 0.9
    assert result.steps == 20 * 2
    assert result.minings == 3  # before step 0, at steps 16 and 32
    assert result.mining_dropped == [0] * result.minings


def test_remines_every_half_epoch_and_counts_mining_time() -> None:
    queries, documents = _pairs(32)
    result = train_text_pairs(
        BagOfWords(),
        queries,
        documents,
        corpus=documents,
        epochs=2,
        batch_size=8,
        remine_every=0.5,
        progress=False,
    )
    # 4 steps per epoch, 8 steps: mined before step 0 and at steps 2, 4 and 6.
    assert result.minings == 4
    assert 0 < result.mining_seconds <= result.seconds


def test_fixed_negatives_and_in_batch_only() -> None:
    queries, documents = _pairs(16)
    fixed = [[documents[(i + 1) % 16]] for i in range(16)]
    result = train_text_pairs(
        BagOfWords(), queries, documents, negatives=fixed, batch_size=4, progress=False
    )
    assert result.minings == 0 and result.steps == 4
    result = train_text_pairs(BagOfWords(), queries, documents, batch_size=4, progress=False)
    assert result.minings == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(corpus=["a"], negatives=[["a"]] * 4), "either negatives"),
        (dict(remine_every=0.5), "needs a corpus"),
        (dict(batch_size=1), "batch_size"),
        (dict(loss="arcface"), "loss"),
        (dict(epochs=0), "epochs"),
    ],
)
def test_bad_options(kwargs, message) -> None:
    queries, documents = _pairs(4)
    with pytest.raises(ValueError, match=message):
        train_text_pairs(BagOfWords(), queries, documents, progress=False, **kwargs)


def test_mismatched_pairs() -> None:
    with pytest.raises(ValueError, match="same"):
        train_text_pairs(BagOfWords(), ["a", "b"], ["c"], progress=False)
