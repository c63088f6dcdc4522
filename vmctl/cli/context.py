"""The object every command receives (``ctx.obj``): the core session, and how to print.

The CLI builds the `Session` core works with — settings, progress on a terminal, warnings on
stderr — and hands it to core; core never imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from vmctl.cli.progress_view import ProgressView
from vmctl.core.session import Session
from vmctl.progress import ByteProgress, FractionProgress


@dataclass
class App:
    """Per-invocation state built by the top-level group."""

    session: Session
    json: bool = False
    debug: bool = False
    quiet: bool = False
    view: ProgressView | None = None       # progress on stderr; None for --json and -q

    def progress(self, as_json: bool = False) -> FractionProgress | None:
        """The progress of a command's phases (None when its output is JSON)."""
        return None if as_json or self.view is None else self.view.phase

    def byte_progress(self, as_json: bool = False) -> ByteProgress | None:
        """The progress of work that counts bytes (phase, done, total): per-transfer rows."""
        return None if as_json or self.view is None else self.view.transfer

    def say(self, line: str) -> None:
        """One line on stderr, above any live progress rows."""
        if self.view is not None:
            self.view.say(line)
        else:
            click.echo(line, err=True)

    def end_progress(self) -> None:
        """Finish the live rows (before an error line or the command's end)."""
        if self.view is not None:
            self.view.close()

    @property
    def settings(self):
        return self.session.settings

    @property
    def store(self):
        return self.session.store

    @property
    def backend(self):
        return self.session.backend

    def close(self) -> None:
        self.end_progress()
        self.session.close()


pass_app = click.make_pass_decorator(App)
