"""Training: configuration, the Trainer, checkpoints, progress and diagnostics.

``train(config)`` builds and runs what ``tripletkit train`` runs; :class:`Trainer` is the loop for
your own model, loss and datasets.
"""

from tripletkit.training.build import RunOutcome, build_run, train
from tripletkit.training.config import RunConfig, resolve_config
from tripletkit.training.trainer import TrainData, Trainer, TrainResult

__all__ = [
    "RunConfig",
    "RunOutcome",
    "TrainData",
    "TrainResult",
    "Trainer",
    "build_run",
    "resolve_config",
    "train",
]
