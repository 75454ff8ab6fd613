"""Durable file writes: a file is either the old version or the complete new one, never torn.

Used by every module that writes something a user must not lose (models, checkpoints, indexes,
reports): the content goes to a temporary file in the same directory, which is flushed and fsync'ed
and then renamed over the target (``os.replace``, atomic on POSIX); the directory is fsync'ed so the
rename itself survives a power cut.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write_text", "fsync_directory", "fsync_file", "sha256_of_file", "write_atomic"]


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path``'s data to disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make renames inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Create ``path`` atomically: ``write(temporary_path)`` fills a temporary file in the same
    directory, which is fsynced and renamed over ``path``; the directory is then fsynced.

    Readers see the old file or the complete new one, never a partial file; if ``write`` raises,
    ``path`` is untouched and the temporary file is removed.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "hello.txt"
    >>> write_atomic(target, lambda tmp: tmp.write_text("hi"))
    >>> target.read_text()
    'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    os.close(descriptor)
    temporary_path = Path(temporary)
    try:
        write(temporary_path)
        fsync_file(temporary_path)
        os.replace(temporary_path, path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda temporary: temporary.write_text(text))


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB blocks (checksums of saved
    weights and index files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
