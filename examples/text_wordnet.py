"""Fine-tune all-MiniLM-L6-v2 for retrieval with triplet loss and mined hard negatives.

The task is WordNet's definition → lemmas retrieval (the fixed protocol of
:mod:`tripletkit.data.wordnet_retrieval`): a query is a definition ("a domesticated carnivorous
mammal ..."), its relevant document the synset's lemmas ("dog, domestic dog, Canis familiaris"),
among 21,149 documents. The recipe, as for any RAG retriever (query = anchor, relevant chunk =
positive):

1. mine, for every training pair, the 3 training documents the model itself ranks nearest to its
   query (never the pair's own positive);
2. build *hard batches*: each batch gathers pairs that are one another's mined neighbours, so the
   other positives of a batch are hard negatives, at no extra forward pass;
3. train with the triplet loss over the batch, in both directions: each query against its
   positive and every other document of the batch, and each positive against its query and
   every other query (cosine distance, margin 0.1, batch-all);
4. mine again half-way through, since the embedding has moved and the old negatives got easy.

It evaluates the tuned model twice: plainly, and with every lemma of a multi-lemma document
embedded as a *part* of it, a document then scored through its whole and its nearest lemma.

Needs ``pip install 'tripletkit[text,index]'`` and the Debian package ``wordnet-base``. About
6 minutes on 2 CPU cores for the 8,000 pairs (``--num-train 1000`` for a quick look)::

    python examples/text_wordnet.py --num-train 8000 --save /tmp/wordnet-minilm
"""

from __future__ import annotations

import argparse
import time

import torch

from tripletkit.data.wordnet_retrieval import wordnet_retrieval_task
from tripletkit.evaluation.text import rank_metrics, rank_of_correct, text_parts
from tripletkit.models import create_model, save_model
from tripletkit.models.text import embed_texts
from tripletkit.training.text_pairs import train_text_pairs


def evaluate(model, task, parts: bool = False) -> dict[str, float]:
    queries = embed_texts(model, task.test_queries)
    corpus = embed_texts(model, task.corpus)
    corpus_parts = None
    if parts:  # every lemma of a multi-lemma document embedded too; see rank_of_correct
        part_texts, part_items = text_parts(task.corpus)
        corpus_parts = (embed_texts(model, part_texts), part_items)
    ranks = rank_of_correct(queries, corpus, task.test_targets, corpus_parts=corpus_parts)
    return rank_metrics(ranks, ks=(1, 10))


def show(title: str, metrics: dict[str, float]) -> None:
    print(
        f"{title:<10} R@1 {metrics['recall_at_1']:.3f}  R@10 {metrics['recall_at_10']:.3f}  "
        f"MRR@10 {metrics['mrr_at_10']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--skip-untuned", action="store_true", help="do not evaluate before")
    parser.add_argument("--save", default=None, help="save the fine-tuned model here")
    args = parser.parse_args()

    task = wordnet_retrieval_task(args.num_train)
    model = create_model("text_encoder")  # the bundled all-MiniLM-L6-v2
    print(f"{len(task.test_queries)} test queries, corpus of {len(task.corpus)} texts")
    if not args.skip_untuned:
        show("untuned", evaluate(model, task))

    start = time.perf_counter()
    result = train_text_pairs(
        model,
        task.train_queries,
        task.train_documents,
        loss="triplet",
        margin=0.1,
        symmetric=True,
        hard_batches=True,  # mines among the training documents only
        num_negatives=3,
        remine_every=0.5,
        epochs=1,
        batch_size=32,
        lr=args.lr,
        warmup_fraction=0.1,
    )
    print(
        f"trained {result.steps} steps in {time.perf_counter() - start:.0f} s "
        f"({result.mining_seconds:.0f} s mining, {result.minings} minings)"
    )
    show("tuned", evaluate(model, task))
    # A document is also found through its nearest lemma: half its own cosine distance, half the
    # nearer of its own and its nearest lemma's (the +parts rows of benchmarks/text_wordnet.py).
    show("+ parts", evaluate(model, task, parts=True))
    if args.save:
        save_model(model, args.save)
        print(f"saved to {args.save}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
