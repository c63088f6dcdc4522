"""The instance handle: one VM resolved once per command, below every operation.

As Lima's ``pkg/store`` resolves an ``*Instance`` that its verbs take, `resolve` finds a VM's
record, directory and files once; its libvirt state is read once, when first asked (`state`), and
again only on `refresh`. Operations take the handle and never look the VM up by name again; what
several operations need about a VM (its address, moving its SSH forward, its files) lives here so
that no operation imports another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from vmctl.core.hostplace import HostPlace
from vmctl.core.hostports import pick_free_port, port_free
from vmctl.core.records import DISK, SEED, SERIAL_LOG, InstanceRecord, list_records
from vmctl.core.session import Session
from vmctl.errors import GuestNotReady, NotFoundError, UsageError
from vmctl.names import check_name

WAITS = ("ssh", "cloud-init")   # what `run --wait` / `wait --wait` wait for
MISSING = "missing"   # vmctl has the VM's files but libvirt has no such domain


@dataclass
class Instance:
    """A VM as one command sees it. `record` is None only for a domain on a remote daemon that
    this store has no record of (lifecycle verbs act on such a domain alone, as virsh would)."""

    session: Session = field(repr=False)
    name: str
    record: InstanceRecord | None
    directory: Path
    _state: str | None = field(default=None, repr=False)

    # -- files ---------------------------------------------------------------------------------
    # A VM on a vmctl host has its files on that host (paths there, not here; vmctl.core.hostplace)
    @property
    def on_host(self) -> bool:
        return self.session.host is not None

    @property
    def place(self):
        """The host's files and records (`HostPlace`); only for a VM on a vmctl host."""
        return HostPlace(self.session)

    @property
    def disk(self) -> Path:
        return Path(self.place.disk(self.name)) if self.on_host else self.directory / DISK

    @property
    def seed(self) -> Path:
        return Path(self.place.seed(self.name)) if self.on_host else self.directory / SEED

    @property
    def serial_log(self) -> Path:
        return Path(self.place.serial_log(self.name)) if self.on_host else self.directory / SERIAL_LOG

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> str:
        """libvirt's state of the domain in vmctl's words (``missing`` without a domain), read once."""
        if self._state is None:
            try:  # one lookup: a domain undefined meanwhile is missing, not an error
                self._state = self.session.backend.state(self.name).state
            except NotFoundError:
                self._state = MISSING
        return self._state

    def refresh(self) -> str:
        self._state = None
        return self.state()

    # -- reaching the guest -------------------------------------------------------------------
    def address_fn(self) -> Callable[[], tuple[str, int] | None]:
        """A function giving where the VM's SSH server answers (None while it has no address).

        Hosted VMs: their SSH forward on 127.0.0.1; a static ``--ip``: that address. On a libvirt network or bridge: libvirt's
        DHCP leases, then the guest agent, then the host's ARP table (a bridge whose DHCP server
        libvirt does not run)."""
        rec = self._need_record("reach")
        if rec.ssh_port:
            return lambda: (rec.ssh_host or "127.0.0.1", rec.ssh_port)
        if rec.static_ip:
            return lambda: (rec.static_ip, 22)
        backend = self.session.backend

        def lookup():
            for source in ("lease", "agent", "arp"):
                addrs = backend.interface_addresses(self.name, source)
                if addrs:
                    return (addrs[0], 22)
            return None

        return lookup

    def address(self) -> tuple[str, int]:
        found = self.address_fn()()
        if found is None:
            raise GuestNotReady(f"{self.name} has no address yet (no DHCP lease, no guest agent answer)")
        return found

    def wait_for_ssh(self, timeout: float, until: str = "ssh") -> tuple[str, int]:
        """Block until the guest answers SSH with its pinned key and takes vmctl's key
        (GuestNotReady names the step that failed, and what the guest said); with `until`
        ``cloud-init``, then until the guest's cloud-init has finished without errors. Progress
        shows the step waited for."""
        from vmctl.guest.cloudinit import wait_cloud_init  # lazy: paramiko, only when waiting
        from vmctl.guest.keys import ensure_client_key  # lazy: paramiko, only when waiting
        from vmctl.guest.ready import wait_ready  # lazy: paramiko, only when waiting
        from vmctl.guest.ssh import GuestSession  # lazy: paramiko, only when waiting

        if until not in WAITS:
            raise UsageError(f"invalid --wait {until!r}: {' or '.join(WAITS)}")
        rec = self._need_record("wait for")
        say = self.session.progress
        deadline = time.monotonic() + timeout
        key = ensure_client_key(self.session.paths.keys)

        def step(name: str, detail: str) -> None:
            say(f"{self.name}: waiting for SSH ({name}{': ' + detail if detail else ''})", None)

        # the serial log of a VM on a host is on that host: not read for the diagnosis
        host, port = wait_ready(self.address_fn(), user=rec.ssh_user, client_key=key, host_key_line=rec.host_key,
                                timeout=timeout, serial_log=None if self.on_host else self.serial_log,
                                progress=step, dial=self.session.dial)
        if until == "cloud-init":
            say(f"{self.name}: waiting for cloud-init to finish", None)
            with GuestSession(host, port, user=rec.ssh_user, client_key=key, host_key_line=rec.host_key,
                              dial=self.session.dial) as guest:
                wait_cloud_init(guest, self.name, deadline - time.monotonic())
        return host, port

    # -- changes of the record ------------------------------------------------------------------
    def ensure_ssh_port(self) -> None:
        """Hosted VMs forward SSH on a port chosen at create time; if something took it since
        (while the VM was stopped), move the forward to a free port before starting."""

        rec = self.record
        # a host's ports cannot be probed from here: QEMU there says so if one is taken
        if rec is None or rec.ssh_port is None or self.on_host or port_free(rec.ssh_port):
            return
        taken = {r.ssh_port for r in list_records(self.session.paths.instances) if r.ssh_port}
        self.move_ssh_port(pick_free_port(taken | {rec.ssh_port}))

    def move_ssh_port(self, port: int) -> None:
        """Move a stopped hosted VM's SSH forward to `port` (definition and record)."""
        # lazy: the XML model (lxml and the plan) is not loaded by `ls`, which builds instances
        from vmctl.core.plan.edits import move_ssh_port

        rec = self._need_record("move the SSH forward of")
        backend = self.session.backend
        backend.define(move_ssh_port(backend.xml(self.name, inactive=True), rec.ssh_port, port))
        self.record = replace(rec, ssh_port=port)
        self.save_record()

    def save_record(self, *, live: bool = False) -> None:
        """Keep `record`: in the instance directory, or -- on a vmctl host -- in the domain's
        metadata (the running domain's too when `live`)."""
        if self.on_host:
            self.place.save_record(self.record, live=live)
        else:
            self.record.save(self.directory)

    def _need_record(self, what: str) -> InstanceRecord:
        if self.record is None:
            raise NotFoundError(f"cannot {what} {self.name}: this host has no vmctl record of it "
                                "(it lives on a remote libvirt host)")
        return self.record


def instance_dir(session: Session, name: str) -> Path:
    return session.paths.instance_dir(check_name(name, "VM name"))


def resolve(session: Session, name: str, *, remote_ok: bool = False) -> Instance:
    """The handle of VM `name`; NotFoundError when this store does not know it.

    With `remote_ok`, a domain on a remote daemon (``qemu+ssh://``) that has no local record
    resolves to a record-less handle (the records live on the other host)."""
    directory = instance_dir(session, name)
    if session.host is not None:
        place = HostPlace(session)
        return Instance(session, name, place.record(name), Path(place.instances_dir))
    try:
        rec = InstanceRecord.load(directory)
    except NotFoundError:
        backend = session.backend
        if remote_ok and backend.is_remote() and backend.exists(name):
            return Instance(session, name, None, directory)
        raise
    return Instance(session, name, rec, directory)


def all_instances(session: Session) -> list[Instance]:
    """Every VM of this store with a complete record (half-made ones are doctor's), by name."""
    if session.host is not None:
        place = HostPlace(session)
        return [Instance(session, r.name, r, Path(place.instances_dir)) for r in place.records()]
    paths = session.paths
    return [Instance(session, r.name, r, paths.instance_dir(r.name)) for r in list_records(paths.instances)]
