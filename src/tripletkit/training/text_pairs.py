"""Fine-tuning a text encoder on (query, positive) pairs with mined hard negatives.

The loop for retrieval data (RAG: query = anchor, relevant chunk = positive), where pairs rather
than class labels say what belongs together. Each step embeds a batch of B queries, their B
positives and their ``num_negatives`` mined hard negatives each, and applies one of:

* ``loss="triplet"``: :class:`~tripletkit.losses.BatchTripletLoss` with the queries as anchors and
  every positive and negative of the batch as references (labels by text, so a query's own
  positive is its only positive and everything else is a negative): ``[d(q, p) - d(q, n) + α]+``
  over in-batch *and* mined negatives, selected by ``triplet_mining`` (``"all"``: every violating
  triplet, the default);
* ``loss="mnrl"``: :class:`~tripletkit.losses.MultipleNegativesRankingLoss` (InfoNCE with
  in-batch negatives plus the mined ones).

**Hard negatives** come from :func:`tripletkit.mining.negatives.mine_hard_negatives` against
``corpus`` with the model being trained; since the embedding moves, they go stale, and
``remine_every`` (in epochs, e.g. ``0.5``) mines them again with the current weights. A pair for
which no eligible negative is found trains with in-batch negatives only.

**Hard batches** (``hard_batches=True``) use the mined negatives differently: the pairs' own
positives are the corpus, and each batch is assembled from pairs whose documents are one another's
hard negatives (a random seed pair, then its mined neighbours, then theirs, until the batch is
full). Every in-batch negative is then a hard one, at no extra forward pass: a step embeds ``2B``
texts, as with in-batch negatives only, where appending ``n`` mined negatives per query embeds
``(2 + n)B``. Re-mining re-plans the batches of the rest of the epoch. With hard batches, a
``corpus`` is optional and means something else: documents that answer none of the training
queries (unlabelled text of the same kind), from which ``corpus_negatives`` hard negatives per
query are mined, re-mined with the batches, and appended to each step.

The learning rate follows :func:`tripletkit.training.schedule.lr_factor` (linear warm-up, then
linear decay by default, as sentence-transformers), with AdamW and gradient clipping.

Example:
    >>> import torch
    >>> class BagOfLetters(torch.nn.Module):   # a toy text model
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.proj = torch.nn.Linear(26, 8)
    ...     def forward(self, texts):
    ...         counts = torch.zeros(len(texts), 26)
    ...         for i, t in enumerate(texts):
    ...             for c in t:
    ...                 if c.isalpha() and c.isascii():
    ...                     counts[i, ord(c.lower()) - 97] += 1
    ...         return torch.nn.functional.normalize(self.proj(counts), dim=1)
    >>> model = BagOfLetters()
    >>> result = train_text_pairs(model, ["a cat", "a dog"], ["cat", "dog"], corpus=["cow", "cap"],
    ...                           batch_size=2, epochs=2, lr=1e-2, progress=False)
    >>> result.steps, len(result.losses)
    (2, 2)
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tripletkit.evaluation.text import split_parts
from tripletkit.losses import BatchTripletLoss, MultipleNegativesRankingLoss
from tripletkit.models.embedding import uses_projector
from tripletkit.training.precision import autocast as precision_autocast
from tripletkit.training.precision import resolve_precision
from tripletkit.training.schedule import SCHEDULES
from tripletkit.training.steps import StepLoop
from tripletkit.validation import check_choice, check_positive

__all__ = [
    "TEXT_PAIR_LOSSES",
    "ShuffleParts",
    "TextPairResult",
    "hard_batch_plan",
    "train_text_pairs",
]

TEXT_PAIR_LOSSES: tuple[str, ...] = ("triplet", "mnrl")
#: The precisions of :func:`train_text_pairs` (float16 would need a loss scale; the Trainer has it).
TEXT_PAIR_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class _Autocast:
    """A fresh autocast context for each forward pass: bfloat16 when ``bf16``, else none."""

    device_type: str
    bf16: bool

    def __call__(self) -> torch.autocast:
        return precision_autocast("bf16" if self.bf16 else "fp32", self.device_type)


@dataclass
class TextPairResult:
    """What a text-pair training did.

    Attributes:
        steps: optimizer steps taken.
        losses: the loss of every step.
        seconds: wall-clock seconds of the whole call (mining included).
        mining_seconds: of which mining hard negatives.
        minings: how many times negatives were mined (the first time included).
        mining_dropped: pairs left without a mined negative, per mining.
        precision: what the forward passes ran in (``precision`` with ``"auto"`` resolved).
    """

    steps: int
    losses: list[float]
    seconds: float
    mining_seconds: float = 0.0
    minings: int = 0
    mining_dropped: list[int] = field(default_factory=list)
    precision: str = "fp32"


@dataclass(frozen=True)
class ShuffleParts:
    """A positive augmentation for documents made of parts (a synonym list, tags, chunks): with
    probability ``p``, the document's parts (:func:`~tripletkit.evaluation.text.split_parts`) in
    random order, each dropped with probability ``drop`` (one is always kept). A document of one
    part is left as it is. For :func:`train_text_pairs`'s ``positive_augment``: the model learns
    that a list is the same whatever its order, and that a query matches a document through some
    of its parts, as :func:`~tripletkit.evaluation.text.rank_of_correct`'s ``corpus_parts`` score.
    Measure it before adopting it: on the WordNet benchmark, whose test documents keep their
    lemmas in WordNet's order, it cost 1.6 points of Recall@1 (README, "Text retrieval").

    >>> augment = ShuffleParts(p=1.0, drop=0.0)
    >>> augment("dog, domestic dog, Canis familiaris", random.Random(1))
    'dog, Canis familiaris, domestic dog'
    >>> augment("cat", random.Random(1))
    'cat'
    """

    separator: str = ", "
    p: float = 0.5
    drop: float = 0.3

    def __post_init__(self) -> None:
        if not self.separator:
            raise ValueError("separator must be a non-empty string")
        for name in ("p", "drop"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= 1
            ):
                raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}")
        if self.drop == 1:
            raise ValueError("drop must be below 1: drop = 1 would keep one random part only")

    def __call__(self, text: str, rng: random.Random) -> str:
        if rng.random() >= self.p:
            return text
        parts = split_parts(text, self.separator)
        if len(parts) < 2:
            return text
        kept = [part for part in parts if rng.random() >= self.drop] or [rng.choice(parts)]
        rng.shuffle(kept)
        return self.separator.join(kept)


def _embed_batch(model: torch.nn.Module, texts: list[str]) -> torch.Tensor:
    # What the loss trains: through the model's training-only projector when it has one (mining
    # and evaluation use the embedding before it).
    if uses_projector(model):
        embeddings = model(texts, project=True)
    else:
        embeddings = model(texts)
    return torch.nn.functional.normalize(embeddings.float(), dim=1)


def _mine(
    model: torch.nn.Module,
    queries: list[str],
    positives: list[str],
    corpus: list[str],
    num_negatives: int,
    mining_options: dict[str, Any],
    batch_size: int,
    autocast: _Autocast,
) -> tuple[list[list[str] | None], int]:
    from tripletkit.mining.negatives import mine_hard_negatives

    was_training = model.training
    model.eval()
    encoder = model if hasattr(model, "embed") else _FunctionEncoder(model, batch_size)
    if autocast.bf16:
        from tripletkit.mining.negatives import _model_fingerprint

        # The model embeds under autocast; the search over its (float32) vectors does not.
        encoder = _AutocastEncoder(encoder, autocast, batch_size)
        if mining_options.get("cache_dir") is not None:
            # The wrapper is no module, so the cache names the model itself (and the precision:
            # float32 and bfloat16 vectors of the same weights are not interchangeable).
            name = _model_fingerprint(model, mining_options.get("model_id"))
            if name is not None:
                mining_options = {**mining_options, "model_id": f"{name} (bf16 autocast)"}
    try:
        mined = mine_hard_negatives(
            queries,
            positives,
            corpus,
            encoder,
            num_negatives=num_negatives,
            batch_size=batch_size,
            progress=False,
            **mining_options,
        )
    finally:
        model.train(was_training)
    negatives: list[list[str] | None] = [None] * len(queries)
    for pair, row in zip(mined.pair_index.tolist(), mined.negatives, strict=True):
        negatives[pair] = row
    return negatives, mined.dropped_pairs


class _AutocastEncoder:
    """Embeds with ``encoder`` (a text model or a function) under ``autocast``, in float32 out."""

    def __init__(self, encoder: Any, autocast: _Autocast, batch_size: int) -> None:
        self.encoder = encoder
        self.autocast = autocast
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> torch.Tensor:
        from tripletkit.models.text import embed_texts

        with self.autocast():
            if hasattr(self.encoder, "embed"):
                vectors = embed_texts(self.encoder, texts, batch_size=self.batch_size)
            else:
                vectors = self.encoder(texts)
        return torch.as_tensor(vectors).float()


class _FunctionEncoder:
    """Embeds with a module that has no ``embed`` method (batched, no gradients)."""

    def __init__(self, model: torch.nn.Module, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            parts = [
                self.model(texts[i : i + self.batch_size])
                for i in range(0, len(texts), self.batch_size)
            ]
        return torch.cat(parts) if parts else torch.zeros(0, 1)


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def layer_depths(model: torch.nn.Module) -> dict[str, int]:
    """Depth of each trainable parameter of a transformer text model, by name: ``0`` for the
    embeddings (a name with ``embeddings``), ``i + 1`` inside layer ``i`` (``layer.i.``,
    ``layers.i.``, ``h.i.``, ``block.i.``), and one more than the deepest layer for the rest
    (pooler, projection head). A model without numbered layers gets depth 0 everywhere.

    >>> net = torch.nn.Module()
    >>> net.embeddings = torch.nn.Linear(2, 2)
    >>> net.layer = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)])
    >>> net.head = torch.nn.Linear(2, 2, bias=False)
    >>> layer_depths(net)
    {'embeddings.weight': 0, 'embeddings.bias': 0, 'layer.0.weight': 1, 'layer.0.bias': 1, 'layer.1.weight': 2, 'layer.1.bias': 2, 'head.weight': 3}
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    layer = {n: _LAYER_INDEX.search(n + ".") for n, _ in named}
    deepest = max((int(m.group(1)) for m in layer.values() if m), default=-1)
    if deepest < 0:
        return {n: 0 for n, _ in named}
    depths = {}
    for name, _ in named:
        match = layer[name]
        if match:
            depths[name] = int(match.group(1)) + 1
        elif "embeddings" in name.split("."):
            depths[name] = 0
        else:
            depths[name] = deepest + 2
    return depths


def _parameter_groups(
    model: torch.nn.Module, lr: float, weight_decay: float, layer_lr_decay: float | None
) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and norms (1-d parameters), and with
    ``layer_lr_decay`` one learning rate per depth of :func:`layer_depths`."""
    depths = layer_depths(model) if layer_lr_decay is not None else {}
    top = max(depths.values(), default=0)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth = depths.get(name, top)
        decays = parameter.dim() > 1
        group = groups.setdefault(
            (depth, decays),
            {
                "params": [],
                "weight_decay": weight_decay if decays else 0.0,
                "lr": lr * (layer_lr_decay or 1.0) ** (top - depth),
            },
        )
        group["params"].append(parameter)
    return list(groups.values())


def train_text_pairs(
    model: torch.nn.Module,
    queries: Sequence[str],
    positives: Sequence[str],
    *,
    corpus: Sequence[str] | None = None,
    negatives: Sequence[Sequence[str]] | None = None,
    loss: str = "triplet",
    margin: float | None = None,
    triplet_mining: str = "all",
    temperature: float = 0.05,
    symmetric: bool = False,
    num_negatives: int = 1,
    hard_batches: bool = False,
    corpus_negatives: int = 1,
    remine_every: float | None = None,
    mining_options: dict[str, Any] | None = None,
    corpus_mining_options: dict[str, Any] | None = None,
    epochs: float = 1,
    batch_size: int = 32,
    lr: float = 2e-5,
    warmup_fraction: float = 0.1,
    schedule: str = "linear",
    weight_decay: float = 0.01,
    max_grad_norm: float | None = 1.0,
    layer_lr_decay: float | None = None,
    positive_augment: Callable[[str, random.Random], str] | None = None,
    lexical_negatives: int = 0,
    lexical_separator: str | None = ", ",
    seed: int = 0,
    precision: str = "fp32",
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TextPairResult:
    """Fine-tune ``model`` (``list[str] -> (B, D)``) on pairs; see the module docstring.

    Args:
        model: a text model, e.g. ``create_model("text_encoder")``; trained in place.
        queries, positives: ``P`` texts each (pair ``i`` = ``(queries[i], positives[i])``).
        corpus: texts to mine hard negatives from (``None`` with no ``negatives``: in-batch
            negatives only). With ``hard_batches``: optional documents that answer none of the
            queries, from which ``corpus_negatives`` negatives per query are appended.
        negatives: fixed negatives per pair (``P`` lists), instead of mining.
        loss: ``"triplet"`` or ``"mnrl"``.
        margin: in cosine distance (``[0, 2]``): α of the triplet loss (None: 0.3), or the
            additive margin of the multiple-negatives ranking loss (None: 0, plain MNRL; see
            :func:`~tripletkit.functional.multiple_negatives_ranking_loss`).
        triplet_mining: the :class:`~tripletkit.losses.BatchTripletLoss` mining mode.
        temperature: of the multiple-negatives ranking loss.
        symmetric: also rank the queries for each positive (the reverse direction, averaged
            with the forward one): MNRL's own option, and for the triplet loss each positive as
            an anchor against the batch's queries.
        num_negatives: mined negatives per pair (with ``hard_batches``, the neighbours that
            a pair pulls into its batch).
        hard_batches: compose batches of mutually hard pairs (see the module docstring); mines
            among the positives, so ``negatives`` must be None.
        corpus_negatives: with ``hard_batches`` and a ``corpus``, the negatives per query
            mined from it and appended to each step.
        remine_every: mine again every this many epochs (``None``: mine once, before training).
        mining_options: more keyword arguments of ``mine_hard_negatives`` (``rank_range``,
            ``max_score_ratio``, ...).
        corpus_mining_options: the same for the appended negatives of ``hard_batches`` with a
            ``corpus`` (default: ``mining_options``).
        epochs: passes over the pairs (a fraction trains on part of the last pass).
        batch_size, lr, warmup_fraction, schedule, weight_decay, max_grad_norm: optimisation
            (AdamW; ``schedule`` as :func:`~tripletkit.training.schedule.lr_factor`).
        layer_lr_decay: layer-wise learning-rate decay (in ``(0, 1]``; None: one rate): the
            transformer's layer ``i`` of ``L`` trains at ``lr · decay^(L - i)``, its embeddings
            at ``lr · decay^(L + 1)``, everything above the layers at ``lr`` (see
            :func:`layer_depths`).
        positive_augment: ``augment(positive, rng) -> text``, applied to every positive of a
            training step (mining and the batches' plan see the positives as given), e.g.
            :class:`ShuffleParts`; ``rng`` is its own ``random.Random`` seeded from ``seed``,
            so the pairs' order does not depend on it.
        lexical_negatives: documents mentioned word for word in the query, appended per query
            to every step (the longest mentions; see
            :func:`~tripletkit.mining.lexical.mine_lexical_negatives`), from the positives and
            ``corpus``: lexical hard negatives, found once (they do not depend on the model).
        lexical_separator: splits a document into the parts matched in the query (``None``:
            the whole text).
        seed: the order of the pairs.
        precision: ``"fp32"``, ``"bf16"`` (the model's forward passes, training and mining,
            under bfloat16 autocast; weights, optimizer and loss in float32) or ``"auto"``
            (bf16 where the device computes it natively, see
            :func:`~tripletkit.training.precision.resolve_precision`).
        progress: show a progress bar.
        on_step: called as ``on_step(step, loss)`` after every step.

    Returns:
        A :class:`TextPairResult`.
    """
    start = time.perf_counter()
    queries, positives = list(queries), list(positives)
    if len(queries) != len(positives) or not queries:
        raise ValueError(
            f"got {len(queries)} queries and {len(positives)} positives; expected the same "
            "number (>= 1) of each, pair i being (queries[i], positives[i])"
        )
    loss = check_choice(loss, TEXT_PAIR_LOSSES, "loss")
    check_choice(precision, TEXT_PAIR_PRECISIONS, "precision")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    autocast = _Autocast(device.type, resolve_precision(precision, device) == "bf16")
    check_choice(schedule, SCHEDULES, "schedule")
    epochs = check_positive(epochs, "epochs")
    lr = check_positive(lr, "lr")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an integer >= 2; got {batch_size!r}")
    if layer_lr_decay is not None and not 0 < layer_lr_decay <= 1:
        raise ValueError(f"layer_lr_decay must be in (0, 1]; got {layer_lr_decay!r}")
    if positive_augment is not None and not callable(positive_augment):
        raise TypeError(
            "positive_augment must be a callable augment(text, rng) -> text, e.g. "
            f"ShuffleParts(); got {type(positive_augment).__name__}"
        )
    if negatives is not None and corpus is not None:
        raise ValueError("give either negatives (fixed) or corpus (to mine them from), not both")
    if negatives is not None and len(negatives) != len(queries):
        raise ValueError(f"negatives has {len(negatives)} rows for {len(queries)} pairs")
    # Hard batches mine among the pairs' own positives; a corpus then only supplies appended
    # negatives (mined separately, into ``appended``).
    extra_corpus = list(corpus) if hard_batches and corpus is not None else None
    if hard_batches:
        if negatives is not None:
            raise ValueError(
                "hard_batches mines among the pairs' own positives: leave negatives None"
            )
        corpus = positives
        if extra_corpus is not None:
            if (
                isinstance(corpus_negatives, bool)
                or not isinstance(corpus_negatives, int)
                or corpus_negatives < 1
            ):
                raise ValueError(
                    f"corpus_negatives must be an integer >= 1; got {corpus_negatives!r}"
                )
            if not extra_corpus:
                raise ValueError("corpus is empty: give documents to mine negatives from, or None")
    if remine_every is not None:
        remine_every = check_positive(remine_every, "remine_every")
        if corpus is None:
            raise ValueError("remine_every needs a corpus to mine from")
    if (
        isinstance(lexical_negatives, bool)
        or not isinstance(lexical_negatives, int)
        or lexical_negatives < 0
    ):
        raise ValueError(f"lexical_negatives must be an integer >= 0; got {lexical_negatives!r}")
    mining_options = dict(mining_options or {})
    corpus_options = (
        mining_options if corpus_mining_options is None else dict(corpus_mining_options)
    )

    if loss == "triplet":
        loss_fn: torch.nn.Module = BatchTripletLoss(
            margin=0.3 if margin is None else margin, mining=triplet_mining, distance="cosine"
        )
    else:
        loss_fn = MultipleNegativesRankingLoss(
            temperature=temperature, symmetric=symmetric, margin=margin or 0.0
        )

    steps_per_epoch = math.ceil(len(queries) / batch_size)
    total_steps = max(1, math.ceil(epochs * steps_per_epoch))
    remine_steps = (
        max(1, round(remine_every * steps_per_epoch)) if remine_every is not None else None
    )

    result = TextPairResult(
        steps=0, losses=[], seconds=0.0, precision="bf16" if autocast.bf16 else "fp32"
    )
    current: list[list[str] | None] = (
        [list(row) for row in negatives] if negatives is not None else [None] * len(queries)
    )
    appended: list[list[str] | None] = [None] * len(queries)

    def mine() -> None:
        nonlocal current, appended
        mining_start = time.perf_counter()
        current, dropped = _mine(
            model, queries, positives, list(corpus), num_negatives, mining_options, 128, autocast
        )
        if extra_corpus is not None:
            appended, _ = _mine(
                model,
                queries,
                positives,
                extra_corpus,
                corpus_negatives,
                corpus_options,
                128,
                autocast,
            )
        result.mining_seconds += time.perf_counter() - mining_start
        result.minings += 1
        result.mining_dropped.append(dropped)

    if corpus is not None:
        mine()
    lexical: list[list[str]] = [[] for _ in queries]
    if lexical_negatives:
        from tripletkit.mining.lexical import mine_lexical_negatives

        lexical_start = time.perf_counter()
        # The pairs' positives and the corpus (with hard batches, the appended negatives' one).
        others = (extra_corpus if hard_batches else corpus) or []
        pool = positives + list(others)
        lexical = mine_lexical_negatives(
            queries,
            positives,
            pool,
            num_negatives=lexical_negatives,
            separator=lexical_separator,
            seed=seed,
        )
        result.mining_seconds += time.perf_counter() - lexical_start

    loop = StepLoop(
        _parameter_groups(model, lr, weight_decay, layer_lr_decay),
        total_steps=total_steps,
        warmup_fraction=warmup_fraction,
        schedule=schedule,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        progress="training" if progress else None,
        on_step=on_step,
        clipped=[p for p in model.parameters() if p.requires_grad],
    )

    rng = random.Random(seed)
    augment_rng = random.Random(f"positive_augment-{seed}")
    pairs_of_text: dict[str, list[int]] = {}
    for i, text in enumerate(positives):
        pairs_of_text.setdefault(text, []).append(i)
    # The pairs not yet trained on in this epoch, and their batches in order.
    unused: list[int] = []
    plan: list[list[int]] = []

    def plan_batches() -> list[list[int]]:
        if not hard_batches:
            order = list(unused)
            rng.shuffle(order)
            return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        neighbours = [
            [j for text in (current[i] or ()) for j in pairs_of_text[text] if j != i]
            for i in range(len(queries))
        ]
        return hard_batch_plan(unused, neighbours, batch_size, rng)

    model.train()
    try:
        for step in range(total_steps):
            if remine_steps is not None and step > 0 and step % remine_steps == 0:
                mine()
                if hard_batches:
                    plan = []  # the rest of the epoch, with the new neighbours
            if not unused:
                unused, plan = list(range(len(queries))), []
            if not plan:
                plan = plan_batches()
            batch = plan.pop(0)
            used = set(batch)
            unused = [i for i in unused if i not in used]
            step_loss = _step(
                autocast,
                model,
                loss_fn,
                symmetric,
                [queries[i] for i in batch],
                [
                    positives[i]
                    if positive_augment is None
                    else positive_augment(positives[i], augment_rng)
                    for i in batch
                ],
                [_joined(appended[i] if hard_batches else current[i], lexical[i]) for i in batch],
            )
            result.losses.append(loop.step(step_loss))
            result.steps += 1
    finally:
        loop.close()
        model.eval()
    result.seconds = time.perf_counter() - start
    return result


def _joined(mined: list[str] | None, lexical: list[str]) -> list[str] | None:
    """A query's mined negatives, then its lexical ones not already among them."""
    if not lexical:
        return mined
    row = list(mined or [])
    return row + [text for text in lexical if text not in row]


def hard_batch_plan(
    pairs: Sequence[int],
    neighbours: Sequence[Sequence[int]],
    batch_size: int,
    rng: random.Random,
) -> list[list[int]]:
    """Batches of ``pairs`` in which pairs sit with their hard neighbours.

    A seed pair, taken in random order among those not placed yet, starts a batch; the batch
    grows breadth-first through ``neighbours`` (the seed's, then those of the pairs it pulled in)
    with pairs of ``pairs`` not placed yet. A batch whose neighbourhood runs out before it is full
    leaves its pairs to a pool that is shuffled and cut into the last batches, so that every
    batch but at most one has ``batch_size`` pairs and each pair appears exactly once.

    Args:
        pairs: the pair indices to place.
        neighbours: ``neighbours[i]``: pair indices whose documents are hard negatives of pair
            ``i`` (hardest first); indices outside ``pairs`` are ignored.
        batch_size: pairs per batch.
        rng: the source of the seeds' order.

    Returns:
        The batches, in random order.

    >>> plan = hard_batch_plan(range(6), [[1], [0], [3], [2], [5], [4]], 2, random.Random(0))
    >>> sorted(sorted(batch) for batch in plan)
    [[0, 1], [2, 3], [4, 5]]
    """
    open_pairs = set(pairs)
    seeds = list(pairs)
    rng.shuffle(seeds)
    full: list[list[int]] = []
    pool: list[int] = []
    for seed in seeds:
        if seed not in open_pairs:
            continue
        open_pairs.discard(seed)
        batch = [seed]
        grown = 0
        while len(batch) < batch_size and grown < len(batch):
            for j in neighbours[batch[grown]]:
                if j in open_pairs:
                    open_pairs.discard(j)
                    batch.append(j)
                    if len(batch) == batch_size:
                        break
            grown += 1
        if len(batch) == batch_size:
            full.append(batch)
        else:
            pool.extend(batch)
    rng.shuffle(pool)
    full.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    rng.shuffle(full)
    return full


def _step(
    autocast: _Autocast,
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    symmetric: bool,
    batch_queries: list[str],
    batch_positives: list[str],
    batch_negatives: list[list[str] | None],
) -> torch.Tensor:
    """The loss of one batch. Labels are given by document text, so that a text appearing as
    two pairs' positives (or as one's positive and another's negative) is never a negative of a
    query it answers."""
    flat_negatives = [text for row in batch_negatives if row for text in row]
    documents = batch_positives + flat_negatives
    label_of: dict[str, int] = {}
    document_labels = torch.tensor(
        [label_of.setdefault(text, len(label_of)) for text in documents], dtype=torch.long
    )
    query_labels = document_labels[: len(batch_positives)]
    with autocast():
        query_embeddings = _embed_batch(model, batch_queries)
        document_embeddings = _embed_batch(model, documents)
    if isinstance(loss_fn, BatchTripletLoss):
        query_labels = query_labels.to(query_embeddings.device)
        forward = loss_fn(
            query_embeddings,
            query_labels,
            document_embeddings,
            document_labels.to(query_embeddings.device),
        )
        if not symmetric:
            return forward
        # Each positive as an anchor: its own query (or any query it answers) is its positive,
        # the batch's other queries its negatives.
        positives = document_embeddings[: len(batch_positives)]
        reverse = loss_fn(positives, query_labels, query_embeddings, query_labels)
        return (forward + reverse) / 2
    positives = document_embeddings[: len(batch_positives)]
    # A mined negative that is also a positive of the batch is already a candidate, with the
    # label of its pair; as an unlabelled hard negative it would be a false negative.
    answers = set(batch_positives)
    keep = [j for j, text in enumerate(flat_negatives) if text not in answers]
    hard = document_embeddings[len(batch_positives) :][keep] if keep else None
    return loss_fn(query_embeddings, positives, hard, labels=query_labels.to(positives.device))
