"""Printing results: aligned tables for people, JSON for scripts, progress on terminals only."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Iterable, Sequence

import click


def emit_json(data: Any) -> None:
    """Print `data` as indented JSON (stable key order) on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print rows as a left-aligned table with a header line, like `docker ps`."""
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row)]
    fmt = "   ".join("{:<%d}" % w for w in widths)
    click.echo(fmt.format(*headers).rstrip())
    for row in rows:
        click.echo(fmt.format(*row).rstrip())


def human_size(n: int | None) -> str:
    """Format a byte count the way Docker does (decimal units)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{n}B"  # pragma: no cover


def progress_printer(enabled: bool | None = None) -> Callable[[str, float | None], None] | None:
    """Return a progress callback drawing one status line on a terminal, or None in scripts.

    The callback takes a phase label and a fraction (0..1) or None when the size is unknown.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    last = {"text": ""}

    def report(label: str, fraction: float | None) -> None:
        if fraction is None:
            text = f"{label}..."
        else:
            width = 30
            done = int(width * max(0.0, min(1.0, fraction)))
            text = f"{label} [{'=' * done}{' ' * (width - done)}] {fraction * 100:5.1f}%"
        if text != last["text"]:
            sys.stderr.write("\r\x1b[2K" + text[:120])
            sys.stderr.flush()
            last["text"] = text
        if fraction is not None and fraction >= 1.0:
            sys.stderr.write("\n")
            last["text"] = ""

    return report

