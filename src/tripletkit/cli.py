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
    from tripletkit import commands  # noqa: F401  (registers the sub-commands)

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
