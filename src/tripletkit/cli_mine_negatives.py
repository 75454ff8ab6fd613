"""``tripletkit mine-negatives``: hard negatives for (query, positive) pairs from a corpus.

Reads the pairs (columns ``query`` and ``positive``, optionally ``positive_id``) and the corpus
(column ``text``, optionally ``id``) from ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` files,
embeds them with ``--model`` (a run directory, a saved model directory, or a registered model
name such as ``text_encoder``, the bundled all-MiniLM-L6-v2) and writes (query, positive,
negative_1..n, scores) rows with :func:`tripletkit.mining.negatives.mine_hard_negatives`.

Chunks of embeddings and results are kept in ``--cache-dir`` (default: ``OUT.cache/`` beside the
output), so an interrupted run continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "load_encoder", "run", "text_column"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", required=True, help="pairs file with query and positive columns")
    parser.add_argument("--corpus", required=True, help="corpus file with a text column")
    parser.add_argument(
        "--model",
        required=True,
        help="a run directory, a saved model directory, or a model name (e.g. text_encoder)",
    )
    parser.add_argument("--out", required=True, help="output: .parquet, .csv, .tsv or .jsonl")
    parser.add_argument("--num-negatives", type=int, default=1, help="negatives per pair (1)")
    parser.add_argument(
        "--rank-range",
        type=int,
        nargs=2,
        default=(1, 50),
        metavar=("FIRST", "LAST"),
        help="eligible candidate ranks after excluding positives (1 50); FIRST=3 skips the two "
        "most similar (false-negative guard)",
    )
    parser.add_argument(
        "--max-score-ratio",
        type=float,
        default=None,
        help="skip candidates scoring above this times the positive's score, e.g. 0.95",
    )
    parser.add_argument("--query-column", default="query")
    parser.add_argument("--positive-column", default="positive")
    parser.add_argument("--text-column", default="text", help="the corpus text column (text)")
    parser.add_argument(
        "--id-column",
        default="id",
        help="corpus id column matched against the pairs' positive_id column, if both exist",
    )
    parser.add_argument("--index-kind", default="flat", choices=("flat", "hnsw", "ivfpq", "auto"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=8192)
    parser.add_argument("--cache-dir", default=None, help="resumable chunks (default OUT.cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def text_column(columns: dict[str, list[Any]], name: str, path: str, option: str) -> list[str]:
    if name not in columns:
        found = ", ".join(repr(c) for c in columns) or "none"
        raise ValueError(f"{path} has no column {name!r} (found: {found}); set {option}")
    values = columns[name]
    bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(
            f"{path}: column {name!r} has {len(bad)} empty or non-text values (first at row "
            f"{bad[0]}); every row needs a text"
        )
    return list(values)


#: Other names of the bundled text model.
_ALIASES = {
    "all-minilm-l6-v2": "text_encoder",
    "sentence-transformers/all-minilm-l6-v2": "text_encoder",
}


def load_encoder(spec: str) -> Any:
    """A run or model directory, or a registered model name (``text_encoder``, also called
    ``all-MiniLM-L6-v2``: the bundled model)."""
    from tripletkit.models import create_model, list_models

    if Path(spec).exists():
        from tripletkit.inference import load_run

        run = load_run(spec)
        if run.kind != "text":
            raise ValueError(f"--model {spec!r} is not a text model; mining needs a text encoder")
        return run.model
    spec = _ALIASES.get(spec.lower(), spec)
    if spec in list_models():
        model = create_model(spec)
        if type(getattr(model, "input_spec", None)).__name__ != "TextInputSpec":
            raise ValueError(f"--model {spec!r} is not a text model; try text_encoder")
        return model
    raise FileNotFoundError(
        f"--model {spec!r}: no such run or model directory, and not a registered model name "
        "(text models: text_encoder = all-MiniLM-L6-v2)"
    )


def run(args: argparse.Namespace) -> int:
    from tripletkit.data.manifests import read_manifest
    from tripletkit.mining.negatives import mine_hard_negatives, write_triplets

    out = Path(args.out)
    if out.suffix not in (".parquet", ".csv", ".tsv", ".jsonl"):
        raise ValueError(f"--out {args.out!r}: use a .parquet, .csv, .tsv or .jsonl file")
    pairs = read_manifest(args.pairs).columns
    corpus_columns = read_manifest(args.corpus).columns
    queries = text_column(pairs, args.query_column, args.pairs, "--query-column")
    positives = text_column(pairs, args.positive_column, args.pairs, "--positive-column")
    corpus = text_column(corpus_columns, args.text_column, args.corpus, "--text-column")
    positive_ids = corpus_ids = None
    if "positive_id" in pairs and args.id_column in corpus_columns:
        positive_ids = [str(v) for v in pairs["positive_id"]]
        corpus_ids = [str(v) for v in corpus_columns[args.id_column]]
    model = load_encoder(args.model)
    cache_dir = args.cache_dir or str(out.with_name(out.name + ".cache"))
    mined = mine_hard_negatives(
        queries,
        positives,
        corpus,
        model,
        num_negatives=args.num_negatives,
        rank_range=tuple(args.rank_range),
        max_score_ratio=args.max_score_ratio,
        positive_ids=positive_ids,
        corpus_ids=corpus_ids,
        index_kind=args.index_kind,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        cache_dir=cache_dir,
        progress=not args.quiet,
    )
    write_triplets(out, mined)
    print(
        f"wrote {len(mined)} rows ({mined.num_negatives} negatives each) to {out}; "
        f"{mined.dropped_pairs} of {len(queries)} pairs had too few eligible negatives"
    )
    return 0
