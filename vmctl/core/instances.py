"""Operations on existing VMs: lifecycle, removal, listing, inspection, logs and console."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from vmctl.core import lifecycle
from vmctl.core.hostports import pick_free_port, port_free
from vmctl.core.namelock import name_lock
from vmctl.core.records import DISK, REMOVING_MARK, SERIAL_LOG, InstanceRecord, list_records
from vmctl.errors import NotFoundError
from vmctl.names import check_name


def instance_dir(app, name: str) -> Path:
    return app.settings.paths.instance_dir(check_name(name, "VM name"))


def record(app, name: str) -> InstanceRecord:
    """The instance record of `name` in this store; NotFoundError when vmctl does not know it."""
    return InstanceRecord.load(instance_dir(app, name))


def lifecycle_record(app, name: str) -> InstanceRecord | None:
    """The record a lifecycle command needs: required locally, optional on a remote daemon.

    Locally a VM without a record was not made by this store, and vmctl leaves it alone. On a
    remote libvirt (``qemu+ssh://``) the records live on the other host, so start/stop/kill/
    pause/resume act on the libvirt domain alone, as virsh would.
    """
    try:
        return record(app, name)
    except NotFoundError:
        if app.backend.is_remote() and app.backend.exists(name):
            return None
        raise


def _ensure_ssh_port(app, rec: InstanceRecord | None) -> None:
    """Hosted VMs forward SSH on a port chosen at create time; if something took it since, move."""
    if rec is None or rec.ssh_port is None or port_free(rec.ssh_port):
        return
    from vmctl.core.create import redefine_ssh_port

    taken = {r.ssh_port for r in list_records(app.settings.paths.instances) if r.ssh_port}
    redefine_ssh_port(app, rec, pick_free_port(taken | {rec.ssh_port}))


def start(app, name: str) -> bool:
    rec = lifecycle_record(app, name)
    with name_lock(app.settings.paths.locks, name):
        if app.backend.state(name).state in {"stopped", "crashed"}:
            _ensure_ssh_port(app, rec)
        return lifecycle.start(app.backend, name)


def stop(app, name: str, timeout: float) -> str:
    lifecycle_record(app, name)
    with name_lock(app.settings.paths.locks, name):
        return lifecycle.stop(app.backend, name, timeout)


def kill(app, name: str) -> None:
    lifecycle_record(app, name)
    with name_lock(app.settings.paths.locks, name):
        lifecycle.kill(app.backend, name)


def restart(app, name: str, timeout: float) -> None:
    rec = lifecycle_record(app, name)
    with name_lock(app.settings.paths.locks, name):
        lifecycle.stop(app.backend, name, timeout)
        _ensure_ssh_port(app, rec)
        lifecycle.start(app.backend, name)


def pause(app, name: str) -> None:
    lifecycle_record(app, name)
    lifecycle.pause(app.backend, name)


def resume(app, name: str) -> None:
    lifecycle_record(app, name)
    lifecycle.resume(app.backend, name)


def remove(app, name: str, *, force: bool = False) -> None:
    """Remove a VM completely: domain (with snapshot metadata), disk, seed, record, image hold.

    Order matters: the domain goes first so no QEMU holds the files; the record goes last so an
    interrupted remove can be repeated.
    """
    directory = instance_dir(app, name)
    rec = record(app, name)
    with name_lock(app.settings.paths.locks, name):
        backend = app.backend
        state = backend.state(name).state if backend.exists(name) else None
        if state in lifecycle.ACTIVE and not force:
            lifecycle.check_action("remove", name, state)
        finish_remove(app, rec, directory)


def finish_remove(app, rec: InstanceRecord, directory: Path) -> None:
    """Remove the VM of `rec` whatever state it is in (the caller holds the name lock).

    The marker comes first, so a killed rm leaves a directory that says it is being removed and
    that ``doctor --fix`` finishes with this same function."""
    from vmctl import faults

    backend = app.backend
    (directory / REMOVING_MARK).touch(mode=0o600)
    faults.point("rm.after-mark")
    if backend.exists(rec.name):
        if backend.state(rec.name).state in lifecycle.ACTIVE:
            backend.destroy(rec.name)
        backend.undefine(rec.name)
    faults.point("rm.after-undefine")
    _remove_snapshot_files(app, rec)
    app.store.release(rec.image_id, f"instance:{rec.name}")
    shutil.rmtree(directory)


def _remove_snapshot_files(app, rec: InstanceRecord) -> None:
    """Snapshot data lives inside the VM's disk (internal qcow2 snapshots) and goes with its
    directory; libvirt's metadata went with undefine. Release the snapshots' image holds."""
    from vmctl.core.snapshots import forget_all

    forget_all(app, rec)


def listing(app, *, show_all: bool) -> list[dict]:
    """Rows for ``ls``: this store's VMs with their states, from one bulk libvirt query."""
    states = app.backend.list_states()
    rows = []
    for rec in list_records(app.settings.paths.instances):
        dom = states.get(rec.name)
        state = dom.state if dom else "missing"
        if not show_all and state not in lifecycle.ACTIVE:
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
        })
    return rows


def _ports(rec: InstanceRecord) -> list[dict]:
    ports = list(rec.ports)
    if rec.ssh_port:
        ports.insert(0, {"host": "127.0.0.1", "host_port": rec.ssh_port, "guest_port": 22, "proto": "tcp"})
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


def inspect(app, name: str) -> dict:
    """Everything vmctl knows of `name`: record, libvirt state, addresses, disk usage."""
    from vmctl.core import reach

    rec = record(app, name)
    directory = instance_dir(app, name)
    state = app.backend.state(name) if app.backend.exists(name) else None
    try:
        host, port = reach.address(app, name) if state and state.state == "running" else (None, None)
    except Exception:  # noqa: BLE001 - an address we cannot learn yet is simply absent
        host, port = None, None
    return {
        "name": rec.name,
        "uuid": rec.uuid,
        "state": state.state if state else "missing",
        "image": {"ref": rec.image_ref, "id": rec.image_id},
        "mode": rec.mode,
        "uri": rec.uri,
        "profile": rec.profile,
        "cpus": rec.cpus,
        "memory_mib": rec.memory_mib,
        "network": rec.network,
        "restrict_network": rec.restrict,
        "ssh": {"address": host, "port": port, "user": rec.ssh_user, "host_key": rec.host_key},
        "ports": _ports(rec),
        "disk": {"path": str(directory / DISK), "allocated_bytes": _du(directory / DISK) if (directory / DISK).exists() else 0,
                 "directory_bytes": _du(directory)},
        "directory": str(directory),
        "serial_log": str(directory / SERIAL_LOG),
        "created": rec.created,
    }


def logs(app, name: str, *, follow: bool, tail: int | None, out) -> None:
    rec = record(app, name)
    log = instance_dir(app, rec.name) / SERIAL_LOG
    if tail is not None:
        text = lifecycle.serial_tail(log, tail)
        out.write((text + "\n").encode() if text else b"")
        out.flush()
        if not follow:
            return
    elif not follow:
        try:
            out.write(log.read_bytes())
        except FileNotFoundError:
            pass
        out.flush()
        return
    try:
        lifecycle.follow(log, out)
    except KeyboardInterrupt:
        pass


def console(app, name: str) -> None:
    """Hand the terminal to ``virsh console`` (libvirt's own console client)."""
    record(app, name)
    virsh = shutil.which("virsh")
    if virsh is None:
        raise NotFoundError("virsh is not installed (Debian package libvirt-clients)")
    raise SystemExit(subprocess.call([virsh, "-c", app.settings.uri, "console", name]))
