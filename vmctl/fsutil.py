"""Durable file writes shared by every room: fsync helpers, all-or-nothing replacement, lock files
that do not outlive their lock, and private directory trees."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename is durable only after this)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A binary file to stream into that replaces `path` only when the block ends without error.

    The data goes to a temporary sibling (created `mode` from its first byte, never briefly
    world-readable), is fsynced and renamed over `path`; on any error the sibling is removed and
    `path` is untouched. Readers see either the old content or the complete new one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write `data` to `path` all or nothing (see `atomic_file`)."""
    with atomic_file(path, mode=mode) as fh:
        fh.write(data)


@contextmanager
def lock_file(path: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created 0600), and remove the file when done.

    Removing a lock file is safe with the usual check: after locking, the holder makes sure the
    name still points at the inode it locked (else someone removed it meanwhile: try again). So no
    lock file outlives what it guarded. Without `wait`, a held lock raises BlockingIOError.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)


def private_dirs(path: Path) -> Path:
    """Make directory `path` and every missing parent 0700 (``mkdir -p`` with a private mode).

    ``Path.mkdir(parents=True, mode=...)`` gives the mode only to the last component; parents get
    0777 minus the umask (usually 0755, world-readable). Existing directories are left as they are.
    """
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(p, 0o700)  # the umask may have taken bits away; never more than 0700
    return path
