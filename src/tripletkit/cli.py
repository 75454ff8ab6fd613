"""The ``tripletkit`` command line: parses arguments, then calls the Python API. No logic of its own.

Errors are one clear line on stderr (the traceback only with ``--debug``); bad usage exits with
code 2, a failed command with code 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["main"]


class UsageError(Exception):
    """A mistake in how the command was called (exit code 2)."""


_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help_text: str):
    """Register a sub-command: the decorated function adds its arguments to a parser."""

    def register(add_arguments: Callable[[argparse.ArgumentParser], None]):
        _COMMANDS[name] = (help_text, add_arguments)
        return add_arguments

    return register


def build_parser() -> argparse.ArgumentParser:
    from tripletkit import __version__

    parser = argparse.ArgumentParser(
        prog="tripletkit",
        description=(
            "Learn embeddings with triplet loss: train, evaluate, embed, index, verify and report."
        ),
    )
    parser.add_argument("--version", action="version", version=f"tripletkit {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback when a command fails"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    debug = getattr(args, "debug", False)
    try:
        return int(args.run(args) or 0)
    except UsageError as err:
        if debug:
            raise
        print(f"tripletkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tripletkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError) as err:
        if debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"tripletkit {args.command}: error: {message}", file=sys.stderr)
        # Bad input is bad usage (2), like a bad flag: a path that does not exist, or a value
        # the library refuses (ValueError: a bad option, manifest, column, data set...). Other
        # failures (I/O, runtime) exit 1.
        return 2 if isinstance(err, (FileNotFoundError, ValueError)) else 1


def _parse_sets(pairs: list[str] | None) -> dict[str, str]:
    overrides = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--set expects KEY=VALUE (e.g. loss.margin=0.3); got {pair!r}")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = value.strip()
    return overrides


# Flags of `tripletkit train` that are shorthands for config keys.
_TRAIN_FLAGS = {
    "data": (
        "data.dataset",
        "data set: auto (with --data-path: what the path holds; else the bundled data), "
        "fashion-mnist, digits, image-folder, manifest, vectors",
    ),
    "data_path": ("data.path", "training data (a folder, manifest or feature file)"),
    "val_path": ("data.val_path", "validation data (default: held-out classes of --data-path)"),
    "model": ("model.name", "model name from the registry (tripletkit models)"),
    "embedding_dim": ("model.embedding_dim", "embedding dimension"),
    "loss": ("loss.name", "loss name (tripletkit losses)"),
    "margin": ("loss.margin", "triplet margin"),
    "mining": (
        "loss.mining",
        "mining mode: all, hard, semihard, semihard-window, hard-window, easy-positive",
    ),
    "distance": ("loss.distance", "squared_euclidean, euclidean, cosine or dot"),
    "epochs": ("train.epochs", "number of epochs"),
    "lr": ("optim.lr", "learning rate"),
    "p": ("data.p", "classes per batch"),
    "k": ("data.k", "items per class in a batch"),
    "seed": ("train.seed", "random seed"),
    "device": ("train.device", "auto, cpu, cuda, cuda:1, ..."),
    "precision": (
        "train.precision",
        "fp32, bf16, fp16, or auto: bf16 where the device computes it natively, else fp32",
    ),
}


def _config_epilog() -> str:
    from tripletkit.training.config import RunConfig

    lines = ["every configuration key (set with --set KEY=VALUE or in a YAML/TOML/JSON file):"]
    for section, values in RunConfig().to_dict().items():
        for key, value in values.items():
            lines.append(f"  {section}.{key} = {value!r}")
    return "\n".join(lines)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The configuration of a run: files, the shorthand flags and ``--set`` (train, tune-margin)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _config_epilog()
    parser.add_argument(
        "config", nargs="*", help="YAML, TOML or JSON configuration files, merged in order"
    )
    for flag, (key, help_text) in _TRAIN_FLAGS.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, help=f"{help_text} ({key})")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="any configuration key")


def _config_from_arguments(args: argparse.Namespace, overrides: dict[str, object] | None = None):
    """The :class:`RunConfig` of ``_add_config_arguments``' arguments (flags win over files)."""
    from tripletkit.training.config import resolve_config

    overrides = dict(overrides or {})
    for flag, (key, _) in _TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    overrides.update(_parse_sets(args.set))
    if getattr(args, "quiet", False):
        overrides["train.quiet"] = True
    if getattr(args, "no_report", False):
        overrides["train.report"] = False
    try:
        return resolve_config(list(args.config), overrides)
    except ValueError as err:
        raise UsageError(str(err)) from err


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser)
    parser.add_argument("--run-dir", help="where the run is written (default: runs/<date-time>)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a killed or finished run exactly"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tripletkit.training.build import train
    from tripletkit.training.config import load_config_file, resolve_config

    overrides: dict[str, object] = {}
    run_dir = args.run_dir
    if args.resume:
        run_dir = args.resume
        saved = Path(args.resume) / "config.json"
        if not saved.is_file():
            raise UsageError(
                f"--resume {args.resume!r}: no config.json there (not a run directory)"
            )
        resolve_config([saved])  # a damaged saved config: an error naming the file
        overrides.update(load_config_file(saved))
    config = _config_from_arguments(args, overrides)
    outcome = train(config, run_dir=run_dir, resume=bool(args.resume))
    if not outcome.is_main:  # another rank of a torchrun job: rank 0 prints
        return 0
    print(_metrics_table(outcome))
    print(f"run directory: {outcome.result.run_dir}")
    if config.train.precision == "auto":
        print(f"precision: {outcome.result.precision} (train.precision auto)")
    if outcome.report is not None:
        print(f"report: {outcome.report}")
    for message in outcome.result.diagnoses:
        print(f"warning: {message}")
    return 0


def _metrics_table(outcome) -> str:
    """Before/after table of the headline retrieval metrics."""
    keys = [("precision_at_1", "P@1"), ("r_precision", "R-precision"), ("map_at_r", "MAP@R")]
    before = outcome.test_before or outcome.result.before
    after = outcome.test_after or outcome.result.after
    where = "test set" if outcome.test_after else "validation set"
    rows = [f"{'metric (' + where + ')':<26}{'before':>10}{'after':>10}"]
    for key, name in keys:
        b, a = before.get(key), after.get(key)
        rows.append(
            f"{name:<26}{'-' if b is None else f'{b:.4f}':>10}{'-' if a is None else f'{a:.4f}':>10}"
        )
    return "\n".join(rows)


command("train", "train an embedding model (config files and/or flags; flags win)")(
    _add_train_arguments
)


# ----------------------------------------------------------------------------------------------
# embed / evaluate / verify / index


def _write_json(path: str | None, payload: dict) -> None:
    if path:
        import json

        from tripletkit.files import atomic_write_text

        atomic_write_text(path, json.dumps(payload, indent=2, default=float) + "\n")
        print(f"wrote {path}")


def _print_metrics(title: str, metrics: dict) -> None:
    print(title)
    width = max((len(k) for k in metrics), default=10) + 2
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}{shown:>12}")


def _add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="a run directory (or a saved model directory)"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="image folder (one sub-folder per class), manifest (.csv/.tsv/.jsonl/.parquet with a "
        "'path' or 'text' column and an optional 'label' column), .npy features, or "
        "fashion-mnist[:split]/digits",
    )
    parser.add_argument("--out", required=True, help="the vectors file to write (.parquet)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from tripletkit.index.vectors_file import write_vectors
    from tripletkit.inference import embed_dataset, label_values, load_run, open_dataset

    if not args.out.endswith(".parquet"):
        raise UsageError(
            f"--out {args.out!r}: embed writes a Parquet vectors file; name it .parquet"
        )

    run = load_run(args.model)
    dataset, sources = open_dataset(args.data, run)
    embedded = embed_dataset(run, dataset, sources, args.batch_size, progress=not args.quiet)
    classes = None if embedded.labels is None else label_values(dataset, embedded.labels)
    write_vectors(
        args.out, embedded.embeddings.numpy(), embedded.labels, embedded.sources, classes=classes
    )
    print(
        f"wrote {embedded.embeddings.shape[0]} embeddings of dimension {embedded.embeddings.shape[1]} to {args.out}"
    )
    return 0


_PROTOCOLS = ("retrieval", "verification", "reid", "text")


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="a run directory (or a saved model directory)"
    )
    parser.add_argument("--data", required=True, help="labelled data (see tripletkit embed --help)")
    parser.add_argument("--protocol", default="retrieval", choices=_PROTOCOLS)
    parser.add_argument(
        "--query-data", help="reid/text: the queries (--data is then the gallery / corpus)"
    )
    parser.add_argument(
        "--hubness-bank",
        help="text: data (as --data; labels not needed) whose items are queries like the ones "
        "asked (e.g. the training queries): rank the corpus with the CSLS hubness correction "
        "over it",
    )
    parser.add_argument(
        "--hubness-k", type=int, default=10, help="bank queries per corpus item (default 10)"
    )
    parser.add_argument(
        "--part-separator",
        help="text: the corpus texts are made of parts separated by this string (e.g. ', ' for "
        "lists of words or tags): each part of a text with several is embedded too, and a text "
        "is ranked through its whole and its nearest part",
    )
    parser.add_argument(
        "--part-weight",
        type=float,
        help="with --part-separator: in [0, 1], a text's distance is (1 - w) × its own + w × "
        "the nearer of its own and its nearest part's (default 0.5)",
    )
    parser.add_argument(
        "--mention-penalty",
        type=float,
        help="text: added to the distance of every corpus text that the query names word for "
        "word (the text, or with --part-separator one of its parts, occurs in the query as a "
        "whole-word phrase; a negative value favours them). For definitions, which name their "
        "word's broader term rather than the word (on WordNet 0.05 to 0.1 in cosine distance; "
        "choose it on held-out queries)",
    )
    parser.add_argument("--out", help="also write the metrics as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from tripletkit import evaluation
    from tripletkit.inference import embed_dataset, load_run, open_dataset, shared_label_ids

    if args.protocol in ("reid", "text") and not args.query_data:
        raise UsageError(f"--protocol {args.protocol} needs --query-data (queries) besides --data")
    if args.hubness_bank and args.protocol != "text":
        raise UsageError("--hubness-bank applies to --protocol text only")
    if args.hubness_k < 1:
        raise UsageError(f"--hubness-k must be >= 1; got {args.hubness_k}")
    if args.part_separator is not None and args.protocol != "text":
        raise UsageError("--part-separator applies to --protocol text only")
    if args.part_separator == "":
        raise UsageError("--part-separator must be a non-empty string")
    if args.part_weight is not None:
        if args.part_separator is None:
            raise UsageError("--part-weight needs --part-separator (the parts it weighs)")
        if not 0.0 <= args.part_weight <= 1.0:
            raise UsageError(f"--part-weight must be in [0, 1]; got {args.part_weight}")
    if args.mention_penalty is not None:
        if args.protocol != "text":
            raise UsageError("--mention-penalty applies to --protocol text only")
        if not math.isfinite(args.mention_penalty):
            raise UsageError(
                f"--mention-penalty must be a finite number; got {args.mention_penalty}"
            )
    run = load_run(args.model)
    for option, value in (
        ("--part-separator", args.part_separator),
        ("--mention-penalty", args.mention_penalty),
    ):
        if value is not None and run.kind != "text":
            raise UsageError(f"{option} needs a text model; {args.model!r} takes {run.kind} inputs")
    dataset, sources = open_dataset(args.data, run)
    embedded = embed_dataset(run, dataset, sources, progress=not args.quiet)
    if embedded.labels is None:
        raise UsageError(f"--data {args.data!r} has no labels; evaluation needs them")
    if args.protocol == "retrieval":
        metrics = evaluation.evaluate_retrieval(embedded.embeddings, embedded.labels).metrics
    elif args.protocol == "verification":
        metrics = evaluation.evaluate_verification_from_labels(
            embedded.embeddings, embedded.labels
        ).metrics
    else:
        query_set, query_sources = open_dataset(args.query_data, run)
        queries = embed_dataset(run, query_set, query_sources, progress=not args.quiet)
        if queries.labels is None:
            raise UsageError(f"--query-data {args.query_data!r} has no labels")
        # Each file numbers its own classes: compare the label values, not the ids.
        query_labels, gallery_labels = shared_label_ids(
            query_set, queries.labels, dataset, embedded.labels
        )
        if not np.isin(query_labels, gallery_labels).any():
            raise UsageError(
                f"no label of --query-data {args.query_data!r} appears in --data {args.data!r}: "
                "nothing could be retrieved (labels are matched by their values)"
            )
        if args.protocol == "reid":
            query_cameras = getattr(query_set, "cameras", None)
            gallery_cameras = getattr(dataset, "cameras", None)
            if query_cameras is None or gallery_cameras is None:
                query_cameras = np.full(len(queries.labels), -2)
                gallery_cameras = np.full(len(embedded.labels), -1)
                print("note: no camera ids in the data; the same-camera rule is not applied")
            metrics = evaluation.evaluate_reid(
                queries.embeddings,
                query_labels,
                query_cameras,
                embedded.embeddings,
                gallery_labels,
                gallery_cameras,
            ).metrics
        else:
            qrels = {
                q: {d: 1 for d in np.flatnonzero(gallery_labels == label).tolist()}
                for q, label in enumerate(query_labels.tolist())
            }
            offsets = None
            if args.hubness_bank:
                bank_set, bank_sources = open_dataset(args.hubness_bank, run)
                bank = embed_dataset(run, bank_set, bank_sources, progress=not args.quiet)
                if args.hubness_k > len(bank.embeddings):
                    raise UsageError(
                        f"--hubness-k {args.hubness_k} but --hubness-bank {args.hubness_bank!r} "
                        f"holds {len(bank.embeddings)} items"
                    )
                offsets = evaluation.hubness_offsets(
                    embedded.embeddings, bank.embeddings, args.hubness_k
                )
            parts = None
            if args.part_separator is not None:
                from tripletkit.evaluation.text import text_parts

                part_texts, part_rows = text_parts(embedded.sources, args.part_separator)
                if part_texts:
                    part_embeddings = run.model.embed(part_texts, progress=not args.quiet)
                    parts = (part_embeddings, part_rows)
                print(
                    f"{len(part_texts)} parts of {len(np.unique(part_rows))} of the "
                    f"{len(embedded.sources)} corpus texts embedded (separator "
                    f"{args.part_separator!r})"
                )
            pairs = None
            if args.mention_penalty is not None:
                from tripletkit.mining.lexical import mention_pairs

                rows, documents = mention_pairs(
                    queries.sources, embedded.sources, separator=args.part_separator
                )
                pairs = (rows, documents, np.full(rows.shape, args.mention_penalty))
                print(
                    f"{len(rows)} corpus texts named in {len(np.unique(rows))} of the "
                    f"{len(queries.sources)} queries, each moved {args.mention_penalty} in "
                    "distance"
                )
            metrics = evaluation.evaluate_text_retrieval(
                queries.embeddings,
                embedded.embeddings,
                qrels,
                document_offsets=offsets,
                document_parts=parts,
                part_weight=0.5 if args.part_weight is None else args.part_weight,
                pair_offsets=pairs,
            ).metrics
    _print_metrics(f"{args.protocol} metrics of {args.model} on {args.data}:", metrics)
    _write_json(
        args.out,
        {"protocol": args.protocol, "model": args.model, "data": args.data, "metrics": metrics},
    )
    return 0


def _add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a run directory (with calibration.json)")
    parser.add_argument("a", help="first item: an image path (or a text for text models)")
    parser.add_argument("b", help="second item")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--far",
        type=float,
        default=1e-3,
        help="false accept rate of the calibrated threshold (1e-2, 1e-3 or 1e-4)",
    )
    group.add_argument("--threshold", type=float, help="a cosine-distance threshold to use instead")
    parser.set_defaults(run=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tripletkit.distances import paired_distances
    from tripletkit.inference import embed_inputs, load_run

    run = load_run(args.model)
    if args.threshold is not None:
        threshold, source = args.threshold, "given with --threshold"
    else:
        calibration_file = Path(args.model) / "calibration.json"
        if not calibration_file.is_file():
            raise UsageError(
                f"{args.model!r} has no calibration.json (written at the end of tripletkit train); "
                "pass --threshold"
            )
        try:
            calibration = json.loads(calibration_file.read_text())
            thresholds = dict(calibration["thresholds"])
            entry = thresholds.get(repr(float(args.far)))
            if entry is not None:
                threshold, tar = float(entry["value"]), float(entry["tar"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
            raise UsageError(
                f"{str(calibration_file)!r} could not be read ({type(err).__name__}: {err}); "
                "pass --threshold"
            ) from None
        if entry is None:
            listed = ", ".join(thresholds)
            raise UsageError(
                f"no threshold calibrated at FAR {args.far}; calibrated FARs: {listed}"
            )
        source = f"calibrated on the validation set at FAR {args.far} (TAR {tar:.3f})"
        if entry.get("reliable") is False:
            source += (
                f"; too few different-class validation pairs ({calibration.get('impostor_pairs')})"
                " to measure this FAR reliably"
            )
    pair = embed_inputs(run, [args.a, args.b])
    distance = float(paired_distances(pair[:1], pair[1:], "cosine"))
    same = distance <= threshold
    print(
        f"{'same' if same else 'different'}: cosine distance {distance:.4f} "
        f"{'<=' if same else '>'} threshold {threshold:.4f} ({source})"
    )
    return 0 if same else 3


def _add_index_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="build an index from a vectors file")
    build.add_argument("--vectors", required=True, help="a .parquet written by tripletkit embed")
    build.add_argument("--out", required=True, help="the index directory to write")
    build.add_argument("--kind", default="auto", help="auto, flat, hnsw or ivfpq")
    build.add_argument("--metric", default="cosine")
    build.set_defaults(run=_run_index_build)
    search = actions.add_parser(
        "search", help="nearest neighbours of images/texts or a vectors file"
    )
    search.add_argument("--index", required=True, help="an index directory")
    search.add_argument("--model", help="the run that embedded the index (to embed the queries)")
    search.add_argument("queries", nargs="*", help="image paths or texts (with --model)")
    search.add_argument("--vectors", help="query vectors (.parquet) instead of inputs")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--out", help="also write the results as JSON here")
    search.set_defaults(run=_run_index_search)
    info = actions.add_parser("info", help="what an index holds")
    info.add_argument("index", help="an index directory")
    info.set_defaults(run=_run_index_info)


def _run_index_build(args: argparse.Namespace) -> int:
    from tripletkit.index import VectorIndex
    from tripletkit.index.vectors_file import read_vectors

    vectors = read_vectors(args.vectors)
    labels = vectors.labels if any(v is not None for v in vectors.labels) else None
    # Class names ride along as each item's extra metadata, shown by index search.
    extras = (
        [None if c is None else {"class": c} for c in vectors.classes]
        if any(c is not None for c in vectors.classes)
        else None
    )
    index = VectorIndex.build(
        vectors.vectors,
        ids=vectors.ids,
        labels=labels,
        sources=vectors.sources,
        extras=extras,
        kind=args.kind,
        metric=args.metric,
    )
    index.save(args.out)
    print(f"built a {index.kind} index of {len(index)} vectors ({args.metric}) in {args.out}")
    return 0


def _run_index_search(args: argparse.Namespace) -> int:
    from tripletkit.index import VectorIndex
    from tripletkit.index.vectors_file import read_vectors
    from tripletkit.inference import embed_inputs, load_run

    if args.vectors and args.queries:
        raise UsageError("give queries either as --vectors or as images/texts, not both")
    if args.k < 1:
        raise UsageError(f"-k must be >= 1; got {args.k}")
    index = VectorIndex.load(args.index)
    if args.vectors:
        queries = read_vectors(args.vectors).vectors
        names = [f"query {i}" for i in range(len(queries))]
    elif args.queries:
        if not args.model:
            raise UsageError(
                "searching with images or texts needs --model (the run that embedded them)"
            )
        queries = embed_inputs(load_run(args.model), args.queries)
        names = list(args.queries)
    else:
        raise UsageError("give queries (image paths or texts) with --model, or --vectors")
    result = index.search(queries, k=args.k)
    payload = []
    for name, ids, distances, records in zip(
        names, result.ids.tolist(), result.distances.tolist(), result.metadata, strict=True
    ):
        print(f"{name}:")
        hits = []
        for rank, (item, dist, record) in enumerate(zip(ids, distances, records, strict=True), 1):
            if item < 0:  # -k beyond the items in the index: no more hits
                break
            label = getattr(record, "label", None) if record is not None else None
            extra = getattr(record, "extra", None) if record is not None else None
            # The class name where the vectors file has one (label ids are numbered per file).
            name_of_class = extra.get("class") if isinstance(extra, dict) else None
            source = getattr(record, "source", None) if record is not None else None
            shown = 0.0 if abs(dist) < 5e-5 else dist  # no "-0.0000" for an exact match
            shown_label = label if name_of_class is None else name_of_class
            print(
                f"  {rank:>3}. id {item:<8} distance {shown:.4f}  label {shown_label}  "
                f"{source or ''}"
            )
            hit = {"id": item, "distance": dist, "label": label, "source": source}
            if name_of_class is not None:
                hit["class"] = name_of_class
            hits.append(hit)
        payload.append({"query": name, "hits": hits})
    _write_json(args.out, {"index": args.index, "results": payload})
    return 0


def _run_index_info(args: argparse.Namespace) -> int:
    from tripletkit.index import VectorIndex

    index = VectorIndex.load(args.index)
    print(f"{args.index}: {index!r}")
    print(
        f"  vectors: {len(index)}  dimension: {index.dim}  metric: {index.metric}  kind: {index.kind}"
    )
    for key, value in sorted(index.params.items()):
        print(f"  {key}: {value}")
    return 0


command("embed", "embed data with a trained model and write a vectors file (.parquet)")(
    _add_embed_arguments
)
command("evaluate", "evaluate a trained model: retrieval, verification, re-ID or text metrics")(
    _add_evaluate_arguments
)
command("verify", "say whether two items are the same, with the score and the threshold used")(
    _add_verify_arguments
)
command("index", "build, search or inspect a vector index")(_add_index_arguments)


# ----------------------------------------------------------------------------------------------
# average-models (tripletkit.models.averaging)


def _add_models_and_out(parser: argparse.ArgumentParser, models: str, result: str) -> None:
    """The MODEL... and --out arguments of the commands that combine models into one."""
    parser.add_argument("models", nargs="+", metavar="MODEL", help=models)
    parser.add_argument(
        "--out",
        required=True,
        help=f"directory to write: OUT/model ({result}) and, when the first MODEL is a run "
        "directory, its config.json, so OUT works wherever a run directory does",
    )


def _add_average_models_arguments(parser: argparse.ArgumentParser) -> None:
    _add_models_and_out(
        parser,
        "run directories or saved model directories of one architecture, fine-tuned from the "
        "same starting weights (e.g. the same recipe with different --seed)",
        "the averaged model",
    )
    parser.add_argument(
        "--weights", help="one non-negative weight per model, comma-separated (default: uniform)"
    )
    parser.set_defaults(run=_run_average_models)


def _write_combined_model(
    args: argparse.Namespace, combine: Callable[[list], object]
) -> tuple[str, object]:
    """Load ``args.models`` (run or model directories), save ``combine(models)`` as
    ``args.out/model`` and, when the first is a run directory, copy its config.json beside it;
    returns the model directory written and the combined model."""
    import shutil
    from pathlib import Path

    from tripletkit.inference import load_run
    from tripletkit.models import save_model

    out = Path(args.out)
    if any(Path(m).resolve() == out.resolve() for m in args.models):
        raise UsageError(f"--out {args.out!r} is one of the input models; choose a new directory")
    runs = [load_run(path) for path in args.models]
    combined = combine([run.model for run in runs])
    save_model(combined, out / "model")
    first_config = runs[0].directory / "config.json"
    if (runs[0].directory / "model").is_dir() and first_config.is_file():
        shutil.copyfile(first_config, out / "config.json")
    return str(out / "model"), combined


def _run_average_models(args: argparse.Namespace) -> int:
    from tripletkit.models import average_models

    weights = _float_list(args.weights, "--weights") if args.weights else None
    if weights is not None and len(weights) != len(args.models):
        raise UsageError(f"--weights has {len(weights)} values for {len(args.models)} models")
    written, _ = _write_combined_model(args, lambda models: average_models(models, weights))
    print(f"averaged {len(args.models)} models into {written}")
    return 0


command("average-models", "average the weights of fine-tuned models (a model soup)")(
    _add_average_models_arguments
)


# ----------------------------------------------------------------------------------------------
# ensemble (tripletkit.models.ensemble)


def _add_ensemble_arguments(parser: argparse.ArgumentParser) -> None:
    _add_models_and_out(
        parser,
        "run directories or saved model directories that read the same kind of input (e.g. "
        "one recipe trained with different --seed)",
        "one model that embeds with every MODEL, its cosine score the mean of theirs",
    )
    parser.set_defaults(run=_run_ensemble)


def _run_ensemble(args: argparse.Namespace) -> int:
    from tripletkit.models import ensemble_models

    written, combined = _write_combined_model(args, ensemble_models)
    count = len(combined.backbone.members)
    print(
        f"ensembled {count} models into {written} "
        f"({combined.embedding_dim}-d: each member's unit vector / sqrt({count}))"
    )
    return 0


command("ensemble", "combine trained models into one whose cosine score is their mean")(
    _add_ensemble_arguments
)


# ----------------------------------------------------------------------------------------------
# report (tripletkit.report.command)

from tripletkit.report.command import add_report_arguments  # noqa: E402

command("report", "write report.html (curves, histograms, ROC, map, gallery) for a run directory")(
    add_report_arguments
)


# ----------------------------------------------------------------------------------------------
# tune-margin / suggest-margin


def _float_list(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UsageError(f"{flag} expects numbers separated by commas; got {text!r}") from None


def _add_suggest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target-active-fraction",
        type=float,
        default=0.75,
        help="fraction of triplets the suggested margin leaves active (default 0.75)",
    )
    parser.add_argument(
        "--max-items", type=int, default=2000, help="training items embedded for the suggestion"
    )


def _suggest(args: argparse.Namespace, config):
    from tripletkit.tuning import suggest_margin_for_config

    try:
        return suggest_margin_for_config(
            config, target_active_fraction=args.target_active_fraction, max_items=args.max_items
        )
    except ValueError as err:
        raise UsageError(str(err)) from err


def _add_suggest_margin_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser)
    _add_suggest_arguments(parser)
    parser.add_argument("--out", help="also write the suggestion as JSON here")
    parser.set_defaults(run=_run_suggest_margin)


def _run_suggest_margin(args: argparse.Namespace) -> int:
    config = _config_from_arguments(args)
    suggestion = _suggest(args, config)
    print(suggestion.summary())
    print(
        f"grid for tripletkit tune-margin: --margins {','.join(f'{m:g}' for m in suggestion.grid())}"
    )
    _write_json(args.out, suggestion.as_dict())
    return 0


def _add_tune_margin_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser)
    parser.add_argument(
        "--margins", help="margins to try, e.g. 0.05,0.1,0.2,0.4 (default: around the suggestion)"
    )
    parser.add_argument(
        "--distances", help="distances to try, e.g. squared_euclidean,cosine (default: --distance)"
    )
    parser.add_argument(
        "--trial-epochs",
        type=int,
        default=2,
        help="epochs of each trial run (--epochs is the full run's, kept in config.json)",
    )
    parser.add_argument("--trial-batches", type=int, help="batches per epoch of each trial run")
    parser.add_argument(
        "--out", help="directory for the trials and results (default: runs/margin-<date-time>)"
    )
    parser.add_argument(
        "--train-best",
        action="store_true",
        help="then train the full run with the best margin into --out (its report shows the curve)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the trials already finished in --out with the same configuration",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar for --train-best")
    _add_suggest_arguments(parser)
    parser.set_defaults(run=_run_tune_margin)


def _run_tune_margin(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from tripletkit.training.build import DEFAULT_TRIPLET_RECIPE
    from tripletkit.tuning import check_margin_grid, tune_margin

    config = _config_from_arguments(args)
    distances = (
        [d.strip() for d in args.distances.split(",") if d.strip()] if args.distances else None
    )
    margins = _float_list(args.margins, "--margins") if args.margins is not None else None
    try:
        if margins is not None:
            check_margin_grid(
                margins,
                distances or [config.loss.distance or DEFAULT_TRIPLET_RECIPE["distance"]],
                normalized=config.model.normalize,
            )
    except ValueError as err:
        raise UsageError(str(err)) from err
    out = Path(args.out or Path("runs") / time.strftime("margin-%Y%m%d-%H%M%S"))
    if args.train_best:
        from tripletkit.training.build import run_dir_traces

        if traces := run_dir_traces(out):
            # Said before the trials, not after them.
            raise UsageError(
                f"--train-best would train into {str(out)!r}, which already holds a run "
                f"({', '.join(traces)}); give a new --out, or continue that run with "
                f"tripletkit train --resume {out}"
            )
    suggestion = _suggest(args, config)
    print(suggestion.summary())
    if margins is None:
        margins = suggestion.grid()
        print(f"margins (around the suggestion): {', '.join(f'{m:g}' for m in margins)}")

    def report(trial, index, total):
        print(trial.line(index, total), flush=True)

    try:
        tuning = tune_margin(
            config,
            margins,
            distances,
            epochs=args.trial_epochs,
            batches_per_epoch=args.trial_batches,
            out_dir=out,
            suggestion=suggestion,
            progress=report,
            resume=args.resume,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err
    best = tuning.best
    print(
        f"best: margin {best.margin:g} ({best.distance}), validation MAP@R {best.score:.4f} "
        f"[{len(tuning.trials)} trials, {tuning.seconds:.0f} s]"
    )
    print(f"wrote {tuning.json_path}")
    if tuning.plot_path is not None:
        print(f"wrote {tuning.plot_path}")
    print(f"wrote {tuning.config_path} (train with: tripletkit train {tuning.config_path})")
    if args.train_best:
        from tripletkit.training.build import train

        outcome = train(tuning.config, run_dir=out)
        print(_metrics_table(outcome))
        print(f"run directory: {outcome.result.run_dir}")
        if tuning.config.train.precision == "auto":
            print(f"precision: {outcome.result.precision} (train.precision auto)")
        if outcome.report is not None:
            print(f"report: {outcome.report}")
    return 0


command("suggest-margin", "propose a starting triplet margin from the untrained model's distances")(
    _add_suggest_margin_arguments
)
command("tune-margin", "short training runs over a margin grid; writes the best margin's config")(
    _add_tune_margin_arguments
)


def _add_mine_negatives_arguments(parser: argparse.ArgumentParser) -> None:
    from tripletkit.cli_mine_negatives import add_arguments

    add_arguments(parser)


command("mine-negatives", "mine hard negatives for (query, positive) pairs from a corpus")(
    _add_mine_negatives_arguments
)


def _add_train_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    from tripletkit.cli_train_pairs import add_arguments

    add_arguments(parser)


command(
    "train-pairs", "fine-tune a text model on (query, positive) pairs with mined hard negatives"
)(_add_train_pairs_arguments)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
