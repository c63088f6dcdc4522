"""The store lock and temporary work directories.

- One lock file (``images/lock``) taken with ``flock(LOCK_EX)`` around every change of the index,
  holds and the set of published files. The kernel drops a flock when its holder dies, so a killed
  vmctl never leaves the store locked. Readers take no lock: the index is replaced atomically.
- Long work (converting, hashing, downloading) happens *outside* the lock in a work directory
  ``tmp/<random>/`` whose ``.lock`` file its owner keeps flocked. A work directory whose lock can be
  taken belongs to a dead process and is garbage (:func:`sweep_stale`). Work directories are created
  while holding the store lock, so the sweeper (which also holds it) never sees one half-made.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from pathlib import Path


class StoreLock:
    """A re-entrant (per object) exclusive flock on one file."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._depth = 0
        self._thread_lock = threading.RLock()

    def __enter__(self) -> "StoreLock":
        self._thread_lock.acquire()
        try:
            if self._depth == 0:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                fd, self._fd = self._fd, None
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            self._thread_lock.release()

    @property
    def held(self) -> bool:
        return self._depth > 0


class WorkDir:
    """A private temporary directory under ``tmp/``, alive while its owner holds ``.lock``.

    Files finished in a work dir are renamed into the store (same file system); whatever is left
    is removed by :meth:`close` or, after a crash, by :func:`sweep_stale`. A work dir can also carry
    *pins*: digests of published blobs that a multi-step operation (a registry pull) still needs
    before its manifest is written; prune keeps them while the work dir is alive.
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    @classmethod
    def create(cls, tmp_root: Path, store_lock: StoreLock, purpose: str = "work") -> "WorkDir":
        with store_lock:
            path = tmp_root / f"{purpose}-{os.getpid()}-{os.urandom(6).hex()}"
            path.mkdir(mode=0o700)
            fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd)

    def file(self, name: str) -> Path:
        return self.path / name

    def pin(self, digest: str) -> None:
        with open(self.path / ".pins", "a") as fh:
            fh.write(digest + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        if self._fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "WorkDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_alive(path: Path) -> bool:
    try:
        fd = os.open(path / ".lock", os.O_RDWR | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def live_pins(tmp_root: Path) -> set[str]:
    """Digests pinned by live work dirs."""
    pins: set[str] = set()
    for entry in _entries(tmp_root):
        if entry.is_dir() and _is_alive(entry):
            try:
                pins.update(ln.strip() for ln in (entry / ".pins").read_text().splitlines() if ln.strip())
            except FileNotFoundError:
                pass
    return pins


def _entries(tmp_root: Path) -> list[Path]:
    try:
        return list(tmp_root.iterdir())
    except FileNotFoundError:
        return []


def dead_work_dirs(tmp_root: Path) -> list[Path]:
    """Work dirs (and stray files) under `tmp_root` whose owner is gone."""
    return sorted(e for e in _entries(tmp_root)
                  if not (e.is_dir() and not e.is_symlink()) or not _is_alive(e))


def sweep_stale(tmp_root: Path) -> tuple[int, int]:
    """Remove work dirs of dead processes (call with the store lock held); return (count, bytes)."""
    count = freed = 0
    for entry in _entries(tmp_root):
        if entry.is_dir() and not entry.is_symlink():
            if _is_alive(entry):
                continue
            freed += tree_bytes(entry)
            shutil.rmtree(entry, ignore_errors=True)
        else:
            freed += _allocated(entry)
            entry.unlink(missing_ok=True)
        count += 1
    return count, freed


def _allocated(path: Path) -> int:
    try:
        return path.lstat().st_blocks * 512
    except FileNotFoundError:
        return 0


def tree_bytes(path: Path) -> int:
    """Bytes allocated on disk under `path` (hard links counted once, symlinks not followed)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total
