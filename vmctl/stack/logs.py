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
    width = max(len(k) for k in files)
    offsets = {k: (p.stat().st_size if from_end and p.exists() else 0) for k, p in files.items()}
    partial = {k: b"" for k in files}
    while not until():
        for label, path in files.items():
            try:
                with open(path, "rb") as fh:
                    size = fh.seek(0, 2)
                    if size < offsets[label]:
                        offsets[label] = 0   # truncated (a new boot)
                    fh.seek(offsets[label])
                    chunk = fh.read(1 << 20)
            except FileNotFoundError:
                continue
            offsets[label] += len(chunk)
            data = partial[label] + chunk
            *lines, rest = data.split(b"\n")
            partial[label] = rest[-MAX_LINE:]
            for line in lines:
                emit(f"{label.ljust(width)} | {clean(line)}")
        time.sleep(poll)
