"""The on-disk format of a vector index: a directory, a manifest, checksums, atomic replacement.

A saved index is a directory holding

* ``manifest.json``: ``{"format": "tripletkit.vector_index", "format_version": 1, ...}`` with the
  index's settings and, for each data file, its name, size and SHA-256;
* ``vectors-<token>.faiss``: the faiss index (faiss's own binary format);
* ``metadata-<token>.sqlite``: the metadata database.

Saving writes new data files under fresh names, flushes them to disk, then replaces
``manifest.json`` in one ``os.replace``; only then are the old data files deleted. A save that is
interrupted at any point leaves the previous manifest pointing at the previous, intact files.
Loading checks the manifest's format and version, then each file's size and checksum before
parsing it: a corrupt, truncated or foreign directory gives a ``ValueError`` saying what is wrong.
No pickle is involved anywhere, so loading a file cannot execute code.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from tripletkit.files import sha256_of_file

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "read_manifest",
    "verified_path",
    "write_index_directory",
]

FORMAT_NAME = "tripletkit.vector_index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_DATA_PREFIXES = ("vectors-", "metadata-", ".tmp-")
_MAX_MANIFEST_BYTES = 1 << 20


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_entry(path: Path) -> dict[str, Any]:
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_of_file(path)}


def write_index_directory(
    directory: Path,
    settings: dict[str, Any],
    write_vectors: Any,
    write_metadata: Any,
) -> None:
    """Save into ``directory`` atomically (see the module docstring).

    Args:
        directory: created if missing; if it exists it must be empty or hold a tripletkit index.
        settings: the manifest's index settings (JSON-serialisable).
        write_vectors: ``callable(path)`` writing the faiss index to a new file.
        write_metadata: ``callable(path)`` writing the SQLite database to a new file.
    """
    directory = Path(directory)
    if directory.exists():
        if not directory.is_dir():
            raise ValueError(f"{directory} exists and is not a directory")
        if any(directory.iterdir()) and not (directory / MANIFEST).is_file():
            raise ValueError(
                f"{directory} is not empty and holds no tripletkit index ({MANIFEST} missing); "
                "refusing to write into it"
            )
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    vectors = directory / f"vectors-{token}.faiss"
    metadata = directory / f"metadata-{token}.sqlite"
    manifest_tmp = directory / f".tmp-{token}-{MANIFEST}"
    written = [vectors, metadata, manifest_tmp]
    try:
        write_vectors(vectors)
        write_metadata(metadata)
        for path in (vectors, metadata):
            _fsync_file(path)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            **settings,
            "files": {"vectors": _file_entry(vectors), "metadata": _file_entry(metadata)},
        }
        manifest_tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        _fsync_file(manifest_tmp)
        os.replace(manifest_tmp, directory / MANIFEST)
        _fsync_directory(directory)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    keep = {vectors.name, metadata.name, MANIFEST}
    for path in directory.iterdir():
        if path.name not in keep and path.name.startswith(_DATA_PREFIXES):
            path.unlink(missing_ok=True)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of the index saved in ``directory``, checked for format and version."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory; a saved index is a directory")
    if not path.is_file():
        raise ValueError(f"{directory} holds no {MANIFEST}: not a saved tripletkit index")
    if path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ValueError(f"{path} is larger than any index manifest; not a tripletkit index")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the index is corrupt") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a tripletkit vector index manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version!r}; this tripletkit reads version "
            f"{FORMAT_VERSION} (upgrade tripletkit to read newer indexes)"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {"vectors", "metadata"}:
        raise ValueError(f"{path} does not list the vectors and metadata files; it is corrupt")
    return manifest


def verified_path(directory: Path, manifest: dict[str, Any], role: str) -> Path:
    """The path of data file ``role`` after checking its name, size and SHA-256."""
    entry = manifest["files"][role]
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"the manifest names an invalid {role} file {name!r}; it is corrupt")
    path = Path(directory) / name
    if not path.is_file():
        raise ValueError(f"{path} is missing; the index is incomplete")
    if path.stat().st_size != entry.get("bytes"):
        raise ValueError(
            f"{path} has {path.stat().st_size} bytes but the manifest says {entry.get('bytes')}; "
            "the file is truncated or was replaced"
        )
    if sha256_of_file(path) != entry.get("sha256"):
        raise ValueError(f"{path} fails its SHA-256 checksum; the file is corrupt")
    return path
