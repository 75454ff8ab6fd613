"""Write the WordNet retrieval protocol as the files the command-line tools read.

The fixed protocol of :mod:`tripletkit.data.wordnet_retrieval` (definition → lemmas; issue 8) as
four CSV files in ``--out``, so that the README's ``tripletkit train-pairs`` and ``tripletkit
evaluate --protocol text`` commands run on it as they would on your own data:

* ``pairs.csv`` (``query,positive``): the training pairs (definition, its synset's lemmas);
* ``unlabelled.csv`` (``text``): 20,000 documents of synsets outside the protocol's splits (seeded
  sample), which answer none of the queries: the source of appended hard negatives;
* ``corpus.csv`` (``text,label``): the de-duplicated test corpus, each text its own label;
* ``queries.csv`` (``text,label``): the 2,000 test definitions, labelled with their document's row.

Needs the Debian package ``wordnet-base``::

    python examples/wordnet_files.py --out wordnet
    tripletkit train-pairs --pairs wordnet/pairs.csv --corpus wordnet/unlabelled.csv ...
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from tripletkit.data.wordnet_retrieval import WordNetRetrievalTask, wordnet_retrieval_task

#: The seed of the unlabelled sample (the benchmark's: ``benchmarks/text_wordnet.py``).
UNLABELLED_SEED = 0


def write_csv(path: Path, header: list[str], rows) -> int:
    count = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def write_files(out: Path, task: WordNetRetrievalTask, unlabelled: int = 20_000) -> dict[str, int]:
    """Write ``task``'s four files into ``out``; the number of rows of each."""
    out.mkdir(parents=True, exist_ok=True)
    sample = random.Random(UNLABELLED_SEED).sample(task.unused_documents, unlabelled)
    return {
        "pairs.csv": write_csv(
            out / "pairs.csv",
            ["query", "positive"],
            zip(task.train_queries, task.train_documents, strict=True),
        ),
        "unlabelled.csv": write_csv(out / "unlabelled.csv", ["text"], ([t] for t in sample)),
        "corpus.csv": write_csv(
            out / "corpus.csv", ["text", "label"], ([t, i] for i, t in enumerate(task.corpus))
        ),
        "queries.csv": write_csv(
            out / "queries.csv",
            ["text", "label"],
            ([q, int(t)] for q, t in zip(task.test_queries, task.test_targets, strict=True)),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory to write the four files into")
    parser.add_argument("--num-train", type=int, default=8000, help="training pairs (T)")
    parser.add_argument("--unlabelled", type=int, default=20_000, help="unlabelled documents")
    args = parser.parse_args()
    task = wordnet_retrieval_task(args.num_train)
    for name, rows in write_files(Path(args.out), task, args.unlabelled).items():
        print(f"{Path(args.out) / name}: {rows:,} rows")


if __name__ == "__main__":
    main()
