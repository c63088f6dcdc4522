"""``<filesystem>``: a host directory shared with the guest (virtio-fs or virtio-9p)."""

from __future__ import annotations

from vmctl.xml.base import Prop, XMLNode


class Filesystem(XMLNode):
    """A host directory the guest mounts by its tag (``target/@dir``).

    virtio-fs: ``driver/@type='virtiofs'``, accessmode passthrough, libvirt starts virtiofsd (needs
    shared guest memory). virtio-9p: ``driver/@type='path'``, served by QEMU itself; ``readonly``
    makes QEMU's export read-only (the host refuses writes whatever the guest mounts).
    """

    TAG = "filesystem"
    # virDomainFSDefFormat's child order
    ORDER = {"": ("driver", "binary", "source", "target", "readonly", "alias", "address")}

    type = Prop("@type", doc="mount")
    accessmode = Prop("@accessmode", doc="passthrough | mapped | squash")
    multidevs = Prop("@multidevs", doc="9p: remap inodes of nested host file systems")
    driver_type = Prop("driver/@type", doc="virtiofs | path")
    driver_queue = Prop("driver/@queue", "int", doc="virtio-fs request queue size")
    source_dir = Prop("source/@dir")
    target_dir = Prop("target/@dir", doc="the mount tag the guest names")
    readonly = Prop("readonly", "present")
