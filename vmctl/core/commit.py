"""``vmctl commit``: an instance's disk (or one of its snapshots) becomes a new image.

Layered (the default)
    The new image is the parent image's layers plus one new layer holding only the clusters the
    instance wrote on top of the parent's top layer (``qemu-img convert -B <parent top>``, done by
    `ImageStore.add_layer`). The parent's layers are only read, never written, so every other image
    and instance sharing them is unaffected; the new layer is position independent and pushable.

Squashed (``--squash``)
    One self-contained layer: the whole disk as the guest sees it, converted without a backing
    file, imported as a base layer. The parent is recorded in the label ``vmctl.commit.parent``
    (not in ``parent``: the squashed image does not need the parent's layers).

Where the data is read from
    - a stopped VM: its overlay itself (the name lock keeps it from being started meanwhile);
    - ``--snapshot SNAP``: that internal snapshot, read with ``qemu-img convert -l`` (with
      force-share when the VM runs: clusters a snapshot references are never overwritten in place);
      of a VM on a vmctl host, from a local copy of its overlay (which holds its snapshots);
    - a running or paused VM: a temporary internal disk-only snapshot taken in one QMP transaction
      (the guest pauses only for the qcow2 metadata update, not for the copy), read as above and
      deleted afterwards. Before it, the guest's file systems are frozen by its guest agent, or --
      without one -- flushed by a ``sync`` over SSH; past that the commit is crash-consistent.
      A leftover temporary snapshot of a killed commit is removed by the VM's next snapshot create.
    The instance keeps working throughout and afterwards.

The new image records its parent (``parent``), the instance and snapshot (labels
``vmctl.commit.instance`` / ``vmctl.commit.snapshot``, and the history's ``created_by``), the
message (the history's ``comment``) and the guest paths of the VM's volumes (label
``vmctl.commit.volumes``; their contents are the host's and never part of the image).
"""

from __future__ import annotations

import io
import os
import time
from contextlib import contextmanager
from pathlib import Path

from vmctl.backend import snapshots as bsnap
from vmctl.core import snapshot_records as records
from vmctl.core.instance import Instance
from vmctl.core.session import Session
from vmctl.core.states import LIVE, guard
from vmctl.errors import IntegrityError, VmctlError
from vmctl.guest.keys import ensure_client_key
from vmctl.guest.ssh import GuestSession
from vmctl.names import check_name
from vmctl.storage import probe, qemu_img
from vmctl.storage.manifest import RECIPE_LABEL
from vmctl.storage.refs import parse_name

LAYER_OPTIONS = "compat=1.1,cluster_size=65536"


def convert_disk(src: Path, dst: Path, *, snapshot: str | None = None, backing: Path | None = None,
                 force_share: bool = False) -> None:
    """``qemu-img convert`` of `src` (its active state, or internal `snapshot`) to qcow2 `dst`,
    as an overlay of `backing` holding only what `src` holds above it, or standalone.

    Formats are always explicit; the snapshot name follows the name rule (no ',' can reach
    qemu-img's option parser).
    """

    args = ["convert", "-f", "qcow2", "-O", "qcow2", "-o", LAYER_OPTIONS]
    if force_share:
        args.append("-U")
    if snapshot is not None:
        args += ["-l", f"snapshot.name={check_name(snapshot, 'snapshot name')}"]
    if backing is not None:
        args += ["-B", qemu_img.local(backing), "-F", "qcow2"]
    qemu_img.run([*args, qemu_img.local(src), qemu_img.local(dst)])


@contextmanager
def _temporary_snapshot(inst: Instance):
    """A disk-only internal snapshot of a running VM for the duration of the block."""
    backend = inst.session.backend
    node = bsnap.writable_qcow2_nodes(backend, inst.name).get(str(inst.disk))
    if node is None:
        raise IntegrityError(f"cannot find the block node of {inst.disk} in {inst.name}'s QEMU")
    snap = f"{records.TEMP_PREFIX}commit-{os.urandom(4).hex()}"
    with bsnap.frozen(backend, inst.name) as frozen:   # the guest agent flushes and freezes, when there is one
        if not frozen:
            flush_guest(inst)
        bsnap.internal_disk_snapshot(backend, inst.name, [node], snap)
    try:
        yield snap
    finally:
        try:
            bsnap.delete_internal_disk_snapshot(backend, inst.name, node, snap)
        except VmctlError as exc:
            # never let the clean-up hide the commit's own outcome; the next snapshot create or
            # `vmctl doctor --fix` sweeps a temporary snapshot left behind
            inst.session.warn(f"could not delete the temporary snapshot {snap} of {inst.name}: {exc}")


def _host_disk(inst: Instance, parent, work: Path, live: bool) -> Path:
    """A local copy of a VM's overlay on a vmctl host, backed by the parent's local top layer.

    The overlay is streamed from the host (`HostPlace.download_disk`); a running VM is flushed
    (its agent freezes its file systems, else ``sync`` over SSH) and paused while it is read, then
    resumed. The copy comes from another machine: its header is checked (no data file, no
    encryption) before qemu-img opens it, and its backing name is replaced (``rebase -u``) by the
    parent's top layer in this store, which the VM's layers are copies of (same digests)."""
    backend, name = inst.session.backend, inst.name
    local = work / "host-disk.qcow2"
    if live:
        with bsnap.frozen(backend, name) as frozen:
            if not frozen:
                flush_guest(inst)
            backend.suspend(name)
            try:
                inst.place.download_disk(name, local)
            finally:
                backend.resume(name)
    else:
        inst.place.download_disk(name, local)
    hdr = probe.read_qcow2_header(local)
    if hdr.data_file is not None or hdr.crypt_method:
        raise IntegrityError(f"the disk of {name} on {inst.session.host.name} uses a data file or encryption; refused")
    qemu_img.rebase(local, parent.top_layer.resolve(), "qcow2", unsafe=True)
    return local


def flush_guest(inst: Instance) -> None:
    """Without a guest agent, ask the guest over SSH to write back its dirty pages before the
    snapshot is cut, so what was just written in it (``echo built > file``, then commit) is in
    the image, as ``docker commit`` would have it. Best effort: an unreachable guest is committed
    crash-consistent, with a warning."""
    try:
        host, port = inst.address()
        with GuestSession(host, port, user=inst.record.ssh_user, client_key=ensure_client_key(inst.session.paths.keys),
                          host_key_line=inst.record.host_key, dial=inst.session.dial) as guest:
            guest.run(["sync"], stdout=io.BytesIO(), stderr=io.BytesIO())   # sync(2) needs no root
    except VmctlError as exc:
        inst.session.warn(f"{inst.name}: could not flush the guest's writes before the commit ({exc}); "
                          "it is crash-consistent")


def _now() -> int:

    return int(time.time())


def commit(session: Session, name: str, ref: str, *, snapshot: str | None = None, squash: bool = False,
           message: str = ""):
    """Make image `ref` (``NAME[:TAG]``) from VM `name`'s disk or snapshot; return the Image."""
    parse_name(ref)
    if snapshot is not None:
        check_name(snapshot, "snapshot name")
    labels = {"vmctl.commit.instance": name}
    created_by = f"vmctl commit {name}"
    if snapshot is not None:
        labels["vmctl.commit.snapshot"] = snapshot
        created_by += f" --snapshot {snapshot}"
    if squash:
        created_by += " --squash"
    with guard(session, name, "commit") as g:
        inst = g.instance
        if inst.record.volumes:
            # a volume's files live on the host, never in the layer: the image only says where
            # the VM had them (Docker's Config.Volumes, as a label)
            labels["vmctl.commit.volumes"] = " ".join(v["target"] for v in inst.record.volumes)
        live = g.state in LIVE
        parent = session.store.get(inst.record.image_id)
        job = _Job(session, inst, parent, ref, squash, message, created_by, labels)
        if inst.on_host:
            if snapshot is not None:
                records.find(inst, snapshot)  # complete snapshots only
            # the overlay comes here whole, its internal snapshots inside it: one is read locally
            with session.store.session("commit-host") as work:
                return job.build(snapshot, False, disk=_host_disk(inst, parent, work.path, live and snapshot is None))
        if snapshot is not None:
            records.find(inst, snapshot)  # complete snapshots only
            return job.build(snapshot, live)
        if live:
            with _temporary_snapshot(inst) as temp:
                return job.build(temp, True)
        return job.build(None, False)


class _Job:
    """One commit's inputs, so that building it reads as the two ways it can go."""
    def __init__(self, session, inst, parent, ref, squash, message, created_by, labels):
        self.session, self.inst, self.parent, self.ref = session, inst, parent, ref
        self.squash, self.message, self.created_by, self.labels = squash, message, created_by, labels

    def build(self, snapshot: str | None, live: bool, disk: Path | None = None):
        """The new image from the VM's disk (or `disk`, a local copy of it), or its `snapshot`."""
        store, parent, disk = self.session.store, self.parent, disk or self.inst.disk
        progress = self.session.progress
        created = _now()
        byte_progress = (lambda phase, done, total: progress(f"commit: {phase}", done / total if total else None))
        with store.session("commit-stage") as work:
            if self.squash:
                flat = work.path / "squashed.qcow2"
                convert_disk(disk, flat, snapshot=snapshot, force_share=live)
                merged = {**parent.labels, **self.labels, "vmctl.commit.parent": parent.id}
                merged.pop(RECIPE_LABEL, None)
                boot = parent.boot
                kernel = parent.kernel if boot.get("kind") == "kernel" else None
                return store.import_image(
                    flat, self.ref, kernel=kernel, initrd=parent.initrd if kernel else None,
                    cmdline=boot.get("cmdline") if kernel else None, firmware=boot.get("firmware") or "bios",
                    fmt="qcow2", architecture=parent.architecture,
                    defaults={k: v for k, v in parent.defaults.items() if k != "disk_bytes"},
                    cloud_init=parent.cloud_init, user=parent.user, labels=merged, created=created,
                    created_by=self.created_by, comment=self.message, progress=byte_progress,
                )
            if snapshot is None:
                overlay = disk
            else:
                overlay = work.path / "top.qcow2"
                convert_disk(disk, overlay, snapshot=snapshot, backing=parent.top_layer.resolve(), force_share=live)
            return store.add_layer(parent.id, overlay, self.ref, self.message, created=created,
                                   created_by=self.created_by, labels=self.labels, progress=byte_progress)


def history(session: Session, ref: str) -> list[dict]:
    """``image history``: the image's disk layers, newest first, with size and origin."""
    store = session.store
    image = store.resolve(ref)
    sizes = {d["digest"]: d["size"] for d in image.manifest["layers"]}
    entries = {e.get("layer"): e for e in image.config.get("history", [])}
    by_layers = {im.layer_digests: im for im in store.images()}
    rows = []
    for i, digest in enumerate(image.layer_digests):
        entry = entries.get(digest, {})
        owner = by_layers.get(tuple(image.layer_digests[: i + 1]))
        rows.append({
            "layer": digest,
            "image": owner.id if owner else None,
            "image_tags": list(owner.repo_tags) if owner else [],
            "created": entry.get("created"),
            "created_by": entry.get("created_by", ""),
            "comment": entry.get("comment", ""),
            "size": sizes.get(digest),
        })
    rows.reverse()
    return rows
