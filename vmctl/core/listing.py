"""Looking at VMs: ``ls`` (one bulk libvirt query), ``inspect``, ``logs`` and ``console``."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import BinaryIO

from vmctl.core.hostplace import HostPlace
from vmctl.core.instance import MISSING, Instance, resolve
from vmctl.core.records import InstanceRecord, list_records
from vmctl.core.session import Session
from vmctl.core.states import ACTIVE
from vmctl.errors import NotFoundError
from vmctl.guest import serial


def listing(session: Session, *, show_all: bool) -> list[dict]:
    """Rows for ``ls``: this store's VMs with their states, from one bulk libvirt query."""
    states = session.backend.list_states()
    rows = []
    # records, not Instance handles: a row needs nothing else, and ls reads every one of them
    records = HostPlace(session).records() if session.host else list_records(session.paths.instances)
    for rec in records:
        dom = states.get(rec.name)
        state = dom.state if dom else MISSING
        if not show_all and state not in ACTIVE:
            continue
        rows.append({
            "name": rec.name,
            "image": rec.image_ref,
            "image_id": rec.image_id,
            "state": state,
            "cpus": rec.cpus,
            "memory_mib": rec.memory_mib,
            "ports": _ports(rec),
            "ports_text": [_port_text(p) for p in _ports(rec)],
            "created": rec.created,
            "mode": rec.mode,
            "host": rec.host,
        })
    return rows


def _ports(rec: InstanceRecord) -> list[dict]:
    ports = list(rec.ports)
    if rec.ssh_port:
        ports.insert(0, {"host": rec.ssh_host or "127.0.0.1", "host_port": rec.ssh_port, "guest_port": 22,
                         "proto": "tcp"})
    return ports


def _port_text(p: dict) -> str:
    return f"{p['host']}:{p['host_port']}->{p['guest_port']}/{p['proto']}"


def _du(path: Path) -> int:
    """Bytes allocated on disk under `path` (a file or a directory tree)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def inspect(session: Session, name: str) -> dict:
    """Everything vmctl knows of `name`: record, libvirt state, addresses, disk usage."""
    inst: Instance = resolve(session, name)
    rec = inst.record
    state = inst.state()
    host = port = None
    if state == "running":
        found = inst.address_fn()()
        if found is not None:
            host, port = found
    return {
        "name": rec.name,
        "uuid": rec.uuid,
        "state": state,
        "image": {"ref": rec.image_ref, "id": rec.image_id},
        "mode": rec.mode,
        "uri": rec.uri,
        "profile": rec.profile,
        "cpus": rec.cpus,
        "memory_mib": rec.memory_mib,
        "network": rec.network,
        "restrict_network": rec.restrict,
        "ssh": {"address": host, "port": port, "user": rec.ssh_user, "host_key": rec.host_key},
        "boot": rec.boot,
        "ports": _ports(rec),
        "volumes": rec.volumes,
        "warm": rec.warm or None,
        "limits": rec.limits,
        "max_cpus": rec.max_cpus or rec.cpus,   # each: source, target, readonly, transport (virtiofs | 9p), tag
        "host": rec.host,
        "disk": _disk(inst),
        "directory": str(inst.directory),
        "serial_log": str(inst.serial_log),
        "created": rec.created,
    }


def _disk(inst: Instance) -> dict:
    if inst.on_host:   # the host's libvirt counts it
        return {"path": str(inst.disk), "allocated_bytes": inst.place.disk_usage(inst.name)}
    return {"path": str(inst.disk), "allocated_bytes": _du(inst.disk) if inst.disk.exists() else 0,
            "directory_bytes": _du(inst.directory)}


def _host_logs(inst: Instance, *, follow: bool, tail: int | None, out: BinaryIO) -> None:
    """`logs` of a VM on a vmctl host: its serial log streamed from the host (followed by asking
    again from where the last read ended, twice a second)."""
    if tail is not None:
        chunks: list[bytes] = []
        offset = inst.place.read_log(inst.name, chunks.append)
        lines = b"".join(chunks).rstrip(b"\n").split(b"\n")
        text = b"\n".join(lines[-tail:]) if tail else b""
        out.write(text + b"\n" if text else b"")
    else:
        offset = inst.place.read_log(inst.name, out.write)
    out.flush()
    try:
        while follow:
            time.sleep(0.5)
            offset += inst.place.read_log(inst.name, out.write, offset)
            out.flush()
    except KeyboardInterrupt:
        pass


def logs(session: Session, name: str, *, follow: bool, tail: int | None, out: BinaryIO) -> None:
    """The VM's serial console log to `out`: all of it, the last `tail` lines, and/or following it."""
    inst = resolve(session, name)
    if inst.on_host:
        _host_logs(inst, follow=follow, tail=tail, out=out)
        return
    log = inst.serial_log
    if tail is not None:
        text = serial.raw_tail(log, tail)
        out.write(text + b"\n" if text else b"")
        out.flush()
        if not follow:
            return
    elif not follow:
        try:
            with open(log, "rb") as fh:
                shutil.copyfileobj(fh, out)
        except FileNotFoundError:
            pass
        out.flush()
        return
    try:
        serial.follow(log, out)
    except KeyboardInterrupt:
        pass


def console_command(session: Session, name: str) -> list[str]:
    """The command that attaches a terminal to the VM's serial console (libvirt's own client)."""
    resolve(session, name)
    virsh = shutil.which("virsh")
    if virsh is None:
        raise NotFoundError("virsh is not installed (Debian package libvirt-clients)")
    return [virsh, "-c", session.settings.uri, "console", name]
