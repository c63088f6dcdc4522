"""The object every command receives (``ctx.obj``): the core session, and how to print.

The CLI builds the `Session` core works with — settings, progress on a terminal, warnings on
stderr — and hands it to core; core never imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from vmctl.core.session import Session
from vmctl.progress import ByteProgress, FractionProgress, bytes_to_fraction


@dataclass
class App:
    """Per-invocation state built by the top-level group."""

    session: Session
    json: bool = False
    debug: bool = False
    quiet: bool = False
    draw: FractionProgress | None = None   # the terminal's progress line; None for --json, -q, scripts

    def progress(self, as_json: bool = False) -> FractionProgress | None:
        """The progress line for a command (None when its output is JSON)."""
        return None if as_json else self.draw

    def byte_progress(self, as_json: bool = False) -> ByteProgress | None:
        """The same for work that counts bytes (phase, done, total)."""
        return bytes_to_fraction(self.progress(as_json))

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
        self.session.close()


pass_app = click.make_pass_decorator(App)
