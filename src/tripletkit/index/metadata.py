"""The metadata kept beside the vectors: one SQLite row per item.

Each item has an ``id`` (int64, chosen by the caller or assigned), the ``position`` of its vector in
the faiss index, and optional ``label`` (int), ``source`` (a file path or the text itself) and
``extra`` (any JSON object). The database lives in memory while the index is in use and is written
to, and read from, a file by :mod:`tripletkit.index.storage`; reading checks its schema, so a file
from elsewhere gives a clear error.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MetadataStore", "Record"]

_SCHEMA = (
    "CREATE TABLE items ("
    "id INTEGER PRIMARY KEY, "
    "position INTEGER NOT NULL UNIQUE, "
    "label INTEGER, "
    "source TEXT, "
    "extra TEXT)"
)
_COLUMNS = ["id", "position", "label", "source", "extra"]
# SQLite's default limit on bound parameters in one statement is 32,766 (999 before 3.32).
_BATCH = 900


@dataclass(frozen=True)
class Record:
    """An item's metadata.

    Attributes:
        id: the item's id.
        label: its class label, or None.
        source: the file path or text it came from, or None.
        extra: any JSON-serialisable dict, or None.
    """

    id: int
    label: int | None = None
    source: str | None = None
    extra: dict[str, Any] | None = None


def _check_column(values: Sequence[Any] | None, n: int, name: str) -> list[Any]:
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} vectors; they must match")
    return values


class MetadataStore:
    """Item metadata in an SQLite database, safe to call from several threads (one lock)."""

    def __init__(self, connection: sqlite3.Connection | None = None) -> None:
        if connection is None:
            connection = sqlite3.connect(":memory:", check_same_thread=False)
            connection.execute(_SCHEMA)
            connection.commit()
        self._db = connection
        self._lock = threading.Lock()

    @staticmethod
    def read(path: Path) -> MetadataStore:
        """Copy the database file at ``path`` into memory after checking it is an index's."""
        with open(path, "rb") as handle:
            header = handle.read(16)
        if header != b"SQLite format 3\x00":
            raise ValueError(f"{path} is not an SQLite database (bad header); the index is corrupt")
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            columns = [row[1] for row in source.execute("PRAGMA table_info(items)")]
            if columns != _COLUMNS:
                raise ValueError(
                    f"{path} has no tripletkit items table (columns {columns}); "
                    "not a tripletkit index's metadata"
                )
            status = source.execute("PRAGMA integrity_check").fetchone()[0]
            if status != "ok":
                raise ValueError(f"{path} fails SQLite's integrity check: {status}")
            memory = sqlite3.connect(":memory:", check_same_thread=False)
            source.backup(memory)
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{path} is not a readable SQLite database: {err}") from err
        finally:
            source.close()
        return MetadataStore(memory)

    def write(self, path: Path) -> None:
        """Write the database to a new file at ``path``."""
        target = sqlite3.connect(path)
        try:
            with self._lock:
                self._db.backup(target)
        finally:
            target.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def max_id(self) -> int:
        """The largest id stored, or -1."""
        with self._lock:
            value = self._db.execute("SELECT MAX(id) FROM items").fetchone()[0]
        return -1 if value is None else int(value)

    def existing(self, ids: Iterable[int]) -> list[int]:
        """Which of ``ids`` are stored already."""
        found: list[int] = []
        ids = [int(i) for i in ids]
        with self._lock:
            for start in range(0, len(ids), _BATCH):
                batch = ids[start : start + _BATCH]
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(f"SELECT id FROM items WHERE id IN ({marks})", batch)
                found.extend(int(r[0]) for r in rows)
        return found

    def insert(
        self,
        ids: np.ndarray,
        positions: np.ndarray,
        labels: Sequence[Any] | None,
        sources: Sequence[Any] | None,
        extras: Sequence[Any] | None,
    ) -> None:
        """Add one row per id (all-or-nothing)."""
        n = ids.shape[0]
        label_column = _check_column(labels, n, "labels")
        source_column = _check_column(sources, n, "sources")
        extra_column = _check_column(extras, n, "extras")
        rows = []
        for i in range(n):
            label = label_column[i]
            if label is not None:
                if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
                    raise ValueError(f"labels[{i}] is {label!r}; expected an integer or None")
                label = int(label)
            source = source_column[i]
            if source is not None and not isinstance(source, str):
                source = str(source)
            extra = extra_column[i]
            if extra is not None:
                if not isinstance(extra, dict):
                    raise ValueError(f"extras[{i}] is a {type(extra).__name__}; expected a dict")
                try:
                    extra = json.dumps(extra)
                except (TypeError, ValueError) as err:
                    raise ValueError(f"extras[{i}] is not JSON-serialisable: {err}") from err
            rows.append((int(ids[i]), int(positions[i]), label, source, extra))
        with self._lock, self._db:
            self._db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", rows)

    def delete(self, ids: Iterable[int]) -> np.ndarray:
        """Remove the rows of ``ids`` that exist; return their positions."""
        ids = [int(i) for i in ids]
        positions: list[int] = []
        with self._lock, self._db:
            for start in range(0, len(ids), _BATCH):
                batch = ids[start : start + _BATCH]
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(
                    f"SELECT position FROM items WHERE id IN ({marks})", batch
                ).fetchall()
                positions.extend(int(r[0]) for r in rows)
                self._db.execute(f"DELETE FROM items WHERE id IN ({marks})", batch)
        return np.array(positions, dtype=np.int64)

    def records(self, ids: Iterable[int]) -> dict[int, Record]:
        """``{id: Record}`` for the stored ids among ``ids``."""
        wanted = sorted({int(i) for i in ids if int(i) >= 0})
        found: dict[int, Record] = {}
        with self._lock:
            for start in range(0, len(wanted), _BATCH):
                batch = wanted[start : start + _BATCH]
                marks = ",".join("?" * len(batch))
                for item_id, label, source, extra in self._db.execute(
                    f"SELECT id, label, source, extra FROM items WHERE id IN ({marks})", batch
                ):
                    found[int(item_id)] = Record(
                        int(item_id),
                        None if label is None else int(label),
                        source,
                        None if extra is None else json.loads(extra),
                    )
        return found

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, positions)`` of every row, by position."""
        with self._lock:
            rows = self._db.execute("SELECT id, position FROM items ORDER BY position").fetchall()
        array = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return array[:, 0].copy(), array[:, 1].copy()

    def renumber(self, positions_by_id: dict[int, int]) -> None:
        """Give rows new positions (after the index was rebuilt without the removed items)."""
        with self._lock, self._db:
            # Two steps keep the UNIQUE constraint on position satisfied in between.
            self._db.execute("UPDATE items SET position = -1 - position")
            self._db.executemany(
                "UPDATE items SET position = ? WHERE id = ?",
                [(p, i) for i, p in positions_by_id.items()],
            )
