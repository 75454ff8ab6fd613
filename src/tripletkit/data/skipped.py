"""Items that could not be read: skipped, counted and named, never silently lost.

A dataset that reads files checks them when it is built (unreadable ones are left out and
reported in one warning naming the first few and the total) and again when it decodes them (a
file that fails then, e.g. a truncated JPEG, is replaced by another item of the same class and
recorded). ``strict=True`` turns either into an error. The record of failures made inside
DataLoader worker processes lives in shared memory, so the dataset object in the main process sees
them: ``dataset.skipped`` lists every skipped item and :meth:`SkipRecord.summary` gives the line a
trainer or report prints at the end of a run.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tripletkit.errors import TripletkitWarning

__all__ = ["ReportsSkipped", "SkipRecord", "SkippedItem", "SkippedItemsWarning"]

_SHOWN = 5


class SkippedItemsWarning(TripletkitWarning):
    """Some items could not be read and were skipped (see the dataset's ``skipped``)."""


@dataclass(frozen=True)
class SkippedItem:
    """One skipped item: ``path`` (the file, or manifest row) and why it was skipped."""

    path: str
    reason: str


def _listing(items: Sequence[SkippedItem]) -> str:
    shown = "; ".join(f"{item.path} ({item.reason})" for item in items[:_SHOWN])
    return shown + ("; ..." if len(items) > _SHOWN else "")


class SkipRecord:
    """What a dataset skipped: at build time (a list) and at load time (shared flags per item).

    Args:
        source: what the items come from, for messages (a folder or a manifest file).
        paths: the file (or row) name of each kept item, used to name load-time failures.
        strict: raise ``ValueError`` instead of skipping.

    >>> record = SkipRecord("photos/", ["a.jpg", "b.jpg"])
    >>> record.count, record.summary()
    (0, 'photos/: no items skipped')
    """

    def __init__(self, source: str, paths: Sequence[str], strict: bool = False) -> None:
        self.source = str(source)
        self.paths = list(paths)
        self.strict = bool(strict)
        self.at_build: list[SkippedItem] = []
        # One flag per kept item, in shared memory so that DataLoader workers' marks are seen here.
        self._failed_at_load = torch.zeros(len(self.paths), dtype=torch.bool).share_memory_()

    def report_build(self, skipped: Sequence[SkippedItem], total: int) -> None:
        """Record the items left out at build time: raise when strict, else warn once."""
        self.at_build = list(skipped)
        if not skipped:
            return
        message = (
            f"{self.source}: {len(skipped)} of {total} items could not be read: {_listing(skipped)}"
        )
        if self.strict:
            raise ValueError(message + " (strict=True; pass strict=False to skip them)")
        warnings.warn(
            message + "; they are skipped (dataset.skipped lists them; strict=True makes this an "
            "error)",
            SkippedItemsWarning,
            stacklevel=4,
        )

    def fail_at_load(self, index: int, error: Exception) -> None:
        """Record that kept item ``index`` failed to decode: raise when strict, else warn."""
        where = self.paths[index]
        if self.strict:
            raise ValueError(
                f"{self.source}: could not read {where}: {error} (strict=True; pass strict=False "
                "to skip unreadable items)"
            ) from error
        self._failed_at_load[index] = True
        warnings.warn(
            f"{self.source}: could not read {where} ({error}); skipped and replaced by another "
            "item of the same class",
            SkippedItemsWarning,
            stacklevel=3,
        )

    def failed(self, index: int) -> bool:
        """Whether kept item ``index`` already failed to decode."""
        return bool(self._failed_at_load[index])

    @property
    def items(self) -> list[SkippedItem]:
        """Every skipped item: the build-time ones, then the load-time ones."""
        at_load = torch.nonzero(self._failed_at_load).flatten().tolist()
        return self.at_build + [
            SkippedItem(self.paths[i], "could not be decoded when loaded") for i in at_load
        ]

    @property
    def count(self) -> int:
        """How many items were skipped in all."""
        return len(self.at_build) + int(self._failed_at_load.sum())

    def summary(self) -> str:
        """One line for the end of a run: how many items were skipped, and the first few."""
        items = self.items
        if not items:
            return f"{self.source}: no items skipped"
        total = len(self.paths) + len(self.at_build)
        return f"{self.source}: skipped {len(items)} of {total} items: {_listing(items)}"


class ReportsSkipped:
    """Gives a dataset ``skipped``, ``num_skipped`` and ``skip_summary()`` from its record.

    Datasets that read files keep a :class:`SkipRecord` in ``_record``; in-memory datasets have
    none and report nothing skipped, so a trainer can ask any dataset the same way.
    """

    _record: SkipRecord | None = None

    @property
    def skipped(self) -> list[SkippedItem]:
        """Every item skipped so far (at build time and when loading, in any worker)."""
        return self._record.items if self._record is not None else []

    @property
    def num_skipped(self) -> int:
        """How many items were skipped so far."""
        return self._record.count if self._record is not None else 0

    def skip_summary(self) -> str:
        """One line for the end of a run: the count and the first few skipped items."""
        if self._record is None:
            return f"{type(self).__name__}: no items skipped"
        return self._record.summary()
