"""One resumable, hashed, bounded HTTP download, shared by the registry client and the catalog.

`resume_into` completes a partial file from a server with ``Range`` requests: it hashes what is
already there, asks for the rest, starts over when the server ignores the range, retries
transient failures a bounded number of times (a body cut short is one), refuses more bytes than
`size` allows, and stops with ResourceError when the file system gets within `reserve` bytes of
full (for a download whose checksum is only known at its end, the free space is the bound). It
never follows redirects or decides about credentials itself: `get(offset)` does that (the
registry transport, the catalog's own session).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vmctl.errors import IntegrityError, RegistryError, ResourceError

CHUNK = 1 << 20
SPACE_CHECK = 64 * CHUNK


class Again(Exception):
    """A transient failure inside the loop: retried (with backoff) up to the limit."""


@dataclass
class Result:
    reused: bool                 # bytes of an earlier attempt were kept
    hexdigest: str               # of the whole file
    size: int
    headers: dict = field(default_factory=dict)   # of the last response (Last-Modified, ...)


def resume_into(part: Path, get: Callable[[int], object], *, algorithm: str = "sha256",
                size: int | None = None, reserve: int = 64 << 20, retries: int = 4,
                backoff: Callable[[int], float] = lambda n: min(0.5 * 2 ** n, 30.0),
                transient: tuple = (), fail: Callable[[object], Exception],
                on_bytes: Callable[[int], None] | None = None,
                progress: Callable[[int, int | None], None] | None = None,
                what: str = "the download", sleep: Callable[[float], None] = time.sleep,
                retry_status: bool = True) -> Result:
    """Complete `part` (see the module doc). `get(offset)` returns a streamed response (a
    ``Range`` request from `offset` when it is not 0); `fail(resp)` turns a response that is
    neither 200, 206 nor a 416 after some bytes into the error to raise. With `retry_status`, 5xx
    and 429 answers are retried here (leave it off when `get` already retries them)."""
    h = hashlib.new(algorithm)
    done = 0
    if part.exists():
        if size is not None and part.stat().st_size > size:
            part.unlink()
        else:
            with open(part, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
                    done += len(chunk)
    reused = done > 0
    if progress and done:
        progress(done, size)
    failures = 0
    headers: dict = {}
    while size is None or done < size:
        try:
            resp = get(done)
            headers = dict(resp.headers)
            if resp.status_code == 416 and done:
                resp.close()
                break  # we already have everything the server has: the caller verifies it
            if retry_status and (resp.status_code >= 500 or resp.status_code == 429):
                resp.close()
                raise Again(f"HTTP {resp.status_code}")
            if resp.status_code not in (200, 206):
                raise fail(resp)
            if resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
                resp.close()
                raise IntegrityError(f"{what} came compressed though vmctl asked for none")
            if resp.status_code == 206:
                m = re.match(r"bytes (\d{1,19})-", resp.headers.get("Content-Range", ""), re.ASCII)
                if not m or int(m.group(1)) != done:
                    resp.close()
                    raise IntegrityError(f"{what}: the server sent a Content-Range that does not resume it")
            elif done:  # the server ignored Range: start over
                h, done = hashlib.new(algorithm), 0
                with open(part, "wb"):
                    pass
            length = resp.headers.get("Content-Length", "").strip()
            expect = done + int(length) if length.isascii() and length.isdigit() and len(length) <= 19 else None
            with open(part, "ab") as fh:
                try:
                    for chunk in resp.raw.stream(CHUNK, decode_content=False):
                        fh.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
                        if size is not None and done > size:
                            raise IntegrityError(f"{what} is larger than the {size} bytes announced")
                        if done % SPACE_CHECK < len(chunk) and shutil.disk_usage(part.parent).free < reserve:
                            raise ResourceError(f"{what} filled the disk under {part.parent} to its last "
                                                f"{reserve >> 20} MiB; nothing was kept")
                        if progress:
                            progress(done, size if size is not None else expect)
                finally:
                    fh.flush()
                    os.fsync(fh.fileno())
                    resp.close()
            if size is not None and done < size:
                raise Again(f"it ended after {done} of {size} bytes")
            if size is None and expect is not None and done < expect:
                raise Again(f"it ended after {done} of {expect} bytes")
            break
        except (Again, *transient) as exc:
            failures += 1
            if failures > retries:
                raise _interrupted(what, exc) from None
            sleep(backoff(failures - 1))
    return Result(reused, h.hexdigest(), done, headers)


def _interrupted(what: str, exc: BaseException) -> RegistryError:
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return RegistryError(f"{what} was interrupted ({reason}); run the same command again to resume")
