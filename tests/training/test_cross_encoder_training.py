"""train_cross_encoder with toy pair scorers: the loss is each query's softmax cross-entropy over
its positive and drawn negatives (checked by hand, lists of unequal length included), training
learns a separable ranking, and bad input is a clear error."""

from __future__ import annotations

import math

import pytest
import torch

from tripletkit.training.cross_encoder import train_cross_encoder


class TableScorer(torch.nn.Module):
    """score(q, d) = table[q][d]: one learnable number per (query, document) name."""

    def __init__(self, queries, documents, initial=None):
        super().__init__()
        self.rows = {q: i for i, q in enumerate(queries)}
        self.columns = {d: j for j, d in enumerate(documents)}
        values = torch.zeros(len(queries), len(documents)) if initial is None else initial
        self.table = torch.nn.Parameter(values.clone().float())
        self.calls = []

    def forward(self, queries, documents):
        self.calls.append((list(queries), list(documents)))
        rows = torch.tensor([self.rows[q] for q in queries])
        columns = torch.tensor([self.columns[d] for d in documents])
        return self.table[rows, columns]


def test_first_loss_is_the_softmax_cross_entropy_of_each_list():
    queries, documents = ["q0", "q1"], ["a", "b", "c", "d"]
    initial = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.0, 1.0, 3.0, -2.0]])
    model = TableScorer(queries, documents, initial)
    losses = []
    # q0: positive a, negatives b and c (all drawn); q1: positive c, one candidate d, plus its
    # own positive listed among its candidates (dropped)
    train_cross_encoder(
        model,
        queries,
        ["a", "c"],
        [["b", "c"], ["d", "c"]],
        num_negatives=5,
        batch_size=2,
        epochs=1,
        lr=1e-3,
        progress=False,
        on_step=lambda step, loss: losses.append(loss),
    )
    expected_q0 = -2.0 + math.log(math.exp(2.0) + math.exp(0.5) + math.exp(-1.0))
    expected_q1 = -3.0 + math.log(math.exp(3.0) + math.exp(-2.0))
    assert losses == [pytest.approx((expected_q0 + expected_q1) / 2, rel=1e-6)]
    (pair_queries, pair_documents) = model.calls[0]
    scored = sorted(zip(pair_queries, pair_documents, strict=True))
    assert scored == [("q0", "a"), ("q0", "b"), ("q0", "c"), ("q1", "c"), ("q1", "d")]


def test_learns_to_put_every_positive_first_and_counts_skipped_queries():
    torch.manual_seed(0)
    documents = [f"doc {i}" for i in range(8)]
    queries = [f"query {i}" for i in range(8)]
    model = TableScorer([*queries, "lonely"], documents)
    candidates = [[d for d in documents if d != f"doc {i}"] for i in range(8)]
    result = train_cross_encoder(
        model,
        [*queries, "lonely"],
        [*documents, "doc 0"],
        [*candidates, ["doc 0"]],  # its only candidate is its positive: skipped
        num_negatives=3,
        batch_size=4,
        epochs=30,
        lr=0.5,
        head_lr=None,
        warmup_fraction=0.0,
        progress=False,
    )
    assert result.skipped_queries == 1
    assert result.steps == 60  # 8 usable queries, batches of 4, 30 epochs
    assert result.losses[-1] < 0.1 * result.losses[0]
    table = model.table.detach()
    for i in range(8):
        assert table[i].argmax().item() == i
    assert not model.training  # left in eval mode


def test_bad_input_is_a_clear_error():
    model = TableScorer(["q"], ["a", "b"])
    with pytest.raises(ValueError, match="one entry per pair"):
        train_cross_encoder(model, ["q"], ["a"], [], progress=False)
    with pytest.raises(ValueError, match="nothing to train on"):
        train_cross_encoder(model, ["q"], ["a"], [["a"]], progress=False)
    with pytest.raises(ValueError, match="num_negatives"):
        train_cross_encoder(model, ["q"], ["a"], [["b"]], num_negatives=0, progress=False)
    with pytest.raises(TypeError, match=r"candidates\[0\]\[0\] is int"):
        train_cross_encoder(model, ["q"], ["a"], [[3]], progress=False)

    class Broken(TableScorer):
        def forward(self, queries, documents):
            return super().forward(queries, documents) * float("nan")

    broken = Broken(["q"], ["a", "b"], torch.tensor([[1.0, 2.0]]))
    with pytest.raises(FloatingPointError, match="loss became nan at step 0"):
        train_cross_encoder(broken, ["q"], ["a"], [["b"]], progress=False)
    assert broken.table.detach().tolist() == [[1.0, 2.0]]  # raised before any update

    class WrongShape(TableScorer):
        def forward(self, queries, documents):
            return super().forward(queries, documents)[None]

    with pytest.raises(ValueError, match="one score per pair"):
        train_cross_encoder(WrongShape(["q"], ["a", "b"]), ["q"], ["a"], [["b"]], progress=False)


def test_the_score_layer_trains_at_its_own_learning_rate():
    class WithHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(1, 1, bias=False)
            self.head = torch.nn.Linear(1, 1, bias=False)
            for layer in (self.body, self.head):
                torch.nn.init.ones_(layer.weight)

        def forward(self, queries, documents):
            x = torch.tensor(
                [[float(len(q) - len(d))] for q, d in zip(queries, documents, strict=True)]
            )
            return self.head(self.body(x)).squeeze(-1)

    model = WithHead()
    # one step of AdamW (no warm-up, no decay, no clipping) moves each weight by its group's lr
    train_cross_encoder(
        model,
        ["qq"],
        ["d"],
        [["ddd"]],
        lr=1e-3,
        head_lr=1e-1,
        warmup_fraction=0.0,
        schedule="constant",
        weight_decay=0.0,
        max_grad_norm=None,
        progress=False,
    )
    assert abs(model.body.weight.item() - 1.0) == pytest.approx(1e-3, rel=1e-3)
    assert abs(model.head.weight.item() - 1.0) == pytest.approx(1e-1, rel=1e-3)
