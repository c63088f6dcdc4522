"""The object every command receives: settings, output mode and lazily opened resources."""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from vmctl.config import Settings


@dataclass
class App:
    """Per-invocation state built by the top-level group (``ctx.obj``)."""

    settings: Settings
    json: bool = False
    debug: bool = False
    quiet: bool = False
    _backend: object | None = field(default=None, repr=False)
    _store: object | None = field(default=None, repr=False)

    @property
    def backend(self):
        """The libvirt connection, opened on first use (commands that need none never connect)."""
        if self._backend is None:
            from vmctl.backend import open_backend

            self._backend = open_backend(self.settings.uri)
        return self._backend

    @property
    def store(self):
        """The image store under the data root, opened on first use."""
        if self._store is None:
            from vmctl.core.store_access import open_store

            self._store = open_store(self.settings)
        return self._store

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


pass_app = click.make_pass_decorator(App)
