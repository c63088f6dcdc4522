"""Progress of long work on stderr: rich's live progress on a terminal, plain lines otherwise.

Core reports in two shapes (vmctl.progress): ``(label, fraction or None)`` for phases and
``(phase, bytes done, bytes total)`` for transfers. On a terminal each transfer phase (one per
layer: ``download sha256:…``, ``upload …``) gets its own row with a bar, size, speed and time
left, kept when finished, as ``docker pull`` shows layers; a phase without a size is one status row
with a spinner. Not on a terminal, every finished transfer is one plain line (size, time, speed)
and phases print nothing. ``--quiet`` and ``--json`` show none of it (the CLI then passes None).

rich is used rather than a hand-drawn ``\\r`` line: it redraws several rows, computes speed and
time left, and degrades cleanly on narrow or dumb terminals.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class ProgressView:
    """The progress callbacks of one command; `close` ends the live display."""

    def __init__(self, stream: TextIO | None = None, terminal: bool | None = None):
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self._live = None                       # rich.progress.Progress, made at the first report
        self._tasks: dict[str, int] = {}
        self._status: int | None = None          # the one row of size-less phases
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()

    # -- the two callback shapes ---------------------------------------------------------------
    def phase(self, label: str, fraction: float | None) -> None:
        """``(label, fraction)``: a phase of known share done, or a status (None)."""
        if not self.terminal:
            return
        live = self._progress()
        if fraction is None:
            if self._status is None:
                self._status = live.add_task(label, total=None)
            else:
                live.update(self._status, description=label)
            return
        task = self._task(label, 1.0)
        live.update(task, completed=max(0.0, min(1.0, fraction)))

    def transfer(self, phase: str, done: int, total: int | None) -> None:
        """``(phase, done, total)`` in bytes (`total` None or 0 when not known)."""
        total = total or 0
        if 0 < total <= 1:   # a step marker (0 of 1, 1 of 1), not a byte count
            self.phase(phase, done / total)
            return
        start = self._started.setdefault(phase, time.monotonic())
        if not self.terminal:
            if total and done >= total and phase not in self._finished:
                self._finished.add(phase)
                secs = max(time.monotonic() - start, 1e-3)
                self.stream.write(f"{phase}: {_human(total)} in {secs:.1f} s ({_human(total / secs)}/s)\n")
                self.stream.flush()
            return
        task = self._task(phase, float(total or 0) or None, byte_row=True)
        self._progress().update(task, completed=done, total=total or None)

    def say(self, line: str) -> None:
        """Print one line on stderr above the live rows (or plainly)."""
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._live is not None:
            if self._status is not None:
                self._live.remove_task(self._status)
                self._status = None
            self._live.stop()
            self._live = None

    # -- rich --------------------------------------------------------------------------------
    def _progress(self):
        if self._live is None:
            # lazy: rich loads only when a terminal shows progress (scripts and --json never pay for it)
            from rich.console import Console
            from rich.progress import (  # lazy: as above
                BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeRemainingColumn)
            from rich.text import Text  # lazy: as above

            class Figures(ProgressColumn):
                """Bytes done/total and speed on a transfer row, the percentage on a phase row."""

                def render(self, task):
                    if task.fields.get("bytes") and task.total:
                        speed = f"  {_human(task.speed)}/s" if task.speed else ""
                        return Text(f"{_human(task.completed)}/{_human(task.total)}{speed}")
                    return Text(f"{task.percentage:>3.0f}%" if task.total else "")

            console = Console(file=self.stream, force_terminal=True)
            self._live = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  Figures(), TimeRemainingColumn(), console=console, transient=False)
            self._live.start()
        return self._live

    def _task(self, label: str, total: float | None, *, byte_row: bool = False) -> int:
        if label not in self._tasks:
            self._tasks[label] = self._progress().add_task(label, total=total, bytes=byte_row)
        return self._tasks[label]
