"""One writer at a time per index directory: an exclusive, non-blocking `flock` on `INDEX_DIR/.lock`."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hxhbot.engine.index import GalleryIndexError

LOCK_FILE = ".lock"


class IndexBusyError(GalleryIndexError):
    """Another process (or build) is writing the same index directory."""


@contextmanager
def index_writer(index_dir: str | Path) -> Iterator[None]:
    """Hold the index directory's writer lock for the block, or raise `IndexBusyError` naming the holder."""
    directory = Path(index_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:  # a file where the folder should be, no permission, a read-only disk
        raise GalleryIndexError(
            f"The index folder {directory} cannot be written ({error.strerror}): "
            "set INDEX_DIR to a folder hxhbot may create and write."
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise IndexBusyError(
                f"Another index build is running (pid {holder}) in {directory}: "
                "wait for it to finish; the current index stays as it is."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock, also when the process dies
