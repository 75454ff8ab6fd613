"""The ``tripletkit`` command line: parses arguments, then calls the Python API. No logic of its own.

Errors are one clear line on stderr (the traceback only with ``--debug``); bad usage exits with
code 2, a failed command with code 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

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
        return 1


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
        "data set: auto, fashion-mnist, digits, image-folder, manifest, vectors",
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
    "precision": ("train.precision", "fp32, bf16 or fp16"),
}


def _config_epilog() -> str:
    from tripletkit.training.config import RunConfig

    lines = ["every configuration key (set with --set KEY=VALUE or in a YAML/TOML file):"]
    for section, values in RunConfig().to_dict().items():
        for key, value in values.items():
            lines.append(f"  {section}.{key} = {value!r}")
    return "\n".join(lines)


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _config_epilog()
    parser.add_argument(
        "config", nargs="*", help="YAML or TOML configuration files, merged in order"
    )
    for flag, (key, help_text) in _TRAIN_FLAGS.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, help=f"{help_text} ({key})")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="any configuration key")
    parser.add_argument("--run-dir", help="where the run is written (default: runs/<date-time>)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a killed or finished run exactly"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tripletkit.training.build import train
    from tripletkit.training.config import resolve_config

    overrides: dict[str, object] = {}
    files = list(args.config)
    run_dir = args.run_dir
    if args.resume:
        run_dir = args.resume
        saved = Path(args.resume) / "config.json"
        if not saved.is_file():
            raise UsageError(
                f"--resume {args.resume!r}: no config.json there (not a run directory)"
            )
        tree = json.loads(saved.read_text())
        overrides.update({f"{s}.{k}": v for s, section in tree.items() for k, v in section.items()})
    for flag, (key, _) in _TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    overrides.update(_parse_sets(args.set))
    if args.quiet:
        overrides["train.quiet"] = True
    if args.no_report:
        overrides["train.report"] = False
    try:
        config = resolve_config(files, overrides)
    except ValueError as err:
        raise UsageError(str(err)) from err
    outcome = train(config, run_dir=run_dir, resume=bool(args.resume))
    print(_metrics_table(outcome))
    print(f"run directory: {outcome.result.run_dir}")
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
