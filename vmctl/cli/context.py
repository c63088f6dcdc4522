"""The object every command receives (``ctx.obj``): the core session, and how to print.

The CLI builds the `Session` core works with — settings, progress on a terminal, warnings on
stderr — and hands it to core; core never imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from vmctl.core.session import Session


@dataclass
class App:
    """Per-invocation state built by the top-level group."""

    session: Session
    json: bool = False
    debug: bool = False
    quiet: bool = False

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
