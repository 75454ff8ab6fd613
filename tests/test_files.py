"""Durable writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tripletkit.files import atomic_write_text, write_atomic


def test_write_atomic_cleans_up_after_a_failing_writer(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("old")

    def failing(path: Path) -> None:
        path.write_text("new but incomplete")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_atomic(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_atomic_write_text_replaces_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["b.txt"]
