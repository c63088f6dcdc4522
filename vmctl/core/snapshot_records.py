"""What a VM's snapshots are, below the operations that change them (snapshot, commit, rm, doctor).

A snapshot exists for vmctl when libvirt has its metadata *and* the qcow2 snapshot table of the
VM's disk has its data, and vmctl's own record of it (``snapshots.json`` in the instance dir, or
``<name>.snapshots.json`` beside the disk on a vmctl host; it adds only what libvirt cannot store:
the kind and the VM's state when it was taken) is not still marked ``pending``. On a host, the
table is read from the disk's header and table bytes over libvirt (`HostPlace.snapshot_table`),
and data without metadata is deleted through libvirt too (`drop_data`). A create first records
its intent (``pending``), so a killed one leaves a snapshot that is never listed and that
`sweep_orphans` (or ``doctor``) removes. Temporary snapshots vmctl takes (a live commit's) carry
the ``vmctl-tmp-`` prefix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from vmctl.backend import snapshots as bsnap
from vmctl.core.instance import Instance, all_instances
from vmctl.core.states import ACTIVE, LIVE
from vmctl.errors import IntegrityError, NotFoundError, UsageError
from vmctl.fsutil import atomic_write
from vmctl.names import check_name
from vmctl.storage import qemu_img
from vmctl.xml.snapshot import DomainSnapshot, build_snapshot

SIDECAR = "snapshots.json"
TEMP_PREFIX = "vmctl-tmp-"


@dataclass
class SnapshotRow:
    name: str
    created: str
    kind: str
    vm_state: str          # running | paused | stopped: the VM's state when it was taken
    size: int              # bytes of saved memory (disk clusters are shared with the VM's disk)
    parent: str | None
    current: bool
    description: str

    def as_dict(self) -> dict:
        return asdict(self)


def iso(seconds: int | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(int(seconds), timezone.utc).isoformat().replace("+00:00", "Z")


def check_snapshot_name(snap: str) -> str:
    check_name(snap, "snapshot name")
    if snap.startswith(TEMP_PREFIX):
        raise UsageError(f"invalid snapshot name {snap!r}: names starting with {TEMP_PREFIX} are vmctl's own")
    return snap


def holder(vm: str, snap: str) -> str:
    """The image hold a snapshot keeps on its VM's image."""
    return f"snapshot:{vm}/{snap}"


# -- vmctl's record --------------------------------------------------------------------------
def _parse_sidecar(raw: bytes | None, where: str) -> dict:
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
        snaps = data.get("snapshots", {})
        if not isinstance(snaps, dict) or not all(isinstance(v, dict) for v in snaps.values()):
            raise ValueError("not a table of snapshots")
    except (ValueError, AttributeError, RecursionError) as exc:   # RecursionError: nested too deep
        raise IntegrityError(f"{where} is damaged: {str(exc) or type(exc).__name__}") from None
    return snaps


def load_sidecar_file(directory: Path) -> dict:
    """The snapshot sidecar of a local instance directory (shell completion reads it alone)."""
    try:
        raw = (directory / SIDECAR).read_bytes()
    except FileNotFoundError:
        raw = None
    return _parse_sidecar(raw, str(directory / SIDECAR))


def load_sidecar(inst: Instance) -> dict:
    """vmctl's entries for the VM's snapshots, by name."""
    if inst.on_host:
        return _parse_sidecar(inst.place.load_sidecar(inst.name), inst.place.snapshot_sidecar(inst.name))
    return load_sidecar_file(inst.directory)


def sidecar_set(inst: Instance, snap: str, entry: dict | None) -> None:
    """Set (or, with None, drop) vmctl's entry for snapshot `snap` of the VM."""
    snaps = load_sidecar(inst)
    if entry is None:
        snaps.pop(snap, None)
    else:
        snaps[snap] = entry
    data = json.dumps({"version": 1, "snapshots": snaps}, indent=2, sort_keys=True).encode()
    if inst.on_host:
        inst.place.save_sidecar(inst.name, data)
    else:
        atomic_write(inst.directory / SIDECAR, data)


# -- what libvirt and the disk hold ---------------------------------------------------------
def table(inst: Instance) -> dict[str, dict]:
    """The qcow2 snapshot table of the VM's disk."""
    if inst.on_host:
        return inst.place.snapshot_table(inst.name)
    return qemu_img.snapshot_table(inst.disk)


def rows(inst: Instance) -> tuple[list[SnapshotRow], list[str]]:
    """Complete snapshots of the VM, and the names of broken ones (half of a snapshot, or one
    whose create never finished)."""

    metas = bsnap.list_snapshots(inst.session.backend, inst.name)
    data = table(inst)
    side = load_sidecar(inst)
    found, broken = [], []
    for meta in metas:
        doc = DomainSnapshot.from_xml(meta.xml)
        internal = [t for t, m in doc.disk_modes().items() if m == "internal"]
        if meta.name not in data or not internal or side.get(meta.name, {}).get("pending"):
            broken.append(meta.name)
            continue
        extra = side.get(meta.name, {})
        state = doc.state or "shutoff"
        if doc.memory == "internal":
            kind, vm_state = "memory", ("paused" if state == "paused" else "running")
        else:
            kind = extra.get("kind", "disk")
            vm_state = extra.get("vm_state", "stopped")
        found.append(SnapshotRow(
            name=meta.name, created=iso(doc.creation_time), kind=kind, vm_state=vm_state,
            size=int(data[meta.name].get("vm-state-size") or 0), parent=doc.parent,
            current=meta.current, description=doc.description or "",
        ))
    known = {m.name for m in metas}
    broken += [n for n in data if n not in known and not n.startswith(TEMP_PREFIX)]
    found.sort(key=lambda r: (r.created, r.name))
    return found, broken


def find(inst: Instance, snap: str) -> SnapshotRow:
    """A complete snapshot of the VM (NotFoundError; IntegrityError for a broken one)."""
    found, broken = rows(inst)
    for row in found:
        if row.name == snap:
            return row
    if snap in broken:
        raise IntegrityError(f"snapshot {inst.name}/{snap} is incomplete (a failed or interrupted create); "
                             f"remove it with 'vmctl snapshot rm {inst.name} {snap}'")
    raise NotFoundError(f"VM {inst.name} has no snapshot {snap}")


# -- removing what is left of killed operations ----------------------------------------------
def drop_data(inst: Instance, snap: str, state: str) -> None:
    """Delete snapshot data that has no libvirt metadata (leftovers of killed operations)."""
    backend = inst.session.backend
    if state in LIVE:
        node = bsnap.writable_qcow2_nodes(backend, inst.name).get(str(inst.disk))
        if node is None:
            raise IntegrityError(f"cannot find the block node of {inst.disk} in {inst.name}'s QEMU")
        bsnap.delete_internal_disk_snapshot(backend, inst.name, node, snap)
    elif inst.on_host:
        # no qemu-img here for a disk on another machine: the host's libvirt deletes it, once it
        # has metadata for it (recorded just for that; libvirt runs ``qemu-img snapshot -d`` there)
        doc = build_snapshot(snap, state="shutoff", memory="no", disks={_disk_target(inst): "internal"},
                             domain_xml=backend.xml(inst.name, inactive=True, secure=True))
        bsnap.redefine(backend, inst.name, doc.to_xml(), current=False)
        bsnap.delete(backend, inst.name, snap)
    else:
        qemu_img.delete_snapshot(inst.disk, snap)


def _disk_target(inst: Instance) -> str:
    """The target (``vda``) of the VM's own disk in its definition."""
    from vmctl.xml.domain import Domain  # lazy: the model, for a host's leftover snapshot only

    for d in Domain.from_xml(inst.session.backend.xml(inst.name, inactive=True)).devices.disks:
        if d.source_file == str(inst.disk):
            return d.target_dev
    raise IntegrityError(f"{inst.name}'s definition has no disk {inst.disk}")


def sweep_orphans(inst: Instance, state: str) -> dict[str, dict]:
    """Remove snapshot data vmctl left without libvirt metadata: its temporary snapshots, and
    creates that a killed process left half-done (marked pending before any data was made).
    Snapshots made by other tools are never touched. Call with the VM's name lock held.

    Returns the disk's snapshot table as it is afterwards (``table``, without what was removed),
    so a caller need not read it again."""

    known = {m.name for m in bsnap.list_snapshots(inst.session.backend, inst.name)}
    side = load_sidecar(inst)
    data = table(inst)
    for snap in list(data):
        ours = snap.startswith(TEMP_PREFIX) or side.get(snap, {}).get("pending")
        if snap not in known and ours:
            drop_data(inst, snap, state)
            del data[snap]
    for snap, entry in side.items():
        if entry.get("pending") and snap not in known:
            sidecar_set(inst, snap, None)
    return data


def forget_all(inst: Instance) -> None:
    """For rm (after the domain was undefined with its snapshot metadata): release the image holds
    of the VM's snapshots. Their data is inside the disk, removed with the directory."""
    store = inst.session.store
    prefix = f"snapshot:{inst.name}/"
    for image_id, holders in store.all_holds().items():
        for h in holders:
            if h.startswith(prefix):
                store.release(image_id, h)
    (inst.directory / SIDECAR).unlink(missing_ok=True)


def usage(session) -> tuple[int, int, int, int]:
    """For ``vmctl df``: (snapshots, of running VMs, bytes of saved memory, bytes freed by removing
    them all). Disk clusters of snapshots are shared with the VMs' disks and counted there."""

    count = active = size = 0
    try:
        states = session.backend.list_states()
    except Exception:  # noqa: BLE001 - df answers without libvirt
        states = {}
    for inst in all_instances(session):
        try:
            data = table(inst)
        except Exception:  # noqa: BLE001 - an unreadable disk is doctor's business
            continue
        for name, entry in data.items():
            if name.startswith(TEMP_PREFIX):
                continue
            count += 1
            size += int(entry.get("vm-state-size") or 0)
            st = states.get(inst.name)
            if st is not None and st.state in ACTIVE:
                active += 1
    return count, active, size, size
