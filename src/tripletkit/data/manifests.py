"""Manifests: tables (CSV, JSONL, Parquet) that list a dataset's items, one row each.

Three layouts, by column names:

================================  ==========================================================
columns                           dataset
================================  ==========================================================
``path`` or ``text``, ``label``   :func:`manifest_dataset`: ``(image or text, label)`` items
``anchor``, ``positive``,         :class:`TripletManifestDataset`: explicit triplets, items
``negative``                      ``{"anchor": .., "positive": .., "negative": ..}``
``query``, ``positive``           :class:`PairManifestDataset`: retrieval pairs, items
                                  ``{"query": .., "positive": ..}`` (+ ``"label"`` if present)
================================  ==========================================================

Paths are relative to ``root`` (by default the manifest's folder). A path that is absolute or
leaves the root (``../../etc/passwd``) is refused unless ``allow_outside_root=True``: a manifest
from elsewhere must not make a training job read arbitrary files.

Every problem with a manifest is an error naming the file, the column and the row (its line in a
CSV or JSONL file): a missing column, no rows, a missing label, all labels distinct.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tripletkit.data.arrays import TextDataset
from tripletkit.data.images import (
    _READ_ERRORS,
    Check,
    ImageFileDataset,
    _check_file,
    decode_image,
)
from tripletkit.data.labels import encode_labels, missing_label_rows, require_positive_pair
from tripletkit.data.skipped import ReportsSkipped, SkippedItem, SkipRecord
from tripletkit.data.transforms import apply_transform, augmentation_generator
from tripletkit.validation import check_choice

__all__ = [
    "MANIFEST_SUFFIXES",
    "Manifest",
    "PairManifestDataset",
    "TripletManifestDataset",
    "UnlabelledDataset",
    "manifest_dataset",
    "read_manifest",
    "resolve_item_path",
]

#: File name endings :func:`read_manifest` reads.
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")

PARQUET_INSTALL = "pip install pyarrow (or: pip install 'tripletkit[data]')"


@dataclass
class Manifest:
    """A manifest read into columns.

    Attributes:
        path: the file.
        columns: column name -> list of ``num_rows`` values (None where a row has no value).
        num_rows: the number of data rows.
        lines: the file line of each row (CSV, JSONL), or None (Parquet: rows are 0-based).
        kind: ``"csv"`` (also TSV: every value is text), ``"jsonl"`` or ``"parquet"``.
    """

    path: Path
    columns: dict[str, list[Any]]
    num_rows: int
    lines: list[int] | None = None
    kind: str = "csv"

    def where(self, row: int) -> str:
        """``"line 7"`` (CSV, JSONL) or ``"row 5"`` (Parquet, 0-based) of a data row."""
        return f"line {self.lines[row]}" if self.lines is not None else f"row {row}"

    def require(self, names: Sequence[str], expected: str) -> None:
        """Raise ``ValueError`` unless every column in ``names`` exists, saying what is expected."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            found = ", ".join(repr(c) for c in self.columns) or "none"
            raise ValueError(
                f"manifest {self.path} has no column {', '.join(repr(m) for m in missing)} "
                f"(found: {found}); expected {expected}"
            )

    def require_values(self, column: str, what: str) -> list[Any]:
        """The column's values; raise when any row lacks one (None, NaN or empty)."""
        values = self.columns[column]
        missing = missing_label_rows(values)
        if missing:
            shown = ", ".join(self.where(i) for i in missing[:5]) + (
                ", ..." if len(missing) > 5 else ""
            )
            raise ValueError(
                f"manifest {self.path}: column '{column}' has {len(missing)} missing values "
                f"(empty, None or NaN) at {shown}; every row needs {what}"
            )
        return values

    def require_labels(self, column: str = "label") -> list[Any]:
        """The label column's values; raise when a label is missing.

        CSV cells are text: there ``nan`` (as Python writes a missing float) counts as missing,
        and a column of plainly written integers (``3``, ``-1``; not ``007``) becomes ints, so a
        CSV and a JSONL manifest of the same data get the same ``classes``.
        """
        values = self.columns[column]
        if self.kind == "csv":
            values = [
                None if isinstance(v, str) and v.strip().lower() == "nan" else v for v in values
            ]
            self.columns[column] = values
        values = self.require_values(column, "a label")
        if self.kind == "csv" and all(_plain_int(v) for v in values):
            values = [int(v) for v in values]
        return values


def _plain_int(text: Any) -> bool:
    try:
        return isinstance(text, str) and str(int(text)) == text.strip()
    except ValueError:
        return False


def _read_csv(path: Path, delimiter: str) -> Manifest:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = reader.fieldnames or []
        columns: dict[str, list[Any]] = {name: [] for name in header}
        lines = []
        for row in reader:
            lines.append(reader.line_num)
            for name in header:
                columns[name].append(row.get(name))
    return Manifest(path, columns, len(lines), lines, kind="csv")


def _read_jsonl(path: Path) -> Manifest:
    rows, lines = [], []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"manifest {path} line {line_number} is not valid JSON ({error.msg}); expected "
                    "one JSON object per line"
                ) from error
            if not isinstance(row, dict):
                raise ValueError(
                    f"manifest {path} line {line_number} is a JSON {type(row).__name__}; expected "
                    "one JSON object per line"
                )
            rows.append(row)
            lines.append(line_number)
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    return Manifest(path, columns, len(rows), lines, kind="jsonl")


def _read_parquet(path: Path) -> Manifest:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError(
            f"reading Parquet manifest {path} needs pyarrow: {PARQUET_INSTALL}"
        ) from error
    table = pq.read_table(path)
    return Manifest(path, table.to_pydict(), table.num_rows, None, kind="parquet")


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson`` or ``.parquet`` manifest into columns.

    Raises ``ValueError`` for an unknown suffix, invalid JSON, or a manifest with no rows.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "items.csv"
    >>> _ = path.write_text("text,label\\nred shoe,shoe\\nblue shoe,shoe\\n")
    >>> manifest = read_manifest(path)
    >>> manifest.num_rows, manifest.columns["label"], manifest.where(1)
    (2, ['shoe', 'shoe'], 'line 3')
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        manifest = _read_csv(path, ",")
    elif suffix == ".tsv":
        manifest = _read_csv(path, "\t")
    elif suffix in (".jsonl", ".ndjson"):
        manifest = _read_jsonl(path)
    elif suffix == ".parquet":
        manifest = _read_parquet(path)
    else:
        raise ValueError(
            f"manifest {path} has suffix {suffix!r}; expected {', '.join(MANIFEST_SUFFIXES)}"
        )
    if manifest.num_rows == 0:
        raise ValueError(
            f"manifest {path} has no rows; expected a header (CSV) and one row per item"
        )
    return manifest


def resolve_item_path(
    root: str | os.PathLike[str], value: str, *, allow_outside_root: bool = False, where: str = ""
) -> str:
    """``root / value``, refusing absolute paths and paths that leave ``root``.

    The check is on the normalised path text (``a/../../b`` leaves the root); symbolic links
    inside the root are followed as usual, since whoever made the root put them there.

    >>> resolve_item_path("/data", "cats/1.jpg")
    '/data/cats/1.jpg'
    >>> resolve_item_path("/data", "../../etc/passwd", where="train.csv line 2")
    Traceback (most recent call last):
    ...
    ValueError: train.csv line 2: path '../../etc/passwd' is outside the data root /data; paths must be relative to the root and stay inside it (pass allow_outside_root=True to allow this)
    """
    root_text = os.path.normpath(os.path.abspath(root))
    raw = str(value)
    joined = os.path.normpath(os.path.join(root_text, raw))
    inside = not os.path.isabs(raw) and os.path.commonpath([joined, root_text]) == root_text
    if not inside and not allow_outside_root:
        prefix = f"{where}: " if where else ""
        raise ValueError(
            f"{prefix}path {raw!r} is outside the data root {root_text}; paths must be relative to "
            "the root and stay inside it (pass allow_outside_root=True to allow this)"
        )
    return joined


def _resolve_column(
    manifest: Manifest, column: str, root: Path, allow_outside_root: bool
) -> list[str]:
    values = manifest.require_values(column, "a file path")
    return [
        resolve_item_path(
            root,
            str(value),
            allow_outside_root=allow_outside_root,
            where=f"manifest {manifest.path} {manifest.where(i)}, column '{column}'",
        )
        for i, value in enumerate(values)
    ]


def manifest_dataset(
    manifest: str | os.PathLike[str],
    transform: Callable[..., torch.Tensor] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    label_column: str = "label",
    allow_outside_root: bool = False,
    mode: str | None = "RGB",
    check: Check = "header",
    strict: bool = False,
    seed: int | None = None,
    require_positives: bool = True,
    require_labels: bool = True,
) -> ImageFileDataset | TextDataset | UnlabelledDataset:
    """A labelled dataset from a manifest with a ``path`` or a ``text`` column and a label column.

    With ``path``: an :class:`~tripletkit.data.ImageFileDataset` (items ``(image, label)``;
    unreadable images skipped and counted, see there); with ``text``: a
    :class:`~tripletkit.data.TextDataset` (items ``(text, label)``). Labels may be strings or ints;
    ``dataset.classes`` keeps the original values.

    Args:
        manifest: a ``.csv``/``.tsv``/``.jsonl``/``.parquet`` file.
        transform, mode, check, strict, seed: for images, as in ``ImageFileDataset``.
        root: the folder ``path`` values are relative to (default: the manifest's folder).
        label_column: the column holding the labels.
        allow_outside_root: accept absolute paths and paths leaving ``root``.
        require_positives: raise when every label is distinct.
        require_labels: with False, a manifest without the label column is read as an
            :class:`UnlabelledDataset` (e.g. a corpus to embed and index) instead of an error.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "texts.jsonl"
        >>> _ = path.write_text('{"text": "a sandal", "label": "shoe"}\\n'
        ...                     '{"text": "a boot", "label": "shoe"}\\n'
        ...                     '{"text": "a cap", "label": "hat"}\\n')
        >>> dataset = manifest_dataset(path)
        >>> dataset[0], dataset.classes
        (('a sandal', 1), ['hat', 'shoe'])
    """
    table = read_manifest(manifest)
    has_path, has_text = "path" in table.columns, "text" in table.columns
    if has_path == has_text:
        found = ", ".join(repr(c) for c in table.columns)
        problem = (
            "both a 'path' and a 'text' column"
            if has_path
            else "neither a 'path' nor a 'text' column"
        )
        raise ValueError(
            f"manifest {table.path} has {problem} (found: {found}); expected exactly one of them, "
            f"plus a '{label_column}' column"
        )
    unlabelled = not require_labels and label_column not in table.columns
    if unlabelled:
        labels: list[Any] = [0] * table.num_rows  # placeholders, hidden by UnlabelledDataset
        require_positives = False
    else:
        table.require([label_column], f"a '{label_column}' column (the class of each item)")
        labels = table.require_labels(label_column)
    dataset: ImageFileDataset | TextDataset
    if has_text:
        texts = table.require_values("text", "a text")
        dataset = TextDataset(texts, labels, require_positives=False)
        if require_positives:
            require_positive_pair(dataset.labels, f"manifest {table.path}", f"'{label_column}'")
    else:
        if require_positives:
            # Checked before the files are opened, so the message names the manifest and column.
            require_positive_pair(
                encode_labels(labels).ids, f"manifest {table.path}", f"'{label_column}'"
            )
        root = Path(root) if root is not None else table.path.parent
        paths = _resolve_column(table, "path", root, allow_outside_root)
        dataset = ImageFileDataset(
            paths,
            labels,
            transform,
            mode=mode,
            check=check,
            strict=strict,
            seed=seed,
            source=f"manifest {table.path}",
            require_positives=require_positives,
        )
    return UnlabelledDataset(dataset) if unlabelled else dataset


class UnlabelledDataset(torch.utils.data.Dataset):
    """Items without labels (a corpus to embed, a bank of past queries): ``labels`` and
    ``classes`` are None, so code that needs labels can tell and say so.

    Wraps a labelled dataset built with placeholder labels, whose items and batches it returns
    unchanged (a DataLoader still yields ``(inputs, labels)``; those labels mean nothing). Other
    attributes (``texts``, ``paths``, ``skipped``, ``set_epoch``...) are the wrapped dataset's.

    >>> dataset = UnlabelledDataset(TextDataset(["a boot", "a cap"], [0, 0], require_positives=False))
    >>> len(dataset), dataset[1][0], dataset.labels is None, dataset.texts
    (2, 'a cap', True, ['a boot', 'a cap'])
    """

    labels = None
    classes = None

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> Any:
        fetch = getattr(self.dataset, "__getitems__", None)
        return fetch(indices) if fetch is not None else [self.dataset[i] for i in indices]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class _TupleManifestDataset(ReportsSkipped, torch.utils.data.Dataset):
    """Rows of several items each (triplets, pairs), as texts or image files."""

    roles: tuple[str, ...] = ()

    def __init__(
        self,
        manifest: str | os.PathLike[str],
        content: Literal["path", "text"],
        transform: Callable[..., torch.Tensor] | None = None,
        *,
        columns: Sequence[str] | None = None,
        root: str | os.PathLike[str] | None = None,
        allow_outside_root: bool = False,
        mode: str | None = "RGB",
        check: Check = "header",
        strict: bool = False,
        seed: int | None = None,
        label_column: str | None = "label",
    ) -> None:
        self.content = check_choice(content, ("path", "text"), "content")
        check_choice(check, ("none", "header", "full"), "check")
        table = read_manifest(manifest)
        self.columns = tuple(columns) if columns is not None else self.roles
        if len(self.columns) != len(self.roles):
            raise ValueError(
                f"columns must name {len(self.roles)} columns for {', '.join(self.roles)}; "
                f"got {list(self.columns)}"
            )
        table.require(
            self.columns, f"columns {', '.join(repr(c) for c in self.columns)} ({content}s)"
        )
        self.source = f"manifest {table.path}"
        root = Path(root) if root is not None else table.path.parent
        rows = [
            _tuple_column(table, c, self.content, root, allow_outside_root) for c in self.columns
        ]
        labels = None
        if label_column is not None and label_column in table.columns:
            labels = table.require_labels(label_column)
        kept = list(range(table.num_rows))
        skipped = []
        if self.content == "path" and check != "none":
            kept = []
            for i in range(table.num_rows):
                reasons = [
                    f"{column} {rows[j][i]}: {reason}"
                    for j, column in enumerate(self.columns)
                    if (reason := _check_file(rows[j][i], check, mode)) is not None
                ]
                if reasons:
                    skipped.append(SkippedItem(table.where(i), "; ".join(reasons)))
                else:
                    kept.append(i)
        self.items = [tuple(rows[j][i] for j in range(len(self.columns))) for i in kept]
        self.labels: np.ndarray | None = None
        self.classes: list[Any] | None = None
        if labels is not None and kept:
            self.labels, self.classes = encode_labels([labels[i] for i in kept])
        self._record = SkipRecord(self.source, [table.where(i) for i in kept], strict=strict)
        self._record.report_build(skipped, total=table.num_rows)
        if not self.items:
            raise ValueError(f"{self.source}: no readable rows ({len(skipped)} unreadable)")
        self.transform = transform
        self.mode = mode
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch mixed into the augmentation seed (with ``seed`` set)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _load_row(self, index: int) -> list[torch.Tensor]:
        return [decode_image(path, self.mode) for path in self.items[index]]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.content == "text":
            values: list[Any] = list(self.items[index])
        else:
            values = self._readable_row(index)
            if self.transform is not None:
                values = [
                    apply_transform(
                        self.transform,
                        image,
                        augmentation_generator(self.seed, self.epoch, index, j)
                        if self.seed is not None
                        else None,
                    )
                    for j, image in enumerate(values)
                ]
        item = dict(zip(self.roles, values, strict=True))
        if self.labels is not None:
            item["label"] = int(self.labels[index])
        return item

    def _readable_row(self, index: int) -> list[torch.Tensor]:
        """The decoded row, or the next readable row when a file of this one fails to decode."""
        for offset in range(len(self.items)):
            candidate = (index + offset) % len(self.items)
            if self._record.failed(candidate):
                continue
            try:
                return self._load_row(candidate)
            except _READ_ERRORS as error:
                self._record.fail_at_load(candidate, error)
        raise ValueError(f"{self.source}: no row could be decoded; see dataset.skipped")


def _tuple_column(
    table: Manifest, column: str, content: str, root: Path, allow_outside_root: bool
) -> list[str]:
    if content == "text":
        return [str(v) for v in table.require_values(column, f"a text in '{column}'")]
    return _resolve_column(table, column, root, allow_outside_root)


class TripletManifestDataset(_TupleManifestDataset):
    """Explicit triplets, one per manifest row: ``dataset[i] -> {"anchor", "positive", "negative"}``.

    Each value is a text (``content="text"``) or a decoded, transformed image (``content="path"``,
    paths relative to ``root``, by default the manifest's folder). A row with an unreadable image
    is skipped and counted (``skipped``, ``num_skipped``; ``strict=True`` raises). If the manifest
    has a ``label`` column, items also carry ``"label"``, an int id; the dataset then has
    ``labels`` (``(N,)`` int64) and ``classes`` like the labelled datasets (else both are None).

    Args:
        manifest: a ``.csv``/``.tsv``/``.jsonl``/``.parquet`` file.
        content: ``"path"`` (image files) or ``"text"``.
        transform: applied to each image of the row (its own random draw per image).
        columns: the anchor, positive and negative column names.
        root, allow_outside_root, mode, check, strict, seed: as in :func:`manifest_dataset`.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "triplets.csv"
        >>> _ = path.write_text("anchor,positive,negative\\nwhat is a boot?,a boot is a shoe,a cap\\n")
        >>> TripletManifestDataset(path, content="text")[0]
        {'anchor': 'what is a boot?', 'positive': 'a boot is a shoe', 'negative': 'a cap'}
    """

    roles = ("anchor", "positive", "negative")


class PairManifestDataset(_TupleManifestDataset):
    """Retrieval pairs, one per row: ``dataset[i] -> {"query": .., "positive": ..}``.

    The positive is the item relevant to the query (e.g. the chunk that answers a question); other
    rows' positives serve as negatives in a batch. With a ``label`` column, items also carry
    ``"label"`` (an int id into ``classes``). Arguments as :class:`TripletManifestDataset`; ``columns`` names the query and
    positive columns.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "pairs.jsonl"
        >>> _ = path.write_text('{"query": "footwear for snow", "positive": "winter boots"}\\n')
        >>> PairManifestDataset(path, content="text")[0]
        {'query': 'footwear for snow', 'positive': 'winter boots'}
    """

    roles = ("query", "positive")
