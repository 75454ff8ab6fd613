"""What a run tells the person watching it: a progress bar, ``metrics.jsonl``, TensorBoard.

* The progress bar (tqdm) shows epochs and steps with the loss, the active-triplet fraction,
  samples/s and the ETA. It is off when stderr is not a terminal or with ``quiet``; then one line per
  epoch is printed instead (unless quiet).
* Every record is appended to ``<run_dir>/metrics.jsonl`` as one JSON object per line (``kind``:
  ``"step"``, ``"epoch"`` or ``"event"``), flushed immediately, so a killed run keeps its history.
* TensorBoard event files are written when the ``tensorboard`` package is installed.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["RunLog", "read_metrics"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class RunLog:
    """Progress bar + ``metrics.jsonl`` + optional TensorBoard for one run.

    Args:
        run_dir: where ``metrics.jsonl`` (and TensorBoard files) go.
        total_steps: optimizer steps in the whole run (for the ETA).
        quiet: no progress bar and no per-epoch lines.
        tensorboard: write TensorBoard event files if the package is available.
        resume: append to an existing ``metrics.jsonl`` after dropping the records of steps that
            a resumed run will redo (those after ``resume_step``).
        resume_step: the step the run resumes from.
        write: False for a process that must not touch the run directory (the ranks other than 0
            under torchrun): nothing is written, shown or deleted.
    """

    def __init__(
        self,
        run_dir: str | Path,
        total_steps: int,
        quiet: bool = False,
        tensorboard: bool = True,
        resume_step: int | None = None,
        write: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.write = write
        if not write:
            quiet, tensorboard = True, False
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if resume_step is not None and self.path.exists():
                kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
                self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            elif self.path.exists():
                self.path.unlink()
        self.quiet = quiet
        self.total_steps = total_steps
        self.interactive = not quiet and sys.stderr.isatty()
        self._bar = None
        self._writer = None
        self._handle: TextIO | None = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self._writer = None
        self._last_time = time.perf_counter()
        self._samples = 0

    def start_epoch(self, epoch: int, epochs: int, steps: int, first_step: int = 0) -> None:
        if self.interactive:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=steps,
                initial=first_step,
                desc=f"epoch {epoch + 1}/{epochs}",
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )
        self._last_time = time.perf_counter()
        self._samples = 0

    def step(self, step: int, record: dict[str, Any], samples: int) -> None:
        """Log one optimizer step; ``record`` holds loss and mining statistics."""
        self._samples += samples
        elapsed = max(time.perf_counter() - self._last_time, 1e-9)
        record = {"kind": "step", "step": step, "samples_per_s": self._samples / elapsed, **record}
        self._append(record)
        if self._writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._writer.add_scalar(f"train/{key}", value, step)
        if self._bar is not None:
            self._bar.set_postfix(
                loss=f"{record.get('loss', float('nan')):.4f}",
                active=f"{record.get('active_triplet_fraction', float('nan')):.2f}",
                samples_s=f"{record['samples_per_s']:.0f}",
            )
            self._bar.update(1)

    def epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        """Log the end of an epoch (validation metrics, timings)."""
        self._close_bar()
        self._append({"kind": "epoch", "epoch": epoch, "step": step, **metrics})
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self._writer.add_scalar(f"val/{key}", value, step)
            self._writer.flush()
        if not self.quiet:
            shown = ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in metrics.items()
                if k in ("loss", "precision_at_1", "map_at_r", "r_precision", "seconds")
            )
            label = "before training" if epoch < 0 else f"epoch {epoch + 1}"
            print(f"{label}: {shown}", file=sys.stderr, flush=True)

    def event(self, step: int, message: str, **fields: Any) -> None:
        """Log a notable event (a warning, a checkpoint) and show it."""
        self._append({"kind": "event", "step": step, "message": message, **fields})
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        elif not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def _append(self, record: dict[str, Any]) -> None:
        if not self.write:
            return
        if self._handle is None:
            # Opened once and line-buffered: each record reaches the file as it is written (a
            # killed run keeps every record before the kill) without an open and close a step.
            self._handle = open(self.path, "a", buffering=1)  # closed in close()
        self._handle.write(json.dumps(_jsonable(record)) + "\n")

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self._close_bar()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a torn last line from a killed run is ignored)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
