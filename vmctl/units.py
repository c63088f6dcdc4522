"""Sizes as people type them: ``512M``, ``1G``, ``1.5GiB``, ``20g``, ``1048576`` (bytes)."""

from __future__ import annotations

import re
from fractions import Fraction

from vmctl.errors import UsageError

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
# ASCII only (re.ASCII): \d, float() and case folding would take "١٢", "１２" or a Kelvin sign
_SIZE = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,20})?)[ \t]*(?:([kmgt])(?:i?b)?|(b))?", re.IGNORECASE | re.ASCII)
MAX_SIZE = 1 << 60   # an exbibyte: anything larger is a typo, and would not fit libvirt's numbers


def parse_size(text: str, what: str = "size", *, default_unit: str = "", maximum: int = MAX_SIZE) -> int:
    """Return the number of bytes in `text` (binary units); UsageError if it is not a size.

    A bare number is taken in `default_unit` (``"m"`` for memory, as virt-install does). Fractions
    are exact (``1.5G`` is 1610612736); the result must be at least one byte and at most `maximum`.
    """
    match = _SIZE.fullmatch(str(text).strip(" \t"))
    if not match:
        raise UsageError(f"invalid {what} {str(text)[:40]!r}: use a number with an optional unit, e.g. 512M or 2G")
    # "512B" is bytes even where a bare number means MiB
    unit = (match.group(2) or match.group(3) or "").lower() or default_unit
    value = int(Fraction(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UsageError(f"invalid {what} {text!r}: must be at least one byte")
    if value > maximum:
        raise UsageError(f"invalid {what} {text!r}: more than the {maximum >> 30} GiB vmctl accepts")
    return value


def mib(n_bytes: int) -> int:
    """Bytes to MiB, rounded up."""
    return -(-n_bytes // (1024 * 1024))


def parse_rate(text: str, what: str = "rate") -> int:
    """Bytes per second in ``SIZE/s`` (``10M/s``; a bare SIZE is per second too)."""
    body = str(text).strip()
    if body.lower().endswith("/s"):
        body = body[:-2]
    return parse_size(body, what, default_unit="", maximum=1 << 50)
