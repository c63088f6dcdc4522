"""The typed session every core operation takes: settings, libvirt, the image store, and sinks.

The CLI (or a test, or a benchmark) builds one `Session` per command and hands it to core; core
never reaches back into the CLI, never prints and never exits. What it has to say while working
goes to the session's sinks: `progress` for long work (a phase and a fraction, or None when the
size is unknown) and `warn` for one-line warnings. Both default to silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from vmctl.config import DEFAULT_PROFILE, Settings
from vmctl.hosts import Host

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
    # the vmctl host this command works on (`vmctl --host`), None for this machine's own store:
    # then `settings.uri`/`mode` are the host's, its VMs' files and records live there
    # (vmctl.core.hostplace), and the local store is only where images come from
    host: Host | None = None
    # this machine's own settings (what for_host(None) goes back to)
    local_settings: Settings | None = field(default=None, repr=False)
    _backend: object | None = field(default=None, repr=False)
    _store: object | None = field(default=None, repr=False)
    _jump: object | None = field(default=None, repr=False)

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

    @property
    def locks(self):
        """Where this command's name locks go: per host for VMs on a vmctl host (they serialise
        this machine's vmctl processes; the host's libvirt refuses a second domain of a name)."""
        base = self.settings.paths.locks
        return base if self.host is None else base / "hosts" / self.host.name

    @property
    def stacks(self):
        """Where this command's stack states go: per host for stacks on a vmctl host (a stack's
        VMs and networks are that host's; the file is this machine's, as its lock is)."""
        base = self.settings.paths.stacks
        return base if self.host is None else base / "hosts" / self.host.name

    def for_host(self, host: Host | None) -> "Session":
        """A session like this one, on `host` (None: this machine's store); nothing is opened."""
        settings = self.local_settings or self.settings
        local = settings
        if host is not None:
            profile = settings.profile
            if dict(settings.sources).get("profile") == "default":
                profile = DEFAULT_PROFILE[host.mode]
            settings = replace(settings, uri=host.uri, mode=host.mode, profile=profile)
        return Session(settings=settings, progress=self.progress, warn=self.warn, host=host,
                       local_settings=local, _store=self._store)

    @property
    def dial(self):
        """How this command connects to its guests: None (directly), or -- on a host with a jump
        (`Host.jump`) -- the `dial` of one SSH session to that host, opened on first use."""
        if self.host is None or self.host.jump is None:
            return None
        if self._jump is None:
            from vmctl.guest.jump import Jump  # lazy: paramiko, only when a guest is reached

            self._jump = Jump(self.host.jump)
        return self._jump.dial

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
