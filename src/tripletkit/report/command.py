"""``tripletkit report RUN_DIR``: the arguments and the call; the work is :func:`write_report`."""

from __future__ import annotations

import argparse

__all__ = ["add_report_arguments"]


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``tripletkit report``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (tripletkit train)")
    parser.add_argument(
        "--tsne",
        action="store_true",
        help="add a t-SNE map (UMAP when umap-learn is installed) beside the PCA (slower)",
    )
    parser.add_argument(
        "--tsne-items",
        type=int,
        default=500,
        help="items of the t-SNE map, a class-balanced subset (default 500)",
    )
    parser.add_argument(
        "--max-items",
        type=int,
        default=2000,
        help="validation items behind the histograms, ROC, map and gallery (default 2000)",
    )
    parser.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from tripletkit.cli import UsageError
    from tripletkit.report import write_report

    for flag, value in (("--max-items", args.max_items), ("--tsne-items", args.tsne_items)):
        if value < 2:
            raise UsageError(f"{flag} must be at least 2; got {value}")
    path = write_report(
        args.run_dir, tsne=args.tsne, tsne_items=args.tsne_items, max_items=args.max_items
    )
    print(f"report: {path}")
    return 0
