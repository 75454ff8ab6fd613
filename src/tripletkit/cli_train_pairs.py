"""``tripletkit train-pairs``: fine-tune a text model on (query, positive) pairs, e.g. for RAG.

Reads the pairs (columns ``query`` and ``positive``) and optionally a corpus (column ``text``)
from ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` files, fine-tunes ``--model`` (the bundled
all-MiniLM-L6-v2 by default, or a run / saved model directory) with
:func:`tripletkit.training.text_pairs.train_text_pairs`, and writes ``OUT/model`` (a saved model:
``tripletkit evaluate``, ``embed``, ``index build`` and ``mine-negatives`` take ``--model OUT``)
and ``OUT/training.json`` (the options, steps, seconds and losses).

Options left out take :func:`~tripletkit.training.text_pairs.train_text_pairs`'s defaults; the
ones given are recorded in ``training.json``. ``--seed`` fixes the pairs' order and dropout, so
the same command on the same machine writes the same weights.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

#: Flags passed to ``train_text_pairs`` under the same name (argparse ``dest`` = keyword).
_PASSED = (
    "precision",
    "loss",
    "margin",
    "triplet_mining",
    "temperature",
    "num_negatives",
    "corpus_negatives",
    "remine_every",
    "epochs",
    "batch_size",
    "lr",
    "warmup_fraction",
    "schedule",
    "weight_decay",
    "max_grad_norm",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tripletkit.training.schedule import SCHEDULES
    from tripletkit.training.text_pairs import TEXT_PAIR_LOSSES, TEXT_PAIR_PRECISIONS

    parser.add_argument("--pairs", required=True, help="pairs file with query and positive columns")
    parser.add_argument(
        "--out",
        required=True,
        help="directory to write: OUT/model (the fine-tuned model) and OUT/training.json",
    )
    parser.add_argument(
        "--model",
        default="text_encoder",
        help="the model to fine-tune: a run or saved model directory, or a model name "
        "(default text_encoder: the bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--corpus",
        help="corpus file with a text column: hard negatives are mined from it for each query "
        "(its known positive excluded); with --hard-batches, documents that answer none of the "
        "queries, from which --corpus-negatives negatives per query are appended to each step",
    )
    parser.add_argument("--loss", choices=TEXT_PAIR_LOSSES, help="triplet (default) or mnrl")
    parser.add_argument(
        "--margin",
        type=float,
        help="in cosine distance: the triplet margin (default 0.3), or MNRL's additive margin "
        "(default 0)",
    )
    parser.add_argument("--triplet-mining", help="the triplet loss's mining mode (default all)")
    parser.add_argument("--temperature", type=float, help="MNRL's temperature (default 0.05)")
    parser.add_argument(
        "--symmetric",
        action="store_true",
        help="also rank the batch's queries for each positive (the reverse direction)",
    )
    parser.add_argument(
        "--hard-batches",
        action="store_true",
        help="compose each batch of pairs that are one another's nearest neighbours, so every "
        "in-batch negative is a hard one",
    )
    parser.add_argument(
        "--num-negatives",
        type=int,
        help="mined negatives per pair (with --hard-batches: the neighbours a pair pulls into "
        "its batch; default 1)",
    )
    parser.add_argument(
        "--corpus-negatives",
        type=int,
        help="with --hard-batches and --corpus: negatives per query appended from the corpus "
        "(default 1)",
    )
    parser.add_argument(
        "--remine-every",
        type=float,
        help="mine again every this many epochs, e.g. 0.5 (default: once, before training)",
    )
    parser.add_argument(
        "--rank-range",
        type=int,
        nargs=2,
        metavar=("FIRST", "LAST"),
        help="eligible candidate ranks after excluding positives (default 1 50); FIRST=3 skips "
        "the two most similar (false-negative guard). With --hard-batches it applies to the "
        "negatives from --corpus (the batches' neighbours take every rank)",
    )
    parser.add_argument(
        "--max-score-ratio",
        type=float,
        help="skip candidates scoring above this times the positive's score, e.g. 0.95 (with "
        "--hard-batches: the negatives from --corpus)",
    )
    parser.add_argument("--epochs", type=float, help="passes over the pairs (default 1)")
    parser.add_argument("--batch-size", type=int, help="pairs per step (default 32)")
    parser.add_argument("--lr", type=float, help="learning rate (default 2e-5)")
    parser.add_argument("--warmup-fraction", type=float, help="of the steps (default 0.1)")
    parser.add_argument("--schedule", choices=SCHEDULES, help="after warm-up (default linear)")
    parser.add_argument("--weight-decay", type=float, help="AdamW's (default 0.01)")
    parser.add_argument(
        "--max-grad-norm", type=float, help="gradient clipping norm (default 1.0; 0: none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="pairs' order and dropout (0)")
    parser.add_argument(
        "--precision",
        choices=TEXT_PAIR_PRECISIONS,
        help="fp32 (default); bf16: the model's forward passes under bfloat16 autocast "
        "(weights, optimizer and loss in float32); auto: bf16 where the device computes it "
        "natively (a CPU with AVX512-BF16 or AMX, a GPU that supports it), else fp32",
    )
    parser.add_argument("--query-column", default="query")
    parser.add_argument("--positive-column", default="positive")
    parser.add_argument("--text-column", default="text", help="the corpus text column (text)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT/model if it exists already"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``train_text_pairs`` that the command line set."""
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number; got {value}")
    if args.corpus_negatives is not None and not (args.hard_batches and args.corpus):
        raise ValueError(
            "--corpus-negatives applies with --hard-batches and --corpus (the documents the "
            "appended negatives come from)"
        )
    options = {name: getattr(args, name) for name in _PASSED if getattr(args, name) is not None}
    if options.get("max_grad_norm") == 0:
        options["max_grad_norm"] = None
    for flag in ("symmetric", "hard_batches"):
        if getattr(args, flag):
            options[flag] = True
    mining: dict[str, Any] = {}
    if args.rank_range is not None:
        mining["rank_range"] = tuple(args.rank_range)
    if args.max_score_ratio is not None:
        mining["max_score_ratio"] = args.max_score_ratio
    if mining:
        # With hard batches the corpus supplies the only negatives that are not labelled pairs'
        # positives: the guards apply to them, and the batches' neighbours take every rank.
        options["corpus_mining_options" if args.hard_batches else "mining_options"] = mining
    return options


def run(args: argparse.Namespace) -> int:
    from tripletkit.cli_mine_negatives import load_encoder, text_column
    from tripletkit.data.manifests import read_manifest
    from tripletkit.models import EmbeddingModel, save_model
    from tripletkit.training.checkpoint import atomic_write_text
    from tripletkit.training.text_pairs import train_text_pairs
    from tripletkit.training.trainer import seed_everything

    out = Path(args.out)
    model_dir = out / "model"
    if model_dir.exists() and not args.overwrite:
        raise ValueError(f"{model_dir} exists already; choose another --out or add --overwrite")
    options = _options(args)
    pairs = read_manifest(args.pairs).columns
    queries = text_column(pairs, args.query_column, args.pairs, "--query-column")
    positives = text_column(pairs, args.positive_column, args.pairs, "--positive-column")
    corpus = None
    if args.corpus is not None:
        columns = read_manifest(args.corpus).columns
        corpus = text_column(columns, args.text_column, args.corpus, "--text-column")
    model = load_encoder(args.model)
    if not isinstance(model, EmbeddingModel) or model.config is None:
        raise ValueError(f"--model {args.model!r} cannot be saved after training (no config)")
    seed_everything(args.seed)  # dropout's masks; the pairs' order follows seed as well
    result = train_text_pairs(
        model,
        queries,
        positives,
        corpus=corpus,
        seed=args.seed,
        progress=not args.quiet,
        **options,
    )
    model.eval()
    save_model(model, model_dir)
    tail = result.losses[-max(1, len(result.losses) // 10) :]
    record = {
        "pairs": str(args.pairs),
        "corpus": None if args.corpus is None else str(args.corpus),
        "model": str(args.model),
        "seed": args.seed,
        "precision": result.precision,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "mining_seconds": round(result.mining_seconds, 2),
        "minings": result.minings,
        "mining_dropped": result.mining_dropped,
        "first_loss": result.losses[0] if result.losses else None,
        "last_tenth_mean_loss": sum(tail) / len(tail) if result.losses else None,
    }
    atomic_write_text(out / "training.json", json.dumps(record, indent=1) + "\n")
    print(
        f"trained {result.steps} steps on {len(queries)} pairs in {result.seconds:.0f} s "
        f"(mining {result.mining_seconds:.0f} s); wrote {model_dir} and {out / 'training.json'}"
    )
    return 0
