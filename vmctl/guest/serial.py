"""A guest's serial console log (``<instance>/serial.log``, which libvirt writes): the last part
of it as clean text for messages and readiness, the raw tail for ``vmctl logs``, and following it.

The guest writes this file: reads are bounded (the last 256 KiB at most), and the clean text has
terminal escapes and control characters removed before it reaches anyone's terminal.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

SERIAL_TAIL_LINES = 20
_SERIAL_READ_BYTES = 256 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _last_bytes(serial_log: Path | None, limit: int) -> bytes:
    if serial_log is None:
        return b""
    try:
        with open(serial_log, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read()
    except OSError:
        return b""


def read_serial(serial_log: Path | None, limit: int = _SERIAL_READ_BYTES) -> str:
    """The last `limit` bytes of the serial log as clean text ('' if absent or unreadable)."""
    text = _last_bytes(serial_log, limit).decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    text = _ANSI.sub("", text)
    return _CONTROL.sub("", text)


def serial_tail(serial_log: Path | None, lines: int = SERIAL_TAIL_LINES) -> str:
    """The last `lines` non-empty lines of the serial log, as clean text."""
    kept = [line.rstrip() for line in read_serial(serial_log).split("\n") if line.strip()]
    return "\n".join(kept[-lines:])


def raw_tail(serial_log: Path, lines: int) -> bytes:
    """The last `lines` lines of the log as the guest wrote them (``vmctl logs --tail``)."""
    data = _last_bytes(serial_log, _SERIAL_READ_BYTES).replace(b"\r", b"")
    return b"\n".join(data.splitlines()[-lines:]) if lines > 0 else b""


def follow(log: Path, out, *, stop_when=None, poll: float = 0.2) -> None:
    """Copy `log` to `out` as it grows (``logs -f``) until interrupted or `stop_when()` is true."""
    pos = 0
    while True:
        try:
            with open(log, "rb") as fh:
                fh.seek(pos)
                chunk = fh.read(1 << 20)
                pos = fh.tell()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            out.write(chunk)
            out.flush()
        elif stop_when is not None and stop_when():
            return
        else:
            time.sleep(poll)
