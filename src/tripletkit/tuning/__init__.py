"""Choosing the margin: a suggestion from the untrained model's distances, and a grid search.

* :func:`suggest_margin` measures ``d(a, n) - d(a, p)`` over the triplets of the model that is about
  to be trained and proposes the margin that leaves a chosen fraction of them active (the rule is
  in :mod:`tripletkit.tuning.suggest`).
* :func:`tune_margin` trains short runs over a grid of margins (and distances), scores them by
  validation MAP@R and writes ``margin_tuning.json`` (format in :mod:`tripletkit.tuning.tune`),
  ``margin_tuning.png`` and a ``config.json`` with the best margin.

``docs/margin.md`` explains what the margin means per distance and mining mode.
"""

from tripletkit.tuning.suggest import (
    DEFAULT_TARGET_ACTIVE_FRACTION,
    MarginSuggestion,
    suggest_margin,
    suggest_margin_for_config,
    suggest_margin_from_embeddings,
    triplet_gaps,
)
from tripletkit.tuning.tune import MarginTrial, MarginTuning, check_margin_grid, tune_margin

__all__ = [
    "DEFAULT_TARGET_ACTIVE_FRACTION",
    "MarginSuggestion",
    "MarginTrial",
    "MarginTuning",
    "check_margin_grid",
    "suggest_margin",
    "suggest_margin_for_config",
    "suggest_margin_from_embeddings",
    "triplet_gaps",
    "tune_margin",
]
