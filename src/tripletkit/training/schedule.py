"""Learning-rate schedules as pure functions of the step, so a resumed run needs only the step."""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "lr_factor"]

#: The shapes :func:`lr_factor` knows after its warm-up.
SCHEDULES: tuple[str, ...] = ("linear", "cosine", "constant")


def lr_factor(
    step: int,
    total_steps: int,
    warmup_fraction: float = 0.05,
    schedule: str = "cosine",
    min_lr_fraction: float = 0.0,
) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warm-up from ``1 / warmup_steps`` to 1 over the first ``warmup_fraction`` of the run,
    then cosine decay to ``min_lr_fraction`` at the last step (``"cosine"``), linear decay to it
    (``"linear"``, as sentence-transformers' and transformers' default), or flat
    (``"constant"``).

    >>> [round(lr_factor(s, 10, warmup_fraction=0.2), 3) for s in range(10)]
    [0.5, 1.0, 1.0, 0.962, 0.854, 0.691, 0.5, 0.309, 0.146, 0.038]
    >>> [round(lr_factor(s, 10, warmup_fraction=0.2, schedule="linear"), 3) for s in range(10)]
    [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    """
    warmup_steps = max(round(warmup_fraction * total_steps), 0)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    if schedule == "linear":
        return min_lr_fraction + (1.0 - min_lr_fraction) * (1.0 - progress)
    return min_lr_fraction + (1.0 - min_lr_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))
