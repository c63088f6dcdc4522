"""The typed session every core operation takes: settings, libvirt, the image store, and sinks.

The CLI (or a test, or a benchmark) builds one `Session` per command and hands it to core; core
never reaches back into the CLI, never prints and never exits. What it has to say while working
goes to the session's sinks: `progress` for long work (a phase and a fraction, or None when the
size is unknown) and `warn` for one-line warnings. Both default to silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from vmctl.config import Settings

ProgressSink = Callable[[str, "float | None"], None]
WarnSink = Callable[[str], None]


def _silent(*_args) -> None:
    return None


@dataclass
class Session:
    """One command's view of the host; the connection and the store open on first use."""
    settings: Settings
    progress: ProgressSink = field(default=_silent, repr=False)
    warn: WarnSink = field(default=_silent, repr=False)
    _backend: object | None = field(default=None, repr=False)
    _store: object | None = field(default=None, repr=False)

    @property
    def backend(self):
        """The libvirt connection (`vmctl.backend.Backend`), opened on first use."""
        if self._backend is None:
            # imported here: commands that never touch libvirt should not pay for loading it
            from vmctl.backend import open_backend  # lazy: see the comment above

            self._backend = open_backend(self.settings.uri)
        return self._backend

    @property
    def store(self):
        """The image store under the data root (`vmctl.storage.ImageStore`), opened on first use."""
        if self._store is None:
            from vmctl.perms import qemu_user  # lazy: see the comment above
            from vmctl.storage.store import ImageStore  # lazy: see the comment above

            self._store = ImageStore(self.settings.root, qemu_user(self.settings.uri))
        return self._store

    @property
    def paths(self):
        return self.settings.paths

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
