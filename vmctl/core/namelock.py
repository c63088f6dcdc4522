"""Per-name locks so two vmctl processes never work on the same VM name at once.

The lock file (``locks/vm-NAME.lock``) exists only while the lock is held: it is removed on
release with the inode check of :func:`vmctl.fsutil.lock_file`, so no lock file outlives the VM
(or the failed attempt) it was for.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from vmctl.errors import ConflictError
from vmctl.fsutil import lock_file, private_dirs
from vmctl.names import check_name


@contextlib.contextmanager
def name_lock(locks_dir: Path, name: str, *, wait: bool = False, what: str = "VM"):
    """Hold an exclusive lock on `name`; if another process holds it, raise ConflictError (or wait)."""
    check_name(name, f"{what} name")
    private_dirs(locks_dir)
    try:
        held = lock_file(locks_dir / f"{what.lower()}-{name}.lock", wait=wait)
        held.__enter__()
    except BlockingIOError:
        raise ConflictError(f"{what} {name} is being changed by another vmctl process") from None
    try:
        yield
    finally:
        held.__exit__(None, None, None)
