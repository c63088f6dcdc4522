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
    What a snapshot *is* (libvirt metadata, qcow2 data, vmctl's record) is
    `vmctl.core.snapshot_records`. Create is a transaction (intent record, data, metadata, image
    hold ``snapshot:VM/SNAP``, final record; undone in reverse on failure). What a killed process
    leaves half-made is never listed; the next create on that VM removes data that vmctl's intent
    record (or the ``vmctl-tmp-`` prefix) marks as its own, ``snapshot rm`` removes any incomplete
    snapshot named explicitly, and ``doctor --fix`` removes them all. Internal snapshots made by
    other tools are never touched otherwise.

UEFI guests
    libvirt 9.0 refuses internal snapshots of a domain with pflash firmware (OVMF's NVRAM is a
    raw pflash file and cannot hold one). vmctl works around it for disks: a running UEFI VM's
    default snapshot is ``disk-only`` (the guest agent freezes its file systems first, when it
    answers), a stopped one's is made with ``qemu-img snapshot -c``; both are recorded in libvirt
    with a redefine, as above. A memory snapshot (``--memory``) of a UEFI VM is refused with
    that reason. The NVRAM is not part of any snapshot: it holds only boot entries, and vmctl's
    UEFI images boot by the removable-media path, which needs none.

Known limit
    Revert restores the domain definition saved in the snapshot. If the VM's SSH forward was moved
    to another host port after the snapshot (its old port was taken), the reverted definition names
    the old port again.

Every operation passes the state machine (`vmctl.core.states`) and holds the VM's name lock.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone

from vmctl import faults
from vmctl.backend import snapshots as bsnap
from vmctl.core import snapshot_records as records
from vmctl.core.instance import Instance, resolve
from vmctl.core.session import Session
from vmctl.core.states import LIVE, guard
from vmctl.core.volumes import ensure_binds
from vmctl.core.transaction import Transaction
from vmctl.errors import ConflictError, IntegrityError, NotFoundError, ResourceError, UsageError
from vmctl.names import check_name
from vmctl.storage import qemu_img
from vmctl.xml.domain import Domain
from vmctl.xml.snapshot import DomainSnapshot, build_snapshot

MIB = 1024 * 1024
# Room kept free besides the saved RAM: qcow2 metadata of the snapshot, guest writes meanwhile.
SPACE_MARGIN = 64 * MIB
DISK_SNAPSHOT_SPACE = 16 * MIB


def _check_space(inst: Instance, need: int, what: str) -> None:
    if inst.on_host:   # the disk is on the host: its pool's file system, as the host's libvirt sees it
        free, where = inst.place.free_bytes(), f"{inst.place.instances_dir} on {inst.session.host.name}"
    else:
        free, where = shutil.disk_usage(inst.directory).free, str(inst.directory)
    if free < need:
        raise ResourceError(
            f"not enough disk space for {what}: about {need // MIB} MiB needed, {free // MIB} MiB "
            f"free under {where}; nothing was changed"
        )


def _disks(xml: str) -> list:

    return list(Domain.from_xml(xml).devices.disks)


def _disk_modes(disks: list) -> dict[str, str]:
    """Writable qcow2 disks are snapshotted internally; read-only media (the seed ISO) are not.

    Spelled out per disk rather than left to libvirt's defaults, so a writable disk that cannot
    take an internal snapshot is refused here with a clear message.
    """
    modes = {}
    for d in disks:
        if d.readonly or d.source_file is None:
            modes[d.target_dev] = "no"
        elif d.driver_type == "qcow2":
            modes[d.target_dev] = "internal"
        else:
            raise UsageError(f"disk {d.target_dev} is {d.driver_type}: internal snapshots need qcow2 disks")
    return modes


PFLASH_LIMIT = "9.0 makes no internal snapshot of a VM with pflash firmware, so its memory cannot be saved"


def _pflash(xml: str) -> bool:
    """Whether the domain boots UEFI firmware from pflash (``<os firmware='efi'>`` or a pflash loader)."""
    return Domain.from_xml(xml).os.boots_pflash()


def _off_or_live(state: str) -> str:
    return "stopped" if state not in LIVE else state


# ---------------------------------------------------------------------------- reading

def listing(session: Session, name: str) -> list[dict]:
    rows, _ = records.rows(resolve(session, name))
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


def inspect(session: Session, name: str, snap: str) -> dict:

    inst = resolve(session, name)
    row = records.find(inst, snap)
    doc = DomainSnapshot.from_xml(bsnap.snapshot_xml(session.backend, name, snap))
    entry = records.table(inst)[snap]
    rows, _ = records.rows(inst)
    return {
        "vm": name,
        **row.as_dict(),
        "children": [r.name for r in rows if r.parent == snap],
        "libvirt_state": doc.state,
        "memory": doc.memory or "no",
        "disks": doc.disk_modes(),
        "location": "internal",
        "disk": str(inst.disk),
        "qcow2": {"id": entry.get("id"), "vm_state_size": entry.get("vm-state-size"),
                  "vm_clock_nsec": entry.get("vm-clock-sec", 0) * 1_000_000_000 + entry.get("vm-clock-nsec", 0)},
        "holder": records.holder(name, snap),
    }


# ---------------------------------------------------------------------------- changing

def _default_name() -> str:
    return "snap-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def create(session: Session, name: str, snap: str | None = None, *, mode: str | None = None,
           description: str | None = None) -> dict:
    """Take a snapshot of `name`; `mode` is None (by state), "memory" or "disk-only"."""
    snap = records.check_snapshot_name(snap or _default_name())
    if mode not in (None, "memory", "disk-only"):
        raise UsageError(f"unknown snapshot mode {mode!r}")
    backend = session.backend
    action = "snapshot-create-memory" if mode == "memory" else "snapshot-create"
    with guard(session, name, action) as g:
        inst, state = g.instance, _off_or_live(g.state)
        rec = inst.record
        if bsnap.has_snapshot(backend, name, snap):
            raise ConflictError(f"VM {name} already has a snapshot {snap}")
        if snap in records.sweep_orphans(inst, state):
            raise ConflictError(f"the disk of {name} already has an internal snapshot {snap} that vmctl did not "
                                f"make; choose another name (or 'vmctl snapshot rm {name} {snap}')")
        live = state in LIVE
        domain_xml = backend.xml(name, inactive=not live)
        pflash = _pflash(domain_xml)
        if pflash and not live and inst.on_host:
            # vmctl makes this one with qemu-img on the disk, which is on another machine
            raise UsageError(f"{name} boots by UEFI and is stopped on {session.host.name}: libvirt {PFLASH_LIMIT}, "
                             "nor a disk snapshot of it; start it and take a disk-only snapshot")
        if pflash and live and mode == "memory":
            raise UsageError(f"{name} boots by UEFI: libvirt {PFLASH_LIMIT}; take a disk-only snapshot "
                             "(the default for a UEFI VM)")
        # QEMU blocks saving a VM's state while a guest has a virtio-fs or 9p export mounted (the
        # host directory's state is not the VM's to save): disk-only, by default and by necessity.
        shares = bool(list(Domain.from_xml(domain_xml).devices.filesystems))
        if shares and live and mode == "memory":
            raise UsageError(f"{name} has volumes (shared host directories): QEMU cannot save its memory "
                             "while they are mounted; take a disk-only snapshot (the default for it)")
        kind = "disk" if not live else ("disk-only" if mode == "disk-only" or pflash or shares else "memory")
        disks = _disks(domain_xml)
        modes = _disk_modes(disks)
        internal = [d for d in disks if modes[d.target_dev] == "internal"]
        if not internal:
            raise UsageError(f"{name} has no disk to snapshot")
        if kind == "memory":
            _check_space(inst, rec.memory_mib * MIB + SPACE_MARGIN, f"a memory snapshot of {name}")
        else:
            _check_space(inst, DISK_SNAPSHOT_SPACE, f"a disk snapshot of {name}")
        parent = bsnap.current(backend, name)
        now = int(time.time())
        with Transaction(warn=session.warn) as tx:
            entry = {"kind": kind, "vm_state": state, "created": now}
            records.sidecar_set(inst, snap, {**entry, "pending": True})  # intent, before any data
            tx.on_undo(lambda: records.sidecar_set(inst, snap, None), "forget snapshot")
            faults.point("snapshot.create.after-intent")
            if kind == "disk-only":
                nodes = bsnap.writable_qcow2_nodes(backend, name)
                missing = [d.source_file for d in internal if d.source_file not in nodes]
                if missing:
                    raise IntegrityError(f"cannot find QEMU's block nodes for {', '.join(missing)}")
                with bsnap.frozen(backend, name):  # consistent where the guest agent answers
                    bsnap.internal_disk_snapshot(backend, name, [nodes[d.source_file] for d in internal], snap)
                for d in internal:
                    tx.on_undo(lambda node=nodes[d.source_file]: bsnap.delete_internal_disk_snapshot(
                        backend, name, node, snap), "delete snapshot data")
                doc = build_snapshot(snap, description=description, state="shutoff", creation_time=now,
                                     parent=parent, memory="no", disks=modes,
                                     domain_xml=backend.xml(name, inactive=True, secure=True))
                bsnap.redefine(backend, name, doc.to_xml(), current=True)
                tx.on_undo(lambda: bsnap.delete(backend, name, snap, metadata_only=True), "drop metadata")
            elif pflash:  # a stopped UEFI VM: the disk snapshot libvirt refuses to make, made here
                for d in internal:
                    qemu_img.create_snapshot(d.source_file, snap)
                    tx.on_undo(lambda f=d.source_file: qemu_img.delete_snapshot(f, snap), "delete snapshot data")
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
                    _restore_state(session, name, state)
                    raise
                tx.on_undo(lambda: bsnap.delete(backend, name, snap), "delete snapshot")
            faults.point("snapshot.create.after-data")
            if not inst.on_host:   # a host's VM has its layers there: this store's image is not held
                session.store.hold(rec.image_id, records.holder(name, snap))
                tx.on_undo(lambda: session.store.release(rec.image_id, records.holder(name, snap)), "release image")
            records.sidecar_set(inst, snap, entry)
        if kind == "memory" or not (kind == "disk-only" or pflash):
            # libvirt made it (its creation time, the saved state's size): read it back
            return records.find(inst, snap).as_dict()
        # vmctl wrote this snapshot's metadata itself (created `now`, no memory: size 0): its row
        # as `find` would read it back, without listing libvirt's snapshots and running qemu-img
        # again (a third of the create's time)
        return records.SnapshotRow(name=snap, created=records.iso(now), kind=kind, vm_state=state, size=0,
                                   parent=parent, current=True, description=description or "").as_dict()


def _restore_state(session: Session, name: str, state: str) -> None:
    """After a failed snapshot, leave the VM as it was (libvirt resumes it; make sure)."""
    try:
        if state == "running" and session.backend.state(name).state == "paused":
            session.backend.resume(name)
    except Exception:  # noqa: BLE001 - the original error matters more
        pass


def revert(session: Session, name: str, snap: str, *, force: bool = False) -> str:
    """Go back to `snap`: disks (and memory) as they were; the VM running, paused or stopped as it
    was when the snapshot was taken. Returns the VM's state afterwards."""

    check_name(snap, "snapshot name")
    with guard(session, name, "snapshot-revert") as g:
        row = records.find(g.instance, snap)
        then = {"running": "running", "paused": "paused"}.get(row.vm_state)
        faults.point("snapshot.revert.before")
        if then:
            ensure_binds(g.instance.record.volumes)   # the revert starts QEMU
        bsnap.revert(session.backend, name, snap, then=then, force=force)
        return _off_or_live(g.instance.refresh())


def remove(session: Session, name: str, snap: str) -> None:
    """Delete one snapshot. Its children stay (re-parented to its parent); the image, the VM and
    the other snapshots are untouched: qcow2 only drops this snapshot's references to clusters."""

    check_name(snap, "snapshot name")
    with guard(session, name, "snapshot-remove") as g:
        inst = g.instance
        found, broken = records.rows(inst)
        if snap in {r.name for r in found}:
            bsnap.delete(session.backend, name, snap)
            faults.point("snapshot.rm.after-delete")
        elif snap in broken:
            if bsnap.has_snapshot(session.backend, name, snap):
                bsnap.delete(session.backend, name, snap, metadata_only=True)
            if snap in records.table(inst):
                records.drop_data(inst, snap, _off_or_live(g.state))
        else:
            raise NotFoundError(f"VM {name} has no snapshot {snap}")
        if not inst.on_host:
            session.store.release(inst.record.image_id, records.holder(name, snap))
        records.sidecar_set(inst, snap, None)
