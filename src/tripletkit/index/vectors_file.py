"""Embeddings on disk: a Parquet file with ``id``, ``label``, ``source`` and ``embedding`` columns.

Written by ``tripletkit embed`` and read by ``tripletkit index build``; any tool that reads Parquet
can use it (the embedding column is a fixed-size list of float32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tripletkit.files import write_atomic

__all__ = ["VectorsFile", "read_vectors", "write_vectors"]


class VectorsFile:
    """The content of a vectors file."""

    def __init__(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        labels: list[Any],
        sources: list[str],
        classes: list[str | None] | None = None,
    ):
        self.ids, self.vectors, self.labels, self.sources = ids, vectors, labels, sources
        #: Each row's class name (the label as the data gave it; ``labels`` are ids numbered
        #: per file), or None throughout for a file without them.
        self.classes = classes if classes is not None else [None] * len(labels)


def write_vectors(
    path: str | Path,
    vectors: Any,
    labels: Any = None,
    sources: list[str] | None = None,
    ids: Any = None,
    classes: list[Any] | None = None,
) -> Path:
    """Write ``(N, D)`` vectors with optional labels/sources/ids to a Parquet file, atomically.

    ``classes``: each row's class name (a ``class`` column, as strings), so that files whose label
    ids were numbered separately can still be read and compared by class.

    >>> import tempfile
    >>> path = write_vectors(Path(tempfile.mkdtemp()) / "v.parquet", np.eye(2), [0, 1], ["a", "b"])
    >>> read_vectors(path).vectors.shape
    (2, 2)
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors have shape {vectors.shape}; expected (N, D)")
    n, dim = vectors.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    columns = {
        "id": pa.array(ids),
        "label": pa.array(
            [None] * n if labels is None else [None if v is None else int(v) for v in labels],
            type=pa.int64(),
        ),
        "source": pa.array(
            [None] * n if sources is None else [str(s) for s in sources], type=pa.string()
        ),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
    }
    if classes is not None:
        if len(classes) != n:
            raise ValueError(f"classes has {len(classes)} entries for {n} vectors")
        columns["class"] = pa.array(
            [None if c is None else str(c) for c in classes], type=pa.string()
        )
    table = pa.table(columns)
    path = Path(path)
    write_atomic(path, lambda temporary: pq.write_table(table, temporary))
    return path


def read_vectors(path: str | Path) -> VectorsFile:
    """Read a file written by :func:`write_vectors` (or any Parquet with an ``embedding`` column)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no vectors file at {str(path)!r}")
    table = pq.read_table(path)
    if "embedding" not in table.column_names:
        raise ValueError(
            f"{str(path)!r} has no 'embedding' column (columns: {', '.join(table.column_names)}); "
            "write it with `tripletkit embed`"
        )
    embedding = table.column("embedding").combine_chunks()
    dim = embedding.type.list_size if hasattr(embedding.type, "list_size") else None
    flat = np.asarray(embedding.flatten(), dtype=np.float32)
    n = table.num_rows
    vectors = flat.reshape(n, dim if dim else flat.shape[0] // max(n, 1))
    ids = (
        np.asarray(table.column("id"), dtype=np.int64)
        if "id" in table.column_names
        else np.arange(n, dtype=np.int64)
    )
    labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * n
    sources = table.column("source").to_pylist() if "source" in table.column_names else [None] * n
    classes = table.column("class").to_pylist() if "class" in table.column_names else None
    return VectorsFile(ids, vectors, labels, sources, classes)
