"""Progress callbacks: the two shapes vmctl uses and the adapter between them.

Long work reports either ``(label, fraction or None)`` (builds, the terminal progress line) or
``(phase, bytes done, bytes total)`` (the store, the registry). This module imports nothing heavy,
so every layer may use it.
"""

from __future__ import annotations

from typing import Callable

FractionProgress = Callable[[str, "float | None"], None]
ByteProgress = Callable[[str, int, int], None]


def bytes_to_fraction(progress: FractionProgress | None) -> ByteProgress | None:
    """Adapt a ``(label, fraction)`` callback to ``(phase, done, total)``; None stays None."""
    if progress is None:
        return None
    return lambda phase, done, total: progress(phase, done / total if total else None)
