"""Files a crash or a power cut leaves whole: written beside, flushed to disk, renamed in, the folder flushed."""

from __future__ import annotations

import os
from pathlib import Path


def sync_file(path: str | Path) -> None:
    """Flush a written file's bytes to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(path: str | Path) -> None:
    """Flush a folder's entries (the files created or renamed in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, staged: Path | None = None) -> None:
    """Write `data` to `path` so that a crash leaves the old file or the new one, whole, and the new one once this
    returns: into `staged` (beside it, `.NAME.tmp` by default), flushed, renamed, the folder flushed."""
    staged = staged or path.with_name(f".{path.name}.tmp")
    with open(staged, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(staged, path)
    sync_folder(path.parent)
