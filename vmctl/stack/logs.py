"""Following several VMs' serial logs at once, each line prefixed with the VM's short name (what
``vmctl up`` shows in the foreground, as ``docker compose up`` does).

The console is the guest's: its bytes are shown with control characters (terminal escapes)
replaced, and a line is cut at 4 KiB, so a hostile guest can neither drive the terminal nor make a
line of unbounded length."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

MAX_LINE = 4096
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def clean(line: bytes) -> str:
    return _CONTROL.sub("?", line[:MAX_LINE].decode("utf-8", "replace").rstrip("\r\n"))


def follow(files: dict[str, Path], emit: Callable[[str], None], *, from_end: bool = True,
           poll: float = 0.25, until: Callable[[], bool] = lambda: False) -> None:
    """Print each new line of `files` (label -> path) as ``label | line`` until `until()` (or
    KeyboardInterrupt, which propagates)."""

    def read(path: Path, offset: int) -> tuple[bytes, int] | None:
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, 2)
                fh.seek(offset if size >= offset else 0)
                return fh.read(1 << 20), size
        except FileNotFoundError:
            return None

    offsets = {k: (p.stat().st_size if from_end and p.exists() else 0) for k, p in files.items()}
    _follow({k: (lambda off, p=p: read(p, off)) for k, p in files.items()}, offsets, emit, poll, until)


def follow_host(place, vms: dict[str, str], emit: Callable[[str], None], *, poll: float = 1.0,
                until: Callable[[], bool] = lambda: False) -> None:
    """As `follow`, for VMs (label -> name) on a vmctl host: their serial logs read there
    (`HostPlace.read_log`, bounded), from where they end now."""

    def read(name: str, offset: int) -> tuple[bytes, int] | None:
        chunks: list[bytes] = []
        size = place.log_size(name)
        if size is None:
            return None
        place.read_log(name, chunks.append, offset if size >= offset else 0)
        return b"".join(chunks), size

    offsets = {k: place.log_size(n) or 0 for k, n in vms.items()}
    _follow({k: (lambda off, n=n: read(n, off)) for k, n in vms.items()}, offsets, emit, poll, until)


def _follow(readers: dict[str, Callable[[int], "tuple[bytes, int] | None"]], offsets: dict[str, int],
            emit: Callable[[str], None], poll: float, until: Callable[[], bool]) -> None:
    """The loop of `follow`: each reader gives (bytes from the offset, the log's size) or None."""
    width = max(len(k) for k in readers)
    partial = {k: b"" for k in readers}
    while not until():
        for label, read in readers.items():
            got = read(offsets[label])
            if got is None:
                continue
            chunk, size = got
            if size < offsets[label]:
                offsets[label] = 0   # truncated (a new boot): read from its start
            offsets[label] += len(chunk)
            data = partial[label] + chunk
            *lines, rest = data.split(b"\n")
            partial[label] = rest[-MAX_LINE:]
            for line in lines:
                emit(f"{label.ljust(width)} | {clean(line)}")
        time.sleep(poll)
