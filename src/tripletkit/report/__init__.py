"""Reports: the pictures a person looks at after training.

:func:`write_report` turns a run directory into one self-contained ``report.html`` (images inline,
no network needed) plus the figures as PNGs beside it: training curves, positive/negative distance
histograms with the margin and their overlap area, the verification ROC with EER and TAR@FAR, a
2-D map of the validation embeddings, a retrieval gallery (images) or table (text), and a
per-class table, worst classes first. ``tripletkit train`` writes it at the end of every run;
``tripletkit report RUN_DIR`` writes it again.

The numbers behind the figures live in :mod:`.figure_data` (tested without drawing), the drawing in
:mod:`.figures`, the page in ``report.html.j2``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONTENT_SECURITY_POLICY", "write_report"]


def __getattr__(name: str) -> Any:
    # Lazy: ``tripletkit --help`` and the CLI's imports must not pay for matplotlib and torch.
    if name in __all__:
        from tripletkit.report import writer

        return getattr(writer, name)
    raise AttributeError(f"module 'tripletkit.report' has no attribute {name!r}")
