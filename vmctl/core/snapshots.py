"""VM snapshots: create, list, revert, remove, inspect — internal qcow2 snapshots through libvirt.

Why internal snapshots
    An internal snapshot lives inside the instance's own overlay (``disk.qcow2``): the qcow2 file
    keeps a snapshot table, each entry a copy of the L1 table whose clusters are shared
    copy-on-write with the live disk, plus, for a memory snapshot, the saved device and RAM state.
    On libvirt 9.0 this is the kind that libvirt can create, revert *and* delete by itself
    (external snapshots it can only create), so every guarantee — atomic create, revert of disks
    and memory, deleting any node of a tree without touching the others — comes from QEMU's and
    libvirt's own code paths instead of hand-made overlay swaps and block commits. The image's
    layers are never written: the overlay is the only file that changes, and it belongs to the
    instance alone. Removing the VM removes its snapshots with its directory. The costs: snapshot
    data cannot be moved to other storage, and a memory snapshot pauses the guest while its RAM is
    written (a second or two for 256 MiB under TCG).

Kinds
    ``disk``       the VM was stopped: ``qemu-img snapshot -c`` via libvirt; revert leaves it stopped.
    ``memory``     the VM was running or paused: libvirt's ``savevm`` (disks and RAM, consistent);
                   revert resumes it exactly there, running or paused as it was.
    ``disk-only``  the VM was running, ``--disk-only``: a crash-consistent disk snapshot made with
                   QEMU's ``blockdev-snapshot-internal-sync`` in one QMP transaction (libvirt 9.0
                   only does internal snapshots of running domains with memory), then recorded in
                   libvirt with a redefine (state ``shutoff``, which is what it is: disks without
                   memory). Revert boots the VM again from those disks (it was running).

Consistency
    A snapshot exists for vmctl when libvirt has its metadata *and* the qcow2 snapshot table has
    its data. Create is a transaction (intent record, data, metadata, image hold ``snapshot:VM/SNAP``,
    final record; undone in reverse on failure), so a half-made snapshot is rolled back. What a
    killed process leaves half-made is never listed; the next create on that VM removes data that
    vmctl's intent record (or the ``vmctl-tmp-`` prefix) marks as its own, and ``snapshot rm``
    removes any incomplete snapshot named explicitly. Internal snapshots made by other tools are
    never touched otherwise. vmctl's record (``snapshots.json`` in the instance dir) only adds what
    libvirt cannot store: the kind and the VM's state when it was taken.

Known limit
    Revert restores the domain definition saved in the snapshot. If the VM's SSH forward was moved
    to another host port after the snapshot (its old port was taken), the reverted definition names
    the old port again.

Every operation holds the VM's name lock.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from lxml import etree

from vmctl import faults
from vmctl.core.instances import instance_dir, record
from vmctl.core.lifecycle import ACTIVE
from vmctl.core.namelock import name_lock
from vmctl.core.records import DISK
from vmctl.core.transaction import Transaction
from vmctl.errors import ConflictError, IntegrityError, NotFoundError, ResourceError, UsageError
from vmctl.fsutil import atomic_write
from vmctl.names import check_name

SIDECAR = "snapshots.json"
TEMP_PREFIX = "vmctl-tmp-"
KINDS = ("disk", "memory", "disk-only")
MIB = 1024 * 1024
# Room kept free besides the saved RAM: qcow2 metadata of the snapshot, guest writes meanwhile.
SPACE_MARGIN = 64 * MIB
DISK_SNAPSHOT_SPACE = 16 * MIB


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


# ---------------------------------------------------------------------------- small helpers

def _iso(seconds: int | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(int(seconds), timezone.utc).isoformat().replace("+00:00", "Z")


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _check_space(directory: Path, need: int, what: str) -> None:
    free = _free_bytes(directory)
    if free < need:
        raise ResourceError(
            f"not enough disk space for {what}: about {need // MIB} MiB needed, {free // MIB} MiB "
            f"free under {directory}; nothing was changed"
        )


def check_snapshot_name(snap: str) -> str:
    check_name(snap, "snapshot name")
    if snap.startswith(TEMP_PREFIX):
        raise UsageError(f"invalid snapshot name {snap!r}: names starting with {TEMP_PREFIX} are vmctl's own")
    return snap


def holder(vm: str, snap: str) -> str:
    return f"snapshot:{vm}/{snap}"


def _load_sidecar(directory: Path) -> dict:
    try:
        data = json.loads((directory / SIDECAR).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise IntegrityError(f"{directory / SIDECAR} is damaged: {exc}") from None
    return data.get("snapshots", {})


def _save_sidecar(directory: Path, snaps: dict) -> None:
    atomic_write(directory / SIDECAR, json.dumps({"version": 1, "snapshots": snaps}, indent=2,
                                                 sort_keys=True).encode())


def _sidecar_set(directory: Path, snap: str, entry: dict | None) -> None:
    snaps = _load_sidecar(directory)
    if entry is None:
        snaps.pop(snap, None)
    else:
        snaps[snap] = entry
    _save_sidecar(directory, snaps)


def qcow2_snapshots(disk: Path) -> dict[str, dict]:
    """The snapshot table of `disk` (name -> qemu-img's entry), read with force-share."""
    from vmctl.storage import qemu_img

    if not disk.exists():
        return {}
    info = qemu_img.info(disk, "qcow2", force_share=True)
    return {s["name"]: s for s in info.get("snapshots") or []}


def _domain_disks(xml: str) -> list[dict]:
    """The domain's disks: target, file, format, read-only."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    root = etree.fromstring(xml.encode(), parser)
    out = []
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        driver = disk.find("driver")
        out.append({
            "target": target.get("dev") if target is not None else None,
            "file": source.get("file") if source is not None else None,
            "format": driver.get("type") if driver is not None else None,
            "readonly": disk.find("readonly") is not None,
            "device": disk.get("device", "disk"),
        })
    return out


def _disk_modes(disks: list[dict]) -> dict[str, str]:
    """Writable qcow2 disks are snapshotted internally; read-only media (the seed ISO) are not.

    Spelled out per disk rather than left to libvirt's defaults, so a writable disk that cannot
    take an internal snapshot is refused here with a clear message.
    """
    modes = {}
    for d in disks:
        if d["readonly"] or d["file"] is None:
            modes[d["target"]] = "no"
        elif d["format"] == "qcow2":
            modes[d["target"]] = "internal"
        else:
            raise UsageError(f"disk {d['target']} is {d['format']}: internal snapshots need qcow2 disks")
    return modes


def _vm_state(app, name: str) -> str:
    state = app.backend.state(name).state
    return "stopped" if state in {"stopped", "crashed"} else state


def _rows(app, name: str) -> tuple[list[SnapshotRow], list[str]]:
    """Complete snapshots of `name` (libvirt metadata and qcow2 data both present), and the names
    of broken ones (only one of the two)."""
    from vmctl.backend import snapshots as bsnap
    from vmctl.xml.snapshot import DomainSnapshot

    directory = instance_dir(app, name)
    metas = bsnap.list_snapshots(app.backend, name)
    table = qcow2_snapshots(directory / DISK)
    side = _load_sidecar(directory)
    rows, broken = [], []
    for meta in metas:
        doc = DomainSnapshot.from_xml(meta.xml)
        internal = [t for t, m in doc.disk_modes().items() if m == "internal"]
        if meta.name not in table or not internal or side.get(meta.name, {}).get("pending"):
            broken.append(meta.name)  # a create that never finished is not a snapshot yet
            continue
        extra = side.get(meta.name, {})
        state = doc.state or "shutoff"
        if doc.memory == "internal":
            kind, vm_state = "memory", ("paused" if state == "paused" else "running")
        else:
            kind = extra.get("kind", "disk")
            vm_state = extra.get("vm_state", "stopped")
        rows.append(SnapshotRow(
            name=meta.name, created=_iso(doc.creation_time), kind=kind, vm_state=vm_state,
            size=int(table[meta.name].get("vm-state-size") or 0), parent=doc.parent,
            current=meta.current, description=doc.description or "",
        ))
    known = {m.name for m in metas}
    broken += [n for n in table if n not in known and not n.startswith(TEMP_PREFIX)]
    rows.sort(key=lambda r: (r.created, r.name))
    return rows, broken


def _find(app, name: str, snap: str) -> SnapshotRow:
    rows, broken = _rows(app, name)
    for row in rows:
        if row.name == snap:
            return row
    if snap in broken:
        raise IntegrityError(f"snapshot {name}/{snap} is incomplete (a failed or interrupted create); "
                             f"remove it with 'vmctl snapshot rm {name} {snap}'")
    raise NotFoundError(f"VM {name} has no snapshot {snap}")


# ---------------------------------------------------------------------------- orphans

def _drop_qcow2_snapshot(app, name: str, disk: Path, snap: str, running: bool) -> None:
    """Delete snapshot data without libvirt metadata (leftovers of killed operations)."""
    from vmctl.backend import snapshots as bsnap
    from vmctl.storage import qemu_img

    if running:
        nodes = bsnap.writable_qcow2_nodes(app.backend, name)
        node = nodes.get(str(disk))
        if node is None:
            raise IntegrityError(f"cannot find the block node of {disk} in {name}'s QEMU")
        bsnap.delete_internal_disk_snapshot(app.backend, name, node, snap)
    else:
        # ``qemu-img snapshot`` has no -f: a json: spec names the driver, so nothing is probed.
        qemu_img.run(["snapshot", "-d", snap, qemu_img.snapshot_spec(disk)])


def _sweep_orphans(app, name: str, state: str) -> None:
    """Remove snapshot data vmctl left without libvirt metadata: its temporary snapshots, and
    creates that a killed process left half-done (marked ``pending`` in vmctl's record before any
    data was made). Snapshots made by other tools are never touched. Called with the name lock."""
    from vmctl.backend import snapshots as bsnap

    directory = instance_dir(app, name)
    disk = directory / DISK
    known = {m.name for m in bsnap.list_snapshots(app.backend, name)}
    side = _load_sidecar(directory)
    for snap in qcow2_snapshots(disk):
        ours = snap.startswith(TEMP_PREFIX) or side.get(snap, {}).get("pending")
        if snap not in known and ours:
            _drop_qcow2_snapshot(app, name, disk, snap, state in ACTIVE)
    for snap, entry in side.items():
        if entry.get("pending") and snap not in known:
            _sidecar_set(directory, snap, None)


# ---------------------------------------------------------------------------- operations

def listing(app, name: str) -> list[dict]:
    record(app, name)
    rows, _ = _rows(app, name)
    return [r.as_dict() for r in rows]


def tree(rows: list[dict]) -> list[tuple[int, dict]]:
    """(depth, row) in depth-first order, children after their parent, oldest first."""
    by_parent: dict[str | None, list[dict]] = {}
    names = {r["name"] for r in rows}
    for r in rows:
        parent = r["parent"] if r["parent"] in names else None
        by_parent.setdefault(parent, []).append(r)
    out: list[tuple[int, dict]] = []

    def walk(parent, depth):
        for r in by_parent.get(parent, []):
            out.append((depth, r))
            walk(r["name"], depth + 1)

    walk(None, 0)
    return out


def inspect(app, name: str, snap: str) -> dict:
    from vmctl.backend import snapshots as bsnap
    from vmctl.xml.snapshot import DomainSnapshot

    record(app, name)
    row = _find(app, name, snap)
    doc = DomainSnapshot.from_xml(bsnap.snapshot_xml(app.backend, name, snap))
    entry = qcow2_snapshots(instance_dir(app, name) / DISK)[snap]
    rows, _ = _rows(app, name)
    return {
        "vm": name,
        **row.as_dict(),
        "children": [r.name for r in rows if r.parent == snap],
        "libvirt_state": doc.state,
        "memory": doc.memory or "no",
        "disks": doc.disk_modes(),
        "location": "internal",
        "disk": str(instance_dir(app, name) / DISK),
        "qcow2": {"id": entry.get("id"), "vm_state_size": entry.get("vm-state-size"),
                  "vm_clock_nsec": entry.get("vm-clock-sec", 0) * 1_000_000_000 + entry.get("vm-clock-nsec", 0)},
        "holder": holder(name, snap),
    }


def _default_name() -> str:
    return "snap-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def create(app, name: str, snap: str | None = None, *, mode: str | None = None,
           description: str | None = None) -> dict:
    """Take a snapshot of `name`; `mode` is None (by state), "memory" or "disk-only"."""
    from vmctl.backend import snapshots as bsnap
    from vmctl.xml.snapshot import build_snapshot

    snap = check_snapshot_name(snap or _default_name())
    rec = record(app, name)
    if mode not in (None, "memory", "disk-only"):
        raise UsageError(f"unknown snapshot mode {mode!r}")
    directory = instance_dir(app, name)
    backend = app.backend
    with name_lock(app.settings.paths.locks, name):
        state = _vm_state(app, name)
        if state not in {"running", "paused", "stopped"}:
            raise ConflictError(f"cannot snapshot {name}: it is {state}")
        if bsnap.has_snapshot(backend, name, snap):
            raise ConflictError(f"VM {name} already has a snapshot {snap}")
        _sweep_orphans(app, name, state)
        if snap in qcow2_snapshots(directory / DISK):
            raise ConflictError(f"the disk of {name} already has an internal snapshot {snap} that vmctl did not "
                                f"make; choose another name (or 'vmctl snapshot rm {name} {snap}')")
        live = state in {"running", "paused"}
        if not live and mode == "memory":
            raise UsageError(f"{name} is stopped: there is no memory to save (a stopped VM gets a disk snapshot)")
        if not live:
            kind = "disk"
        else:
            kind = "disk-only" if mode == "disk-only" else "memory"
        disks = _domain_disks(backend.xml(name, inactive=not live))
        modes = _disk_modes(disks)
        internal = [d for d in disks if modes[d["target"]] == "internal"]
        if not internal:
            raise UsageError(f"{name} has no disk to snapshot")
        if kind == "memory":
            _check_space(directory, rec.memory_mib * MIB + SPACE_MARGIN, f"a memory snapshot of {name}")
        else:
            _check_space(directory, DISK_SNAPSHOT_SPACE, f"a disk snapshot of {name}")
        parent = bsnap.current(backend, name)
        now = int(time.time())
        with Transaction() as tx:
            entry = {"kind": kind, "vm_state": state, "created": now}
            _sidecar_set(directory, snap, {**entry, "pending": True})  # intent, before any data
            tx.on_undo(lambda: _sidecar_set(directory, snap, None), "forget snapshot")
            faults.point("snapshot.create.after-intent")
            if kind == "disk-only":
                nodes = bsnap.writable_qcow2_nodes(backend, name)
                missing = [d["file"] for d in internal if d["file"] not in nodes]
                if missing:
                    raise IntegrityError(f"cannot find QEMU's block nodes for {', '.join(missing)}")
                bsnap.internal_disk_snapshot(backend, name, [nodes[d["file"]] for d in internal], snap)
                for d in internal:
                    tx.on_undo(lambda node=nodes[d["file"]]: bsnap.delete_internal_disk_snapshot(backend, name, node, snap),
                               "delete snapshot data")
                doc = build_snapshot(snap, description=description, state="shutoff", creation_time=now,
                                     parent=parent, memory="no", disks=modes,
                                     domain_xml=backend.xml(name, inactive=True, secure=True))
                bsnap.redefine(backend, name, doc.to_xml(), current=True)
                tx.on_undo(lambda: bsnap.delete(backend, name, snap, metadata_only=True), "drop metadata")
            else:
                doc = build_snapshot(snap, description=description,
                                     memory="internal" if kind == "memory" else "no", disks=modes)
                try:
                    bsnap.create(backend, name, doc.to_xml())
                except Exception:
                    _restore_state(app, name, state)
                    raise
                tx.on_undo(lambda: bsnap.delete(backend, name, snap), "delete snapshot")
            faults.point("snapshot.create.after-data")
            app.store.hold(rec.image_id, holder(name, snap))
            tx.on_undo(lambda: app.store.release(rec.image_id, holder(name, snap)), "release image")
            _sidecar_set(directory, snap, entry)
        return _find(app, name, snap).as_dict()


def _restore_state(app, name: str, state: str) -> None:
    """After a failed snapshot, leave the VM as it was (libvirt resumes it; make sure)."""
    try:
        now = _vm_state(app, name)
        if state == "running" and now == "paused":
            app.backend.resume(name)
    except Exception:  # noqa: BLE001 - the original error matters more
        pass


def revert(app, name: str, snap: str, *, force: bool = False) -> str:
    """Go back to `snap`: disks (and memory) as they were; the VM running, paused or stopped as it
    was when the snapshot was taken. Returns the VM's state afterwards."""
    from vmctl.backend import snapshots as bsnap

    record(app, name)
    check_name(snap, "snapshot name")
    with name_lock(app.settings.paths.locks, name):
        row = _find(app, name, snap)
        then = {"running": "running", "paused": "paused"}.get(row.vm_state)
        faults.point("snapshot.revert.before")
        bsnap.revert(app.backend, name, snap, then=then, force=force)
        return _vm_state(app, name)


def remove(app, name: str, snap: str) -> None:
    """Delete one snapshot. Its children stay (re-parented to its parent); the image, the VM and
    the other snapshots are untouched: qcow2 only drops this snapshot's references to clusters."""
    from vmctl.backend import snapshots as bsnap

    rec = record(app, name)
    check_name(snap, "snapshot name")
    directory = instance_dir(app, name)
    with name_lock(app.settings.paths.locks, name):
        rows, broken = _rows(app, name)
        complete = {r.name for r in rows}
        if snap in complete:
            bsnap.delete(app.backend, name, snap)
            faults.point("snapshot.rm.after-delete")
        elif snap in broken:
            if bsnap.has_snapshot(app.backend, name, snap):
                bsnap.delete(app.backend, name, snap, metadata_only=True)
            disk = directory / DISK
            if snap in qcow2_snapshots(disk):
                _drop_qcow2_snapshot(app, name, disk, snap, _vm_state(app, name) in ACTIVE)
        else:
            raise NotFoundError(f"VM {name} has no snapshot {snap}")
        app.store.release(rec.image_id, holder(name, snap))
        _sidecar_set(directory, snap, None)


def forget_all(app, rec) -> None:
    """For ``vmctl rm`` (after the domain was undefined with its snapshot metadata): release the
    image holds of the VM's snapshots. Their data is inside the disk, removed with the directory."""
    prefix = f"snapshot:{rec.name}/"
    for image_id, holders in app.store.all_holds().items():
        for h in holders:
            if h.startswith(prefix):
                app.store.release(image_id, h)
    try:
        (instance_dir(app, rec.name) / SIDECAR).unlink()
    except FileNotFoundError:
        pass


def usage(app) -> tuple[int, int, int, int]:
    """For ``vmctl df``: (snapshots, of running VMs, bytes of saved memory, bytes freed by removing
    them all). Disk clusters of snapshots are shared with the VMs' disks and counted there."""
    from vmctl.core.records import list_records

    count = active = size = 0
    try:
        states = app.backend.list_states()
    except Exception:  # noqa: BLE001 - df answers without libvirt
        states = {}
    for rec in list_records(app.settings.paths.instances):
        try:
            table = qcow2_snapshots(instance_dir(app, rec.name) / DISK)
        except Exception:  # noqa: BLE001 - an unreadable disk is doctor's business
            continue
        for name, entry in table.items():
            if name.startswith(TEMP_PREFIX):
                continue
            count += 1
            size += int(entry.get("vm-state-size") or 0)
            st = states.get(rec.name)
            if st is not None and st.state in ACTIVE:
                active += 1
    return count, active, size, size
