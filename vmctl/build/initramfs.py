"""A tiny ``cpio -H newc`` writer for initramfs images (pure Python, deterministic output).

Entries are written with uid/gid 0 and mtime 0 so the same inputs give the same bytes.
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    """One archive member: ``data`` for files, ``target`` for symlinks, neither for dirs/nodes."""

    path: str
    mode: int
    data: bytes = b""
    target: str = ""
    rdev: tuple[int, int] = (0, 0)


def _header(ino: int, mode: int, size: int, name: bytes, rdev: tuple[int, int]) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def _pad(n: int) -> bytes:
    return b"\x00" * (-n % 4)


def write_cpio(entries: list[Entry]) -> bytes:
    """Return a newc archive of ``entries`` (parents must precede children), with trailer."""
    out = bytearray()
    for ino, e in enumerate(entries, start=1):
        name = e.path.lstrip("/").encode()
        payload = e.target.encode() if stat.S_ISLNK(e.mode) else e.data
        out += _header(ino, e.mode, len(payload), name, e.rdev) + name + b"\x00"
        out += _pad(len(out))
        out += payload + _pad(len(payload))
    trailer = b"TRAILER!!!"
    out += _header(0, 0, 0, trailer, (0, 0)) + trailer + b"\x00"
    out += _pad(len(out))
    return bytes(out)


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | mode)


def file(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data=data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target=target)


def chardev(path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | mode, rdev=(major, minor))


def write_initramfs(entries: list[Entry], dest: Path, compress: str = "gzip") -> None:
    """Write ``entries`` as an initramfs at ``dest``; ``compress`` is ``"gzip"`` or ``"none"``."""
    data = write_cpio(entries)
    if compress == "gzip":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    elif compress != "none":
        raise ValueError(f"unknown initramfs compression {compress!r}")
    dest.write_bytes(data)
