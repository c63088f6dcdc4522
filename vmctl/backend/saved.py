"""A running machine saved to a file and restored from one (libvirt ``virDomainSave`` /
``virDomainRestoreFlags``), and the few QMP calls a warm start needs. Errors translated.

The policy — what a checkpoint holds, when a clone may be restored, its identity — is
`vmctl.core.checkpoint` and `vmctl.core.warm`; this module only makes the calls.
"""

from __future__ import annotations

import libvirt
from lxml import etree

from vmctl.backend.errors import libvirt_errors
from vmctl.backend.snapshots import qmp


def save(backend, name: str, path: str) -> None:
    """Save running domain `name`'s memory and device state to `path` (libvirt's save-image
    format, raw); the domain is stopped afterwards, its disks flushed."""
    dom = backend._domain(name)
    with libvirt_errors(f"save {name}"):
        dom.saveFlags(path, None, libvirt.VIR_DOMAIN_SAVE_RUNNING)


def restore(backend, path: str, *, paused: bool) -> None:
    """Start the domain described by save image `path` from the state it holds (the domain of
    that name and UUID stays defined as it was)."""
    flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
    with libvirt_errors("restore the checkpoint"):
        backend.raw.restoreFlags(path, None, flags)


def live_xml(backend, name: str) -> str:
    """The running domain's XML with everything libvirt needs to start it again (migratable)."""
    dom = backend._domain(name)
    with libvirt_errors(f"read {name}'s definition"):
        return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)


def inactive_xml(backend, name: str) -> str:
    """The persistent definition, with what a restore must carry (migratable, secure)."""
    dom = backend._domain(name)
    with libvirt_errors(f"read {name}'s definition"):
        return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
                           | libvirt.VIR_DOMAIN_XML_INACTIVE)


def channel_path(backend, name: str, target: str) -> str | None:
    """Where the host end of running domain `name`'s virtio-serial channel `target` listens."""
    dom = backend._domain(name)
    with libvirt_errors(f"read {name}'s channels"):
        root = etree.fromstring(dom.XMLDesc(0).encode())
    for ch in root.iterfind("devices/channel"):
        if ch.get("type") == "unix" and ch.find("target") is not None and ch.find("target").get("name") == target:
            src = ch.find("source")
            return src.get("path") if src is not None else None
    return None


def nics(backend, name: str) -> list[str]:
    """QEMU's names of the running domain's NICs."""
    return [f["name"] for f in qmp(backend, name, "query-rx-filter") or [] if isinstance(f, dict) and "name" in f]


def set_links(backend, name: str, up: bool) -> list[str]:
    """Set every NIC's link up or down (the guest sees carrier change; no packet passes while
    down); return the NICs' names."""
    names = nics(backend, name)
    for nic in names:
        qmp(backend, name, "set_link", {"name": nic, "up": up})
    return names


def qemu_version(backend) -> str:
    """The hypervisor's version as ``major.minor.micro``."""
    with libvirt_errors("read QEMU's version"):
        v = backend.raw.getVersion()
    return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"
