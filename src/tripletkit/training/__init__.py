"""Training: configuration, the Trainer, checkpoints, progress and diagnostics."""

from tripletkit.training.config import RunConfig, resolve_config

__all__ = ["RunConfig", "resolve_config"]
