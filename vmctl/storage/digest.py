"""Digests (``sha256:<64 hex>``), canonical JSON and durable file writes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable

from vmctl.errors import IntegrityError, UsageError

ALGO = "sha256"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
CHUNK = 1 << 20

ByteProgress = Callable[[int], None]


def is_digest(value: str) -> bool:
    return isinstance(value, str) and bool(_DIGEST.fullmatch(value))


def check_digest(value: str) -> str:
    if not is_digest(value):
        raise UsageError(f"invalid digest {value!r}: expected sha256:<64 lowercase hex digits>")
    return value


def hex_of(digest: str) -> str:
    return check_digest(digest).split(":", 1)[1]


def of_bytes(data: bytes) -> str:
    return f"{ALGO}:{hashlib.sha256(data).hexdigest()}"


def of_file(path: Path, progress: ByteProgress | None = None) -> tuple[str, int]:
    """Return (digest, size) of a file's bytes, reporting bytes hashed to `progress`."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
            if progress:
                progress(size)
    return f"{ALGO}:{h.hexdigest()}", size


def canonical_json(obj) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the same object always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify(data: bytes, digest: str) -> None:
    actual = of_bytes(data)
    if actual != digest:
        raise IntegrityError(f"content digest {actual} does not match {digest}")
