"""The text-pair training loop: it learns, re-mines on schedule, and rejects bad options."""

from __future__ import annotations

import random
import zlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tripletkit.training.text_pairs import (
    ShuffleParts,
    _parameter_groups,
    hard_batch_plan,
    layer_depths,
    train_text_pairs,
)


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


class UnnormalisedBagOfWords(BagOfWords):
    """BagOfWords as the backbone of an ``EmbeddingModel`` (which normalises)."""

    feature_dim = 16

    def forward(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            ids = torch.tensor([zlib.crc32(w.encode()) % self.buckets for w in text.split()])
            rows.append(self.table[ids].sum(0))
        return torch.stack(rows)


def test_the_loss_trains_through_a_projector_and_the_embedding_learns() -> None:
    from tripletkit.models import EmbeddingModel

    queries, documents = _pairs(16)
    torch.manual_seed(0)
    model = EmbeddingModel(UnnormalisedBagOfWords(), head="identity", projector=[32])
    before = _top1(model, queries, documents)
    projector = model.projector[-1]
    projector_before = projector.weight.detach().clone()
    calls = []
    projector.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    train_text_pairs(
        model,
        queries,
        documents,
        loss="mnrl",
        epochs=60,
        batch_size=8,
        lr=0.3,
        warmup_fraction=0.0,
        progress=False,
    )
    # Every step's forward pass went through the projector (2 sides x 120 steps), and it learned.
    assert len(calls) == 2 * 60 * 2
    assert not torch.equal(projector.weight, projector_before)
    # The embedding before the projector (what retrieval uses) learned the pairs.
    assert before < 0.2
    assert _top1(model, queries, documents) >= 0.5


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
        (dict(hard_batches=True, negatives=[["a"]] * 4), "own positives"),
        (dict(hard_batches=True, corpus=["a"], corpus_negatives=0), "corpus_negatives"),
        (dict(hard_batches=True, corpus=[]), "corpus is empty"),
        (dict(batch_size=1), "batch_size"),
        (dict(loss="arcface"), "loss"),
        (dict(epochs=0), "epochs"),
        (dict(layer_lr_decay=0.0), "layer_lr_decay"),
        (dict(layer_lr_decay=1.5), "layer_lr_decay"),
        (dict(positive_augment="shuffle"), "positive_augment must be a callable"),
        (dict(schedule="cosin"), "schedule"),
        (dict(warmup_fraction=1.0), "warmup_fraction"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(precision="fp16"), "precision"),
    ],
)
def test_bad_options(kwargs, message) -> None:
    queries, documents = _pairs(4)
    with pytest.raises((ValueError, TypeError), match=message):
        train_text_pairs(BagOfWords(), queries, documents, progress=False, **kwargs)


def test_a_non_finite_loss_raises_before_any_update(monkeypatch) -> None:
    import tripletkit.training.text_pairs as text_pairs

    # the step's loss, made NaN (the losses themselves reject non-finite embeddings earlier)
    real_step = text_pairs._step
    monkeypatch.setattr(
        text_pairs, "_step", lambda *args, **kwargs: real_step(*args, **kwargs) * float("nan")
    )
    model = BagOfWords()
    before = model.table.detach().clone()
    queries, documents = _pairs(4)
    with pytest.raises(FloatingPointError, match="loss became nan at step 0"):
        train_text_pairs(model, queries, documents, loss="mnrl", progress=False)
    assert torch.equal(model.table.detach(), before)


def test_mismatched_pairs() -> None:
    with pytest.raises(ValueError, match="same"):
        train_text_pairs(BagOfWords(), ["a", "b"], ["c"], progress=False)


@given(
    num_pairs=st.integers(0, 40),
    batch_size=st.integers(2, 9),
    fanout=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_hard_batch_plan_places_every_pair_once(num_pairs, batch_size, fanout, seed) -> None:
    rng = random.Random(seed)
    everyone = list(range(num_pairs + 5))
    pairs = rng.sample(everyone, num_pairs)  # a subset: the rest of an epoch
    neighbours = [rng.sample(everyone, min(fanout, len(everyone))) for _ in everyone]
    plan = hard_batch_plan(pairs, neighbours, batch_size, random.Random(seed))
    placed = [i for batch in plan for i in batch]
    assert sorted(placed) == sorted(pairs)
    assert sum(len(batch) < batch_size for batch in plan) <= 1
    assert len(plan) == -(-num_pairs // batch_size)


def test_hard_batch_plan_groups_neighbourhoods() -> None:
    # Four cliques of four pairs (interleaved indices): each batch of 4 is one clique.
    cliques = [[c + 4 * m for m in range(4)] for c in range(4)]
    neighbours = [[j for j in cliques[i % 4] if j != i] for i in range(16)]
    for seed in range(5):
        plan = hard_batch_plan(range(16), neighbours, 4, random.Random(seed))
        assert sorted(sorted(batch) for batch in plan) == sorted(cliques)


class CountingBagOfWords(BagOfWords):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def forward(self, texts: list[str]) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.batches.append(list(texts))
        return super().forward(texts)


@pytest.mark.parametrize("loss", ["triplet", "mnrl"])
def test_hard_batches_learn_without_extra_texts(loss) -> None:
    queries, documents = _pairs(16)
    model = CountingBagOfWords()
    result = train_text_pairs(
        model,
        queries,
        documents,
        loss=loss,
        hard_batches=True,
        num_negatives=3,
        epochs=20,
        batch_size=8,
        lr=0.1,
        warmup_fraction=0.0,
        remine_every=4,
        progress=False,
    )
    assert _top1(model, queries, documents) >= 0.9
    assert result.steps == 40 and result.minings == 5  # before step 0, at 8, 16, 24 and 32
    # Each step embeds its 8 queries and their 8 documents, nothing more; each epoch sees
    # every pair once.
    assert [len(texts) for texts in model.batches] == [8] * 80
    first_epoch = [t for texts in model.batches[:4] for t in texts if t.startswith("q")]
    assert sorted(first_epoch) == sorted(queries)


GROUPS = 4


def _group_pairs() -> tuple[list[str], list[str]]:
    # "q{i} g{group}" / "d{i} g{group}": 16 pairs in 4 groups of 4.
    queries = [f"q{i} g{i % GROUPS}" for i in range(16)]
    documents = [f"d{i} g{i % GROUPS}" for i in range(16)]
    return queries, documents


class GroupEncoder(torch.nn.Module):
    """Knows the groups: texts of one group are close, each text a little apart by its number."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, texts: list[str]) -> torch.Tensor:
        group = torch.tensor([int(t.split()[1][1:]) for t in texts])
        own = torch.tensor([int(t.split()[0][1:]) for t in texts]).float()
        base = torch.nn.functional.one_hot(group, GROUPS).float() * 10
        return torch.cat([base, own[:, None] * 0.01 * self.scale], dim=1)


def test_hard_batches_hold_the_mined_neighbours() -> None:
    """With an encoder that knows the groups, each batch is one group of mutually hard pairs."""
    queries, documents = _group_pairs()

    seen: list[set[int]] = []

    class Spy(GroupEncoder):
        def forward(self, texts):
            if torch.is_grad_enabled() and texts[0].startswith("q"):
                seen.append({int(t.split()[1][1:]) for t in texts})
            return super().forward(texts)

    train_text_pairs(
        Spy(),
        queries,
        documents,
        hard_batches=True,
        num_negatives=3,
        batch_size=4,
        epochs=1,
        lr=1e-3,
        progress=False,
    )
    assert len(seen) == 4 and all(len(g) == 1 for g in seen)  # one group per batch


def test_hard_batches_append_negatives_mined_from_a_corpus() -> None:
    """With a corpus, each step's documents are the batch's positives plus, for each query, its
    ``corpus_negatives`` hardest corpus documents (here: those of the query's own group)."""
    queries, documents = _group_pairs()
    corpus = [f"x{j} g{j % GROUPS}" for j in range(40)]

    steps: list[tuple[list[str], list[str]]] = []

    class Spy(GroupEncoder):
        def forward(self, texts):
            if torch.is_grad_enabled():
                if texts[0].startswith("q"):
                    steps.append((list(texts), []))
                else:
                    steps[-1][1].extend(texts)
            return super().forward(texts)

    result = train_text_pairs(
        Spy(),
        queries,
        documents,
        corpus=corpus,
        corpus_negatives=2,
        hard_batches=True,
        num_negatives=3,
        batch_size=4,
        epochs=2,
        remine_every=1,
        lr=1e-3,
        progress=False,
    )
    assert result.steps == 8 and result.minings == 2
    for batch_queries, batch_documents in steps:
        positives, negatives = batch_documents[:4], batch_documents[4:]
        assert all(p.startswith("d") for p in positives)
        assert len(negatives) == 2 * len(batch_queries)
        assert all(n.startswith("x") for n in negatives)
        query_groups = sorted(q.split()[1] for q in batch_queries for _ in range(2))
        assert sorted(n.split()[1] for n in negatives) == query_groups


def _batch_all_reference(anchors, refs, margin):
    """Brute-force batch-all over pairs: anchor i's positive is ref i, every other ref a negative;
    the mean of [d(a, p) - d(a, n) + margin]+ over the triplets where it is > 0 (cosine)."""
    a = torch.nn.functional.normalize(anchors.double(), dim=1)
    r = torch.nn.functional.normalize(refs.double(), dim=1)
    dist = 1 - a @ r.T
    terms = [
        float(dist[i, i] - dist[i, j] + margin)
        for i in range(len(a))
        for j in range(len(r))
        if j != i
    ]
    active = [t for t in terms if t > 0]
    return sum(active) / max(len(active), 1)


@pytest.mark.parametrize("symmetric", [False, True])
def test_triplet_step_against_brute_force(symmetric) -> None:
    from tripletkit.losses import BatchTripletLoss
    from tripletkit.training.text_pairs import _Autocast, _step

    queries, documents = _pairs(5)
    model = BagOfWords(seed=3)
    loss_fn = BatchTripletLoss(margin=0.3, mining="all", distance="cosine")
    with torch.no_grad():
        got = float(
            _step(
                _Autocast("cpu", False), model, loss_fn, symmetric, queries, documents, [None] * 5
            )
        )
        q, d = model(queries), model(documents)
    forward = _batch_all_reference(q, d, 0.3)
    expected = (forward + _batch_all_reference(d, q, 0.3)) / 2 if symmetric else forward
    assert got == pytest.approx(expected, rel=1e-5)
    if symmetric:  # the reverse direction is not the forward one again
        assert _batch_all_reference(d, q, 0.3) != pytest.approx(forward, rel=1e-3)


@pytest.mark.parametrize("margin", [None, 0.0, 0.2])
def test_mnrl_margin_reaches_the_loss(margin) -> None:
    """``margin`` is MNRL's additive margin (None: plain MNRL): the first step's loss, over one
    batch holding every pair, is the reference loss of the untrained model with that margin."""
    from tripletkit.functional import multiple_negatives_ranking_loss

    queries, documents = _pairs(6)
    model = BagOfWords(seed=5)
    model.eval()  # no dropout in this model; the loop's train() changes nothing here
    with torch.no_grad():
        expected = float(
            multiple_negatives_ranking_loss(
                model(queries), model(documents), margin=margin or 0.0, temperature=0.05
            )
        )
    seen: list[float] = []
    train_text_pairs(
        model,
        queries,
        documents,
        loss="mnrl",
        margin=margin,
        batch_size=6,
        epochs=1,
        progress=False,
        on_step=lambda step, value: seen.append(value),
    )
    assert seen[0] == pytest.approx(expected, rel=1e-5)
    if margin:
        with torch.no_grad():
            plain = float(
                multiple_negatives_ranking_loss(
                    BagOfWords(seed=5)(queries), BagOfWords(seed=5)(documents), temperature=0.05
                )
            )
        assert seen[0] > plain + 1.0  # 0.2 / 0.05 = 4 logits of margin: clearly larger


class TinyTransformer(torch.nn.Module):
    """Parameter names as in a Hugging Face BERT: embeddings, encoder.layer.i, pooler."""

    def __init__(self, layers: int = 3) -> None:
        super().__init__()
        self.embeddings = torch.nn.Module()
        self.embeddings.word_embeddings = torch.nn.Embedding(10, 4)
        self.embeddings.LayerNorm = torch.nn.LayerNorm(4)
        self.encoder = torch.nn.Module()
        self.encoder.layer = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(layers))
        self.pooler = torch.nn.Linear(4, 4)


def test_layer_depths_and_layer_wise_learning_rates() -> None:
    model = TinyTransformer(layers=3)
    depths = layer_depths(model)
    assert depths["embeddings.word_embeddings.weight"] == depths["embeddings.LayerNorm.bias"] == 0
    assert [depths[f"encoder.layer.{i}.weight"] for i in range(3)] == [1, 2, 3]
    assert depths["pooler.weight"] == depths["pooler.bias"] == 4
    lr_of = {}
    for group in _parameter_groups(model, 1e-3, 0.01, 0.5):
        for parameter in group["params"]:
            lr_of[parameter] = (group["lr"], group["weight_decay"])
    expected = {  # lr · 0.5^(4 - depth); no weight decay on 1-d parameters
        model.embeddings.word_embeddings.weight: (1e-3 / 16, 0.01),
        model.embeddings.LayerNorm.weight: (1e-3 / 16, 0.0),
        model.encoder.layer[0].weight: (1e-3 / 8, 0.01),
        model.encoder.layer[1].bias: (1e-3 / 4, 0.0),
        model.encoder.layer[2].weight: (1e-3 / 2, 0.01),
        model.pooler.weight: (1e-3, 0.01),
        model.pooler.bias: (1e-3, 0.0),
    }
    for parameter, value in expected.items():
        assert lr_of[parameter] == pytest.approx(value)
    assert len(lr_of) == sum(1 for _ in model.parameters())
    # Without the decay: one rate, the two weight-decay groups in parameter order.
    plain = _parameter_groups(model, 1e-3, 0.01, None)
    assert [(g["lr"], g["weight_decay"]) for g in plain] == [(1e-3, 0.01), (1e-3, 0.0)]
    assert [p for g in plain for p in g["params"]] == [
        p for p in model.parameters() if p.dim() > 1
    ] + [p for p in model.parameters() if p.dim() <= 1]


# Positive augmentation ------------------------------------------------------------------------


@given(
    parts=st.lists(st.sampled_from(["a", "b", "c d", "e", "f g h"]), min_size=0, max_size=6),
    p=st.sampled_from([0.0, 0.5, 1.0]),
    drop=st.sampled_from([0.0, 0.3, 0.9]),
    seed=st.integers(0, 2**16),
)
def test_shuffle_parts_keeps_a_non_empty_sub_multiset(parts, p, drop, seed) -> None:
    text = ", ".join(parts)
    out = ShuffleParts(p=p, drop=drop)(text, random.Random(seed))
    if len(parts) < 2 or p == 0:
        assert out == text  # one part (or none), or never augmented: untouched
        return
    kept = out.split(", ")
    assert 1 <= len(kept) <= len(parts)
    remaining = list(parts)
    for part in kept:  # a sub-multiset: duplicates are kept at most as often as they occur
        remaining.remove(part)
    if drop == 0:
        assert sorted(kept) == sorted(parts)


def test_shuffle_parts_rates() -> None:
    """Over many draws: augmented with probability p; each part dropped with probability drop;
    every order of the kept parts appears."""
    augment = ShuffleParts(p=0.5, drop=0.3)
    rng = random.Random(0)
    text = "a, b, c, d"
    outs = [augment(text, rng) for _ in range(20_000)]
    changed = [o for o in outs if o != text]
    # P(unchanged | augmented) = P(all kept and the shuffle is the identity) = 0.7^4 / 24.
    expected_changed = 0.5 * (1 - 0.7**4 / 24)
    assert abs(len(changed) / len(outs) - expected_changed) < 0.015
    # Among the changed draws, the mean number of parts kept: 4 * 0.7 parts per augmented draw
    # (+ 1 for the 0.3^4 whose parts were all dropped: one is kept), less the unchanged ones
    # (all 4 kept, identity order: probability 0.7^4 / 24).
    unchanged = 0.7**4 / 24
    mean_kept = sum(len(o.split(", ")) for o in changed) / len(changed)
    assert abs(mean_kept - (4 * 0.7 + 0.3**4 - 4 * unchanged) / (1 - unchanged)) < 0.03
    full = {o for o in outs if len(o.split(", ")) == 4}
    assert len(full) == 24


def test_shuffle_parts_other_separator_and_empty_parts() -> None:
    augment = ShuffleParts(separator=" | ", p=1.0, drop=0.0)
    out = augment("x |  | y | z", random.Random(3))
    assert sorted(out.split(" | ")) == ["x", "y", "z"]  # the empty piece is not a part


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(p=1.5), "p must be"),
        (dict(p=True), "p must be"),
        (dict(drop=-0.1), "drop must be"),
        (dict(drop=1.0), "drop must be below 1"),
        (dict(separator=""), "separator"),
    ],
)
def test_shuffle_parts_bad_options(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        ShuffleParts(**kwargs)


def test_positive_augment_reaches_the_steps_only() -> None:
    """The augmentation changes the positives a step embeds, never the queries, the mining or
    the pairs' order: with an augmentation that tags its input, every step embeds the same
    pairs as without it, with tagged positives, and mining embeds the documents as given."""
    queries, documents = _group_pairs()
    corpus = [f"x{j} g{j % GROUPS}" for j in range(12)]
    calls: list[str] = []

    def tag(text: str, rng: random.Random) -> str:
        assert isinstance(rng, random.Random)
        calls.append(text)
        return text + " tagged"

    runs = {}
    for augment in (None, tag):
        embedded: list[tuple[bool, list[str]]] = []

        class Spy(GroupEncoder):
            def __init__(self, log):
                super().__init__()
                self.log = log

            def forward(self, texts):
                self.log.append((torch.is_grad_enabled(), list(texts)))
                return super().forward(texts)

        train_text_pairs(
            Spy(embedded),
            queries,
            documents,
            corpus=corpus,
            hard_batches=True,
            num_negatives=3,
            loss="mnrl",
            batch_size=4,
            epochs=2,
            remine_every=1,
            lr=1e-3,
            positive_augment=augment,
            progress=False,
        )
        runs[augment is None] = embedded
    plain, tagged = runs[True], runs[False]
    assert len(plain) == len(tagged)
    for (grad_a, texts_a), (grad_b, texts_b) in zip(plain, tagged, strict=True):
        assert grad_a == grad_b
        if grad_a and texts_a[0].startswith("d"):  # a step's documents: positives first
            assert texts_b[:4] == [t + " tagged" for t in texts_a[:4]]
            assert texts_b[4:] == texts_a[4:]  # appended negatives untouched
        else:  # queries, and every mining pass
            assert texts_b == texts_a
    assert len(calls) == 2 * len(documents)  # each positive once per epoch


def test_positive_augment_draws_are_reproducible() -> None:
    queries, documents = _pairs(8)
    documents = [f"{d}, alias{i}, other{i}" for i, d in enumerate(documents)]
    seen = []
    for _ in range(2):
        model = CountingBagOfWords()
        train_text_pairs(
            model,
            queries,
            documents,
            loss="mnrl",
            batch_size=4,
            epochs=1,
            lr=1e-3,
            positive_augment=ShuffleParts(p=1.0, drop=0.3),
            seed=5,
            progress=False,
        )
        seen.append(model.batches)
    assert seen[0] == seen[1]
    positives = [t for texts in seen[0] for t in texts if not t.startswith("q")]
    assert any(t not in documents for t in positives)  # some were augmented


@pytest.mark.parametrize("hard_batches", [False, True])
def test_lexical_negatives_reach_every_step(hard_batches) -> None:
    """Each query's mentioned documents (from the corpus or another pair's positive) are appended
    to every step that trains it, after the mined ones, and the mining stays as it was."""
    queries = [f"q{i} about d{(i + 1) % 8} and x{i}" for i in range(8)]
    documents = [f"d{i}" for i in range(8)]
    corpus = [f"x{i}" for i in range(8)] + ["y0", "y1"]
    model = CountingBagOfWords()
    result = train_text_pairs(
        model,
        queries,
        documents,
        corpus=corpus,
        hard_batches=hard_batches,
        corpus_negatives=1,
        num_negatives=1,
        lexical_negatives=2,
        batch_size=4,
        epochs=2,
        lr=1e-3,
        loss="triplet",
        progress=False,
    )
    assert result.steps == 4
    for texts in model.batches[1::2]:  # the documents of each step
        positives, negatives = texts[:4], texts[4:]
        for positive in positives:
            i = int(positive[1:])
            # query i mentions d{i+1} (both of length 2: either may come first) and x{i}
            lexical = {f"d{(i + 1) % 8}", f"x{i}"}
            assert lexical <= set(negatives)
        # one mined negative per query, then its two lexical ones not already mined
        assert 4 * 2 <= len(negatives) <= 4 * 3


def test_lexical_negatives_bad_value() -> None:
    queries, documents = _pairs(4)
    for value in (-1, 1.5, True):
        with pytest.raises(ValueError, match="lexical_negatives"):
            train_text_pairs(
                BagOfWords(), queries, documents, lexical_negatives=value, progress=False
            )


class ProjectedBagOfWords(BagOfWords):
    """BagOfWords then a linear layer: a matmul that bfloat16 autocast runs in bfloat16.
    Records the dtype of every output (training steps and mining alike)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed=seed)
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(16, 16)
        self.output_dtypes: list[torch.dtype] = []

    def forward(self, texts: list[str]) -> torch.Tensor:
        rows = [
            self.table[torch.tensor([zlib.crc32(w.encode()) % self.buckets for w in t.split()])]
            for t in texts
        ]
        out = self.linear(torch.stack([r.sum(0) for r in rows]))
        self.output_dtypes.append(out.dtype)
        return out


def _train_with_precision(precision: str) -> tuple[ProjectedBagOfWords, object]:
    queries, documents = _pairs(16)
    model = ProjectedBagOfWords(seed=2)
    result = train_text_pairs(
        model,
        queries,
        documents,
        corpus=documents,
        loss="mnrl",
        epochs=2,
        batch_size=8,
        lr=0.05,
        remine_every=1,
        precision=precision,
        progress=False,
    )
    return model, result


def test_bf16_runs_the_forward_passes_in_bfloat16_and_keeps_float32_weights() -> None:
    fp32, fp32_result = _train_with_precision("fp32")
    bf16, bf16_result = _train_with_precision("bf16")
    assert fp32_result.precision == "fp32" and bf16_result.precision == "bf16"
    assert set(fp32.output_dtypes) == {torch.float32}
    # Every forward pass, the training steps' and the two minings', ran under autocast.
    assert set(bf16.output_dtypes) == {torch.bfloat16}
    assert len(bf16.output_dtypes) == len(fp32.output_dtypes)
    for p in bf16.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
    pairs = zip(fp32.parameters(), bf16.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
    assert bf16_result.losses[-1] < bf16_result.losses[0]


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_where_the_cpu_computes_it(monkeypatch, native, expected) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    auto, result = _train_with_precision("auto")
    same, _ = _train_with_precision(expected)
    assert result.precision == expected
    for a, b in zip(auto.parameters(), same.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bf16_mining_keeps_its_cache_apart_from_float32(tmp_path) -> None:
    queries, documents = _pairs(16)
    options = {"cache_dir": str(tmp_path)}
    from tripletkit.models import EmbeddingModel

    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)  # a text model with .embed, which the cache fingerprints
        model = EmbeddingModel(UnnormalisedBagOfWords(), head="linear", embedding_dim=8)
        train_text_pairs(
            model,
            queries,
            documents,
            corpus=documents,
            loss="mnrl",
            epochs=1,
            batch_size=8,
            mining_options=options,
            precision=precision,
            progress=False,
        )
    # The same starting weights mined once in each precision: two cache entries, not one.
    assert len(list(tmp_path.glob("mining-*"))) == 2


def test_mining_under_bf16_searches_float32_vectors() -> None:
    from tripletkit.training.text_pairs import _Autocast, _AutocastEncoder

    model = ProjectedBagOfWords(seed=1)
    texts = ["d1 d1y", "d2 d2y", "q3 common"]
    vectors = _AutocastEncoder(model, _Autocast("cpu", True), batch_size=2)(texts)
    assert vectors.dtype == torch.float32  # what the search (outside autocast) gets
    assert model.output_dtypes[-1] == torch.bfloat16  # the model itself ran in bfloat16
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(texts).float()
    torch.testing.assert_close(vectors, expected, rtol=0, atol=0)

    # A text model with .embed (as the bundled encoder): embedded through it, under autocast.
    from tripletkit.models import EmbeddingModel

    torch.manual_seed(0)
    embedding_model = EmbeddingModel(UnnormalisedBagOfWords(), head="linear", embedding_dim=8)
    vectors = _AutocastEncoder(embedding_model, _Autocast("cpu", True), batch_size=2)(texts)
    assert vectors.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = embedding_model.embed(texts).float()
    torch.testing.assert_close(vectors, expected, rtol=0, atol=0)
    plain = embedding_model.embed(texts)
    assert not torch.equal(vectors, plain)  # the autocast changed the embedding
