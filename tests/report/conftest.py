"""A small trained run directory, shared by the report tests (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tripletkit.training import resolve_config
from tripletkit.training.build import train

#: A digits run of a few batches: enough for every figure, seconds to train.
TINY_DIGITS = {
    "data.dataset": "digits",
    "data.p": 5,
    "data.k": 8,
    "data.batches_per_epoch": 6,
    "train.epochs": 2,
    "train.quiet": True,
    "train.report": True,
    "train.tensorboard": False,
}


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A finished digits run whose report ``train()`` wrote at the end."""
    run_dir = tmp_path_factory.mktemp("report") / "digits-run"
    outcome = train(resolve_config(overrides=TINY_DIGITS), run_dir=run_dir)
    assert outcome.report == run_dir / "report.html"
    return run_dir
