"""End to end through the loss: backbones learn class structure on real data (scikit-learn
digits), judged on held-out digits by leave-one-out Recall@1 and MAP@R (Musgrave et al. 2020)."""

from __future__ import annotations

import pytest
import torch

from tripletkit.distances import pairwise_distances
from tripletkit.losses import BatchTripletLoss
from tripletkit.models import EmbeddingModel, create_model

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def _recall_at_1(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of items whose nearest other item (euclidean) has the same label."""
    distances = pairwise_distances(embeddings, metric="squared_euclidean")
    distances.fill_diagonal_(float("inf"))
    nearest = distances.argmin(dim=1)
    return float((labels[nearest] == labels).float().mean())


def _map_at_r(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over queries of (1/R) Σ_{i<=R} P@i·rel_i, R = the query's number of same-label items."""
    distances = pairwise_distances(embeddings, metric="squared_euclidean")
    distances.fill_diagonal_(float("inf"))
    order = distances.argsort(dim=1)
    scores = []
    for query in range(len(labels)):
        r = int((labels == labels[query]).sum()) - 1
        relevant = (labels[order[query, :r]] == labels[query]).double()
        precision_at_i = relevant.cumsum(0) / torch.arange(1, r + 1)
        scores.append(float((precision_at_i * relevant).sum()) / r)
    return sum(scores) / len(scores)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = sklearn_datasets.load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(data.target)


def _train(model: EmbeddingModel, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """P×K batches (10 classes × 8 items) with batch-hard mining."""
    generator = torch.Generator().manual_seed(0)
    loss_fn = BatchTripletLoss(margin=0.2, mining="hard")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    by_class = [torch.nonzero(y == c).flatten() for c in range(10)]
    model.train()
    for _ in range(steps):
        batch = torch.cat(
            [idx[torch.randperm(len(idx), generator=generator)[:8]] for idx in by_class]
        )
        loss = loss_fn(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _scores(model: EmbeddingModel, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    embeddings = model.embed(x)
    return _recall_at_1(embeddings, y), _map_at_r(embeddings, y)


@pytest.mark.parametrize(
    ("name", "options"),
    [("small_cnn", {}), ("mlp", {"in_features": 64, "hidden_dims": (128,)})],
)
def test_training_improves_held_out_retrieval_on_digits(name: str, options: dict) -> None:
    """Random features already give R@1 ≈ 0.95 on digits; MAP@R (≈ 0.4-0.5 at init) shows the
    learning: measured 0.40 → 0.63 (small CNN) and 0.48 → 0.69 (MLP) after 60 steps."""
    images, labels = _digits()
    if name == "mlp":
        images = images.flatten(1)
    train, test = slice(0, 1200), slice(1200, None)
    torch.manual_seed(0)
    model = create_model(name, **options)
    recall_before, map_before = _scores(model, images[test], labels[test])
    _train(model, images[train], labels[train], steps=60)
    recall_after, map_after = _scores(model, images[test], labels[test])
    assert recall_after > 0.95 and recall_after >= recall_before, (recall_before, recall_after)
    assert map_after > map_before + 0.1, (map_before, map_after)


@pytest.mark.slow
def test_resnet18_small_stem_learns_digits() -> None:
    images, labels = _digits()
    train, test = slice(0, 1200), slice(1200, None)
    torch.manual_seed(0)
    model = create_model("resnet18", stem="small", in_channels=1, embedding_dim=32)
    recall_before, map_before = _scores(model, images[test], labels[test])
    _train(model, images[train], labels[train], steps=40)
    recall_after, map_after = _scores(model, images[test], labels[test])
    # Measured: R@1 0.12 → 0.69-0.73 in 40 steps (the zero-initialised residual branches and
    # 512-d features make the untrained ResNet a poor embedding, unlike the small nets above).
    assert recall_after > recall_before + 0.3, (recall_before, recall_after)
    assert map_after > map_before + 0.1, (map_before, map_after)
