"""Shared host directories: a ``<filesystem>`` per volume, and the shared memory virtio-fs needs
(virtiofsd maps the guest's RAM, so it must be a shareable memfd)."""

from __future__ import annotations

from vmctl.core.plan.inputs import DomainInputs
from vmctl.profiles import Profile
from vmctl.xml.domain import Domain, Filesystem

VIRTIOFS_QUEUE = 1024   # requests in flight; virtiofsd's default of 128 starves large reads


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    for m in i.volumes:
        fs = Filesystem()
        fs.type = "mount"
        if m.transport == "virtiofs":
            fs.accessmode = "passthrough"   # the only mode virtio-fs has: uids pass through
            fs.driver_type = "virtiofs"
            fs.driver_queue = VIRTIOFS_QUEUE
        else:
            # squash: QEMU (an unprivileged user) serves files as itself and ignores the chown a
            # guest asks for, instead of failing it; passthrough would need QEMU to be root.
            fs.accessmode = "squash"
            fs.multidevs = "remap"      # inode numbers stay unique across nested host mounts
            fs.driver_type = "path"
        fs.source_dir = m.shared_path
        fs.target_dir = m.tag
        if m.readonly and m.transport == "9p":
            fs.readonly = True   # virtio-fs: the bind mount it shares is read-only instead
        d.devices.add(fs)
    if any(m.transport == "virtiofs" for m in i.volumes):
        d.memory_source_type = "memfd"
        d.memory_access_mode = "shared"
