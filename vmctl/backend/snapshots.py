"""libvirt snapshot calls (and the two QMP commands libvirt 9.0 lacks), errors translated.

Each function is one libvirt operation; the policy (which kind of snapshot, when, in which state)
lives in `vmctl.core.snapshots`.

libvirt 9.0 makes an internal snapshot of a *running* domain only with its memory (``savevm``). A
crash-consistent, disk-only internal snapshot of a running domain is QEMU's
``blockdev-snapshot-internal-sync`` inside a QMP ``transaction`` (atomic over all disks, the guest
pauses only for the metadata update); `internal_disk_snapshot` issues it through libvirt's
monitor pass-through, and core then records the snapshot in libvirt with a redefine. libvirt marks
the domain "tainted: custom-monitor" in its log for that; nothing else changes.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass

import libvirt
import libvirt_qemu

from vmctl.backend.errors import libvirt_errors
from vmctl.errors import LibvirtError, NotFoundError


@dataclass(frozen=True)
class SnapshotMeta:
    name: str
    xml: str
    current: bool


def _domain(backend, name: str) -> libvirt.virDomain:
    return backend._domain(name)  # noqa: SLF001 - same package


def _snapshot(dom: libvirt.virDomain, vm: str, snap: str) -> libvirt.virDomainSnapshot:
    try:
        return dom.snapshotLookupByName(snap, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise NotFoundError(f"VM {vm} has no snapshot {snap}") from None
        raise


def list_snapshots(backend, name: str) -> list[SnapshotMeta]:
    """Every snapshot libvirt has metadata for, with its XML and whether it is current."""
    dom = _domain(backend, name)
    with libvirt_errors(f"list snapshots of {name}"):
        snaps = dom.listAllSnapshots(0)
        out = []
        for s in snaps:
            out.append(SnapshotMeta(s.getName(), s.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE),
                                    bool(s.isCurrent(0))))
    return out


def snapshot_xml(backend, name: str, snap: str) -> str:
    dom = _domain(backend, name)
    with libvirt_errors(f"snapshot {name}/{snap}"):
        return _snapshot(dom, name, snap).getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE)


def has_snapshot(backend, name: str, snap: str) -> bool:
    try:
        snapshot_xml(backend, name, snap)
        return True
    except NotFoundError:
        return False


def current(backend, name: str) -> str | None:
    dom = _domain(backend, name)
    with libvirt_errors(f"current snapshot of {name}"):
        if not dom.hasCurrentSnapshot(0):
            return None
        return dom.snapshotCurrent(0).getName()


def create(backend, name: str, xml: str) -> str:
    """Create an internal snapshot (with memory when the domain runs), validated, atomically."""
    dom = _domain(backend, name)
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_VALIDATE
    with libvirt_errors(f"snapshot {name}"):
        return dom.snapshotCreateXML(xml, flags).getName()


def switch_to_overlay(backend, name: str, xml: str) -> None:
    """An external disk-only snapshot into overlays made by the caller (``REUSE_EXT``), with no
    libvirt metadata: the running VM writes to the new files from now on and the old ones stay as
    they were at this instant (a Vmfile build cuts a layer from each)."""
    dom = _domain(backend, name)
    flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
             | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
             | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_VALIDATE)
    with libvirt_errors(f"switch {name} to a new overlay"):
        dom.snapshotCreateXML(xml, flags)


def redefine(backend, name: str, xml: str, *, current: bool = True) -> str:
    """Record metadata for a snapshot whose data already exists (``CREATE_REDEFINE``)."""
    dom = _domain(backend, name)
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_VALIDATE
    if current:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    with libvirt_errors(f"record snapshot of {name}"):
        return dom.snapshotCreateXML(xml, flags).getName()


def revert(backend, name: str, snap: str, *, then: str | None, force: bool = False) -> None:
    """Revert to `snap`; `then` is "running", "paused" or None (the state libvirt restores).

    `force` lets libvirt restart QEMU when the snapshot's definition is not ABI-compatible with
    the running one (``REVERT_FORCE``).
    """
    dom = _domain(backend, name)
    flags = {"running": libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING,
             "paused": libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED, None: 0}[then]
    if force:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE
    with libvirt_errors(f"revert {name} to {snap}"):
        dom.revertToSnapshot(_snapshot(dom, name, snap), flags)


def delete(backend, name: str, snap: str, *, metadata_only: bool = False) -> None:
    """Delete one snapshot (its children are re-parented, their data untouched)."""
    dom = _domain(backend, name)
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0
    with libvirt_errors(f"delete snapshot {name}/{snap}"):
        _snapshot(dom, name, snap).delete(flags)


# ---- QMP pass-through (live disk-only internal snapshots) -------------------------------------

def qmp(backend, name: str, command: str, arguments: dict | None = None):
    """One QMP command through libvirt's monitor pass-through; its "return", or LibvirtError."""
    dom = _domain(backend, name)
    payload = {"execute": command}
    if arguments is not None:
        payload["arguments"] = arguments
    with libvirt_errors(f"{command} on {name}"):
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(payload), 0))
    if "error" in reply:
        raise LibvirtError(f"{command} on {name}: {reply['error'].get('desc', reply['error'])}")
    return reply.get("return")


def _plain_filename(name: str | None) -> str | None:
    """The file behind a node's filename. QEMU names a format node whose backing chain was given
    node by node (libvirt's -blockdev, for a chain of two or more layers) with a ``json:{...}``
    pseudo-filename; the file is its ``file.filename``."""
    if not name or not name.startswith("json:"):
        return name
    try:
        spec = json.loads(name[5:])
    except ValueError:
        return name
    while isinstance(spec, dict) and isinstance(spec.get("file"), dict):
        spec = spec["file"]
    found = spec.get("filename") if isinstance(spec, dict) else None
    return found if isinstance(found, str) else name


def writable_qcow2_nodes(backend, name: str) -> dict[str, str]:
    """file path -> QEMU node name of every writable qcow2 format node that is a disk's top."""
    nodes = qmp(backend, name, "query-named-block-nodes", {"flat": True}) or []
    backing = {_plain_filename(n.get("backing_file")) for n in nodes if n.get("backing_file")}
    out = {}
    for n in nodes:
        path = _plain_filename(n.get("file"))
        if n.get("drv") == "qcow2" and not n.get("ro") and path not in backing:
            out[path] = n["node-name"]
    return out


def internal_disk_snapshot(backend, name: str, nodes: list[str], snap: str) -> None:
    """One QMP transaction: an internal snapshot `snap` of every node, all or none."""
    actions = [{"type": "blockdev-snapshot-internal-sync", "data": {"device": node, "name": snap}}
               for node in nodes]
    qmp(backend, name, "transaction", {"actions": actions})


def delete_internal_disk_snapshot(backend, name: str, node: str, snap: str) -> None:
    qmp(backend, name, "blockdev-snapshot-delete-internal-sync", {"device": node, "name": snap})


@contextmanager
def frozen(backend, name: str):
    """The guest's file systems frozen by its agent for the block (True), or, without an agent,
    not (False: what is taken inside is crash-consistent). Thawed on the way out, whatever happens."""
    ok = backend.fs_freeze(name)
    try:
        yield ok
    finally:
        if ok:
            backend.fs_thaw(name)
