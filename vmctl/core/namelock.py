"""Per-name locks so two vmctl processes never work on the same VM name at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from vmctl.errors import ConflictError
from vmctl.fsutil import private_dirs
from vmctl.names import check_name


@contextlib.contextmanager
def name_lock(locks_dir: Path, name: str, *, wait: bool = False, what: str = "VM"):
    """Hold an exclusive lock on `name`; if another process holds it, raise ConflictError (or wait)."""
    check_name(name, f"{what} name")
    private_dirs(locks_dir)
    fd = os.open(locks_dir / f"{what.lower()}-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ConflictError(f"{what} {name} is being changed by another vmctl process") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock; the lock file stays (removing it would race)
