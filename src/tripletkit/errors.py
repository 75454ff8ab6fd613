"""Warnings that tripletkit emits. Errors are plain ``ValueError``/``TypeError`` with clear messages."""

from __future__ import annotations

__all__ = ["NoPairsWarning", "NoTripletsWarning", "TripletkitWarning"]


class TripletkitWarning(UserWarning):
    """Base class of every warning tripletkit emits (filter them all with this class)."""


class NoTripletsWarning(TripletkitWarning):
    """A batch had no valid triplet (no positive pair, or no negative); its loss is 0."""


class NoPairsWarning(NoTripletsWarning):
    """A batch had nothing a pair or proxy loss can learn from (no usable positive or negative
    pair); its loss is 0. A subclass of :class:`NoTripletsWarning`, so one filter covers both."""
