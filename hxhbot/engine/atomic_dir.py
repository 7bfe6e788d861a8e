"""Put a finished directory in another's place in one step: readers see the old one or the new one, never a mix."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # renameat2(2): swap two paths atomically (Linux 3.15+, most local file systems)


def replace_dir(staged: str | Path, target: str | Path) -> None:
    """Move the directory `staged` to `target`, replacing (and deleting) whatever directory was there."""
    staged, target = Path(staged), Path(target)
    if not target.exists():
        os.rename(staged, target)
        return
    if _exchange(staged, target):
        shutil.rmtree(staged)  # it now holds the old directory
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")  # two renames: a crash between leaves `old`
    os.rename(target, old)
    os.rename(staged, target)
    shutil.rmtree(old)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically; False where the system or file system cannot (the caller falls back)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a C library without renameat2 (glibc < 2.28, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        log.info("no atomic directory exchange here (%s): replacing %s in two renames", os.strerror(code), second)
        return False
    raise OSError(code, os.strerror(code), str(second))
