"""Reaching a VM's guest: its address, readiness, exec, interactive ssh and copies.

The address depends on the network: hosted VMs are reached on their SSH forward on 127.0.0.1;
VMs on a libvirt network by their DHCP lease (then the guest agent). Every connection pins the host
key vmctl generated for the guest at create time.
"""

from __future__ import annotations

import sys

from vmctl.core.instances import instance_dir, record
from vmctl.core.records import SERIAL_LOG, InstanceRecord
from vmctl.errors import ConflictError, GuestNotReady


def _address_fn(app, rec: InstanceRecord):
    if rec.ssh_port:
        return lambda: ("127.0.0.1", rec.ssh_port)

    def lookup():
        # libvirt's DHCP leases (its own networks), then the guest agent, then the host's ARP
        # table (a bridge whose DHCP server libvirt does not run).
        for source in ("lease", "agent", "arp"):
            addrs = app.backend.interface_addresses(rec.name, source)
            if addrs:
                return (addrs[0], 22)
        return None

    return lookup


def _require_running(app, name: str) -> None:
    state = app.backend.state(name).state
    if state != "running":
        raise ConflictError(f"{name} is {state}: start it first ('vmctl start {name}')")


def address(app, name: str) -> tuple[str, int]:
    """Where the VM's SSH server is reached; GuestNotReady when it has no address yet."""
    rec = record(app, name)
    found = _address_fn(app, rec)()
    if found is None:
        raise GuestNotReady(f"{name} has no address yet (no DHCP lease, no guest agent answer)")
    return found


def wait(app, name: str, timeout: float, progress=None) -> tuple[str, int]:
    """Block until SSH answers with the pinned key and accepts vmctl's key (or raise, naming the step)."""
    from vmctl.guest.keys import ensure_client_key
    from vmctl.guest.ready import wait_ready

    rec = record(app, name)
    _require_running(app, name)
    return wait_ready(
        _address_fn(app, rec), user=rec.ssh_user,
        client_key=ensure_client_key(app.settings.paths.keys), host_key_line=rec.host_key,
        timeout=timeout, serial_log=instance_dir(app, name) / SERIAL_LOG, progress=progress,
    )


def session(app, name: str):
    """An unopened `GuestSession` to the VM (use it as a context manager)."""
    from vmctl.guest.keys import ensure_client_key
    from vmctl.guest.ssh import GuestSession

    rec = record(app, name)
    _require_running(app, name)
    host, port = address(app, name)
    return GuestSession(host, port, user=rec.ssh_user, client_key=ensure_client_key(app.settings.paths.keys),
                        host_key_line=rec.host_key)


def exec_(app, name: str, argv: list[str]) -> int:
    """Run `argv` in the guest, streaming stdout/stderr; return its exit status."""
    with session(app, name) as guest:
        return guest.run(argv, stdin=None, stdout=sys.stdout.buffer, stderr=sys.stderr.buffer)


def ssh(app, name: str, argv: list[str]) -> int:
    """Interactive shell (no argv) or a command with a terminal; return the exit status."""
    with session(app, name) as guest:
        if argv or not sys.stdin.isatty():
            if argv:
                return guest.run(argv, stdin=sys.stdin.buffer if not sys.stdin.isatty() else None,
                                 stdout=sys.stdout.buffer, stderr=sys.stderr.buffer)
        return guest.interactive(argv or None)


def ssh_command(app, name: str) -> list[str]:
    """An OpenSSH command line that reaches the VM with the same pinned key and identity."""
    from vmctl.guest.keys import ensure_client_key
    from vmctl.guest.openssh import ssh_command_line

    rec = record(app, name)
    host, port = address(app, name)
    known = instance_dir(app, name) / "known_hosts"
    return ssh_command_line(host, port, rec.ssh_user, ensure_client_key(app.settings.paths.keys).path,
                            rec.host_key, known_hosts=known)


def copy(app, src: str, dst: str):
    """``vmctl cp``: exactly one of `src`/`dst` is ``NAME:PATH``. A download returns its
    `CopyReport` (what the guest sent that was not written, and why); an upload returns None."""
    from vmctl.guest.cp import parse_cp_args

    plan = parse_cp_args(src, dst)
    with session(app, plan.name) as guest:
        if plan.upload:
            guest.put(plan.local, plan.remote)
            return None
        guest.get(plan.remote, plan.local)
        return guest.last_report
