"""Where a vmctl host keeps its VMs, and the only place that reaches that host's files.

A host (``vmctl host add``) is a libvirt daemon and a data root on its machine; vmctl puts
nothing there but through libvirt itself, so it needs no shell, agent or shared file system:

    <root>/images/layers/   storage pool vmctl-layers-<tag>: <hex>.qcow2 image layers (relative
                            backing names, as in the local store), <hex>.blob kernels and initrds
    <root>/instances/       storage pool vmctl-instances-<tag>: <name>.qcow2 (overlay on a layer,
                            made by the host's libvirt, its backing name relative:
                            ../images/layers/<hex>.qcow2), <name>.seed.iso, <name>.serial.log,
                            <name>.snapshots.json (vmctl's record of the VM's snapshots, as
                            snapshots.json in a local instance directory; the snapshots
                            themselves are internal, in the overlay)

(`tag` is the root's hash: two roots on one daemon get two pairs of pools.) A VM's instance record
is not a file but ``<vmctl:record>`` in its domain's metadata: ``ls``/``inspect`` read the host's
own domains, and a migrated domain takes its record with it.

Files QEMU opens are given to QEMU's user on that host (its DAC base label, read from the host's
capabilities) by the volumes' permissions, since vmctl's domains are not relabelled (see
``vmctl/core/plan/identity.py``): overlays and seeds 0600, layers and kernels 0440 to QEMU's group.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path

from vmctl.backend import pools
from vmctl.backend.fleet import domain_xmls, set_metadata
from vmctl.core.records import InstanceRecord
from vmctl.errors import IntegrityError, NotFoundError, ResourceError
from vmctl.names import check_name
from vmctl.storage import qcow2_snapshots

MAX_LOG = 64 << 20        # the most of a serial log vmctl reads back from a host
MAX_RECORD = 256 << 10    # the longest <vmctl:record> taken from a host's domain
SIDECAR_BYTES = 64 << 10  # a VM's snapshot sidecar on a host: hundreds of snapshots' entries


def pool_tag(root: str) -> str:
    return hashlib.sha256(root.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Staged:
    """What bringing an image to a host did."""
    sent: int          # bytes uploaded
    layers_sent: int
    layers_present: int


class HostPlace:
    """One host's files and records, through its libvirt (`session.backend`)."""

    def __init__(self, session):
        if session.host is None:
            raise ValueError("HostPlace needs a session on a host")
        self.session = session
        self.host = session.host
        root = self.host.root
        tag = pool_tag(root)
        self.layers_pool, self.instances_pool = f"vmctl-layers-{tag}", f"vmctl-instances-{tag}"
        self.layers_dir = posixpath.join(root, "images", "layers")
        self.instances_dir = posixpath.join(root, "instances")
        self._owner: tuple[int, int] | None = None

    @property
    def backend(self):
        return self.session.backend

    @property
    def qemu_owner(self) -> tuple[int, int]:
        """(uid, gid) QEMU runs as on the host (root's when the host says nothing else)."""
        if self._owner is None:
            self._owner = pools.qemu_owner(self.backend) or (0, 0)
        return self._owner

    # ---- places -------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the host's pools (idempotent): what ``host add`` prepares."""
        pools.ensure_pool(self.backend, self.layers_pool, self.layers_dir)
        pools.ensure_pool(self.backend, self.instances_pool, self.instances_dir)

    def disk(self, name: str) -> str:
        return posixpath.join(self.instances_dir, f"{check_name(name, 'VM name')}.qcow2")

    def seed(self, name: str) -> str:
        return posixpath.join(self.instances_dir, f"{check_name(name, 'VM name')}.seed.iso")

    def serial_log(self, name: str) -> str:
        return posixpath.join(self.instances_dir, f"{check_name(name, 'VM name')}.serial.log")

    def layer(self, digest: str) -> str:
        return posixpath.join(self.layers_dir, _layer_name(digest))

    def overlay_backing(self, digest: str) -> str:
        """The backing name written into a VM's overlay: relative to the instances directory, so
        an overlay copied to another host (another data root) still finds its layer there."""
        return posixpath.join("..", "images", "layers", _layer_name(digest))

    def blob(self, path: Path | str) -> str:
        """Where a kernel or initrd blob of the local store (``blobs/sha256/<hex>``) is on the host."""
        return posixpath.join(self.layers_dir, f"{Path(path).name}.blob")

    def snapshot_sidecar(self, name: str) -> str:
        return posixpath.join(self.instances_dir, f"{check_name(name, 'VM name')}.snapshots.json")

    def instance_files(self, name: str) -> list[str]:
        """The volume names of VM `name` in the instances pool."""
        return [posixpath.basename(p) for p in (self.disk(name), self.seed(name), self.serial_log(name),
                                                  self.snapshot_sidecar(name))]

    # ---- images ----------------------------------------------------------------------------------
    def wanted(self, image) -> list[tuple[str, Path, str]]:
        """(volume name, local file, digest or None) of everything a VM of `image` opens on the host."""
        out = [(_layer_name(d), Path(p), d) for d, p in zip(image.layer_digests, image.layers)]
        for blob in (image.kernel, image.initrd):
            if blob is not None:
                out.append((f"{Path(blob).name}.blob", Path(blob), f"sha256:{Path(blob).name}"))
        return out

    def stage_image(self, image, progress=None) -> Staged:
        """Upload what the host lacks of `image` (layers base first, kernel, initrd) from the local
        store; what the host holds whole already is skipped. `progress(phase, fraction)`."""
        present = pools.volumes(self.backend, self.layers_pool)
        wanted = self.wanted(image)
        missing = [(n, p) for n, p, _d in wanted if not _whole(present.get(n), p)]
        total = sum(os.path.getsize(p) for _n, p in missing) or 1
        sent = 0
        for vol, path in missing:
            if vol in present:   # a copy cut short by a killed upload: made again
                pools.delete(self.backend, self.layers_pool, vol)
            size = os.path.getsize(path)
            base = sent

            def step(done: int, base=base, vol=vol) -> None:
                if progress:
                    progress(f"{self.host.name}: sending {vol[:19]}", (base + done) / total)

            with open(path, "rb") as fh:
                pools.upload(self.backend, self.layers_pool, vol, fh, size, mode=0o440,
                             owner=(0, self.qemu_owner[1]), progress=step)
            sent += size
        return Staged(sent=sent, layers_sent=len(missing), layers_present=len(wanted) - len(missing))

    def layers_present(self, digests) -> int:
        """How many of `digests` (layers) the host holds (by name; sizes are not known here)."""
        names = set(pools.volumes(self.backend, self.layers_pool))
        return sum(1 for d in digests if _layer_name(d) in names)

    # ---- a VM's files ------------------------------------------------------------------------------
    def make_overlay(self, name: str, top_digest: str, capacity: int | None) -> None:
        """The VM's disk: a qcow2 overlay on the image's top layer, made by the host's libvirt;
        `capacity` None keeps the layer's virtual size."""
        top = pools.volume(self.backend, self.layers_pool, _layer_name(top_digest), refresh=True)
        if top is None:
            raise NotFoundError(f"{self.host.name} has no layer {top_digest}")
        pools.create_overlay(self.backend, self.instances_pool, posixpath.basename(self.disk(name)),
                             self.overlay_backing(top_digest), max(capacity or 0, top.capacity),
                             owner=self.qemu_owner)

    def put_seed(self, name: str, local: Path) -> None:
        with open(local, "rb") as fh:
            pools.upload(self.backend, self.instances_pool, posixpath.basename(self.seed(name)), fh,
                         os.path.getsize(local), mode=0o400, owner=self.qemu_owner)

    def remove_files(self, name: str) -> None:
        """Delete VM `name`'s overlay, seed and serial log (those that exist) from the host."""
        pools.volumes(self.backend, self.instances_pool)   # refresh: the log appears at first start
        for vol in self.instance_files(name):
            pools.delete(self.backend, self.instances_pool, vol)

    def download_disk(self, name: str, dest: Path) -> int:
        """VM `name`'s overlay streamed into new file `dest` (at most its size on the host, and
        only when this machine has room for it); bytes written."""
        vol_name = posixpath.basename(self.disk(name))
        vol = pools.volume(self.backend, self.instances_pool, vol_name, refresh=True)
        if vol is None:
            raise NotFoundError(f"{self.host.name} has no disk of {name}")
        free = shutil.disk_usage(dest.parent).free
        if vol.physical + (64 << 20) > free:
            raise ResourceError(f"the disk of {name} ({vol.physical >> 20} MiB) does not fit in {dest.parent} "
                                f"({free >> 20} MiB free); nothing was changed")
        with open(dest, "xb") as fh:
            # the size it had when asked: a running guest may grow it meanwhile (what a snapshot
            # holds is in that prefix already)
            return pools.download(self.backend, self.instances_pool, vol_name, fh.write, length=vol.physical,
                                  limit=vol.physical)

    def snapshot_table(self, name: str) -> dict[str, dict]:
        """The internal snapshot table of VM `name`'s overlay, read from the host (its header and
        table only; `vmctl.storage.qcow2_snapshots`); {} when the host has no such disk."""
        vol_name = posixpath.basename(self.disk(name))
        if pools.volume(self.backend, self.instances_pool, vol_name) is None:
            return {}
        return qcow2_snapshots.read_table(
            lambda offset, length: pools.read_range(self.backend, self.instances_pool, vol_name, offset, length),
            f"{self.host.name}:{vol_name}")

    def load_sidecar(self, name: str) -> bytes | None:
        """The bytes of VM `name`'s snapshot sidecar on the host (None when it has none)."""
        vol_name = posixpath.basename(self.snapshot_sidecar(name))
        if pools.volume(self.backend, self.instances_pool, vol_name) is None:
            return None
        return pools.read_range(self.backend, self.instances_pool, vol_name, 0, SIDECAR_BYTES)

    def save_sidecar(self, name: str, data: bytes) -> None:
        """Write VM `name`'s snapshot sidecar on the host: a fixed-size volume written over in place
        (padded with spaces, which JSON ignores), never deleted and made again."""
        if len(data) > SIDECAR_BYTES:
            raise ResourceError(f"the snapshot records of {name} would exceed {SIDECAR_BYTES} bytes; "
                                "remove snapshots first")
        pools.rewrite(self.backend, self.instances_pool, posixpath.basename(self.snapshot_sidecar(name)),
                      data.ljust(SIDECAR_BYTES, b" "))

    def free_bytes(self) -> int:
        """Bytes free where the host keeps its VMs' disks."""
        return pools.available(self.backend, self.instances_pool)

    def disk_usage(self, name: str) -> int:
        vol = pools.volume(self.backend, self.instances_pool, posixpath.basename(self.disk(name)))
        return vol.physical if vol else 0

    def log_size(self, name: str) -> int | None:
        """Bytes in VM `name`'s serial log on the host (None before its first start)."""
        vol = pools.volume(self.backend, self.instances_pool, posixpath.basename(self.serial_log(name)),
                           refresh=True)
        return None if vol is None else vol.physical

    def read_log(self, name: str, sink, offset: int = 0) -> int:
        """The VM's serial log from `offset` into `sink`; bytes read (0 when there is none yet)."""
        vol = pools.volume(self.backend, self.instances_pool, posixpath.basename(self.serial_log(name)),
                           refresh=True)
        if vol is None or vol.physical <= offset:
            return 0
        return pools.download(self.backend, self.instances_pool, vol.name, sink, offset=offset,
                              limit=MAX_LOG)

    # ---- records ---------------------------------------------------------------------------------
    def records(self) -> list[InstanceRecord]:
        """The record of every domain of this host that vmctl made (from their metadata), by name."""
        out = []
        for name, (xml, _active) in sorted(domain_xmls(self.backend).items()):
            rec = record_from_xml(xml, f"{self.host.name}:{name}")
            if rec is not None:
                out.append(rec)
        return out

    def record(self, name: str) -> InstanceRecord:
        """VM `name`'s record from its domain; NotFoundError when the host has no such vmctl VM."""
        try:
            xml = self.backend.xml(name)
        except NotFoundError:
            raise NotFoundError(f"no such VM on {self.host.name}: {name}") from None
        rec = record_from_xml(xml, f"{self.host.name}:{name}")
        if rec is None:
            raise NotFoundError(f"{name} on {self.host.name} was not made by vmctl (it has no vmctl record)")
        return rec

    def save_record(self, rec: InstanceRecord, *, live: bool) -> None:
        """Write `rec` into its domain's metadata (and the running domain's when `live`)."""
        from vmctl.xml.domain import Domain  # lazy: lxml and the model, only when a record changes

        d = Domain.from_xml(self.backend.xml(rec.name, inactive=True))
        d.metadata.record = rec.to_json()
        set_metadata(self.backend, rec.name, d.metadata.to_xml(), live=live)


def _layer_name(digest: str) -> str:
    return f"{digest.split(':', 1)[-1]}.qcow2"


def _whole(vol, path: Path) -> bool:
    """A volume already on the host is taken as the file when it has the file's size: uploads
    write from the start, so a killed one leaves a shorter file (which is sent again)."""
    return vol is not None and vol.physical == os.path.getsize(path)


def record_from_xml(xml: str, where: str) -> InstanceRecord | None:
    """The ``<vmctl:record>`` of a domain's XML, or None for a domain vmctl did not make; a record
    that does not parse is an IntegrityError naming `where`."""
    from lxml import etree  # lazy: lxml, only for commands that read records from a host

    from vmctl.xml.base import VMCTL_NS  # lazy: as above (the XML model's base imports lxml)

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    root = etree.fromstring(xml.encode(), parser)
    el = root.find(f"metadata/{{{VMCTL_NS}}}instance/{{{VMCTL_NS}}}record")
    if el is None or not el.text:
        return None
    if len(el.text) > MAX_RECORD:
        raise IntegrityError(f"the vmctl record of {where} is larger than {MAX_RECORD} bytes")
    return InstanceRecord.from_bytes(el.text.encode(), where)
