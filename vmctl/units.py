"""Sizes as people type them: ``512M``, ``1G``, ``1.5GiB``, ``20g``, ``1048576`` (bytes)."""

from __future__ import annotations

import re

from vmctl.errors import UsageError

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def parse_size(text: str, what: str = "size", *, default_unit: str = "") -> int:
    """Return the number of bytes in `text` (binary units); UsageError if it is not a size.

    A bare number is taken in `default_unit` (``"m"`` for memory, as virt-install does).
    """
    match = _SIZE.fullmatch(str(text).strip())
    if not match:
        raise UsageError(f"invalid {what} {text!r}: use a number with an optional unit, e.g. 512M or 2G")
    unit = match.group(2).lower() or default_unit
    value = float(match.group(1)) * _UNITS[unit]
    if value <= 0 or value != value:
        raise UsageError(f"invalid {what} {text!r}: must be greater than zero")
    return int(value)


def mib(n_bytes: int) -> int:
    """Bytes to MiB, rounded up."""
    return -(-n_bytes // (1024 * 1024))
