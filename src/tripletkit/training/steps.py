"""The optimizer step shared by the text trainers (:mod:`~tripletkit.training.text_pairs`,
:mod:`~tripletkit.training.cross_encoder`): AdamW on a warm-up/decay schedule, a loss checked
before it touches the weights, gradient clipping, and the per-step record."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tripletkit.training.schedule import SCHEDULES, lr_factor
from tripletkit.validation import check_choice, check_nonnegative, check_positive

__all__ = ["StepLoop"]


class StepLoop:
    """AdamW over ``groups`` with the learning rate of every group scaled by
    :func:`~tripletkit.training.schedule.lr_factor` at each step, and an optional progress bar.

    Args:
        groups: AdamW parameter groups (each with its own ``lr``; ``weight_decay`` where it
            differs from ``weight_decay``).
        total_steps: the steps of the whole run (for the schedule and the bar).
        warmup_fraction, schedule: as :func:`~tripletkit.training.schedule.lr_factor`.
        weight_decay: AdamW's default for the groups.
        max_grad_norm: clip the gradients' global norm to this (``None``: no clipping).
        what: names the loss in the error for a non-finite value.
        progress: the progress bar's description, or ``None`` for no bar.
        on_step: called as ``on_step(step, loss)`` after each step.
        clipped: the parameters whose gradients are clipped, in the order their norms are
            summed (default: the groups' parameters).
    """

    def __init__(
        self,
        groups: Sequence[dict[str, Any]],
        *,
        total_steps: int,
        warmup_fraction: float,
        schedule: str,
        weight_decay: float,
        max_grad_norm: float | None,
        what: str = "the loss",
        progress: str | None = None,
        on_step: Callable[[int, float], None] | None = None,
        clipped: Sequence[torch.nn.Parameter] | None = None,
    ) -> None:
        check_choice(schedule, SCHEDULES, "schedule")
        if not 0 <= check_nonnegative(warmup_fraction, "warmup_fraction") < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1); got {warmup_fraction!r}")
        check_nonnegative(weight_decay, "weight_decay")
        if max_grad_norm is not None:
            check_positive(max_grad_norm, "max_grad_norm")
        self.parameters = (
            [p for group in groups for p in group["params"]] if clipped is None else list(clipped)
        )
        self.optimizer = torch.optim.AdamW(list(groups), weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total_steps, warmup_fraction, schedule)
        )
        self.max_grad_norm = max_grad_norm
        self.what = what
        self.on_step = on_step
        self.losses: list[float] = []
        self.bar = None
        if progress is not None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, desc=progress, unit="step")

    def step(self, loss: torch.Tensor) -> float:
        """Back-propagate ``loss`` and update the weights; its value. A NaN or infinite loss
        raises ``FloatingPointError`` before any weight changes."""
        value = float(loss.detach())
        step = len(self.losses)
        if not math.isfinite(value):
            rates = ", ".join(f"{group['lr']:.3g}" for group in self.optimizer.param_groups)
            raise FloatingPointError(
                f"{self.what} became {value} at step {step}; lower the learning rate (now "
                f"{rates}) or check the data"
            )
        loss.backward()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(value)
        if self.on_step is not None:
            self.on_step(step, value)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{value:.4f}")
        return value

    def close(self) -> None:
        """Close the progress bar (if any)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
