"""Warnings that tripletkit emits. Errors are plain ``ValueError``/``TypeError`` with clear messages."""

from __future__ import annotations

__all__ = ["NoTripletsWarning", "TripletkitWarning"]


class TripletkitWarning(UserWarning):
    """Base class of every warning tripletkit emits (filter them all with this class)."""


class NoTripletsWarning(TripletkitWarning):
    """A batch had no valid triplet (no positive pair, or no negative); its loss is 0."""
