"""What vmctl asks a libvirt host when it works with several: the node's capacity, every domain's
XML in one pass, vmctl's metadata element, and migration between two daemons."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from vmctl.backend.errors import libvirt_errors, translate
from vmctl.errors import LibvirtError, NotFoundError

VMCTL_NS = "https://vmctl.dev/xmlns/instance/1"   # vmctl.xml.base.VMCTL_NS (a test keeps them equal)


@dataclass(frozen=True)
class NodeFacts:
    """A host's size and what is free on it, as its libvirt reports them."""
    cpus: int
    memory_bytes: int        # physical memory
    available_bytes: int     # free + buffers + cached (what a new QEMU can have without swapping)
    hostname: str


def node_facts(backend) -> NodeFacts:
    conn = backend.raw
    with libvirt_errors("node info"):
        info = conn.getInfo()            # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
        stats = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)   # KiB
        hostname = conn.getHostname()
    available = sum(stats.get(k, 0) for k in ("free", "buffers", "cached")) * 1024
    total = int(stats["total"]) * 1024 if "total" in stats else int(info[1]) << 20
    return NodeFacts(cpus=int(info[2]), memory_bytes=total, available_bytes=available, hostname=hostname)


def domain_xmls(backend) -> dict[str, tuple[str, bool]]:
    """Every domain's name -> (its XML: the live one for a running domain, active?)."""
    with libvirt_errors("list domains"):
        out = {}
        for dom in backend.raw.listAllDomains(0):
            try:
                out[dom.name()] = (dom.XMLDesc(0), bool(dom.isActive()))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:   # undefined meanwhile
                    raise
        return out


def set_metadata(backend, name: str, element_xml: str, *, live: bool) -> None:
    """Replace vmctl's ``<metadata>`` element of domain `name` (persistent definition, and the
    running domain's when `live`)."""
    try:
        dom = backend.raw.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFoundError(f"no such VM: {name}") from None
        raise translate(exc, name) from exc
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
    with libvirt_errors(f"record of {name}"):
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, element_xml, "vmctl", VMCTL_NS, flags)


def migratable_xml(backend, name: str, *, inactive: bool = False) -> str:
    """The domain's XML as libvirt hands it to another host (``VIR_DOMAIN_XML_MIGRATABLE``)."""
    flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
    if inactive:
        flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
    try:
        dom = backend.raw.lookupByName(name)
    except libvirt.libvirtError as exc:
        raise translate(exc, name) from exc
    with libvirt_errors(name):
        return dom.XMLDesc(flags)


def migrate(src, dst, name: str, *, dest_xml: str, persist_xml: str, uri: str, live: bool,
            copy_disks: tuple[str, ...], offline: bool = False) -> None:
    """Move domain `name` from daemon `src` to daemon `dst` with libvirt's migration (the client
    drives both sides). `uri` is where the destination QEMU listens (``tcp://ADDRESS``);
    `copy_disks` are the disks whose top layer is copied over NBD (non-shared storage, backing
    chain already on the destination); the domain becomes persistent there and is undefined here.
    libvirt leaves the domain running on `src` when anything fails before the switch-over."""
    try:
        dom = src.raw.lookupByName(name)
    except libvirt.libvirtError as exc:
        raise translate(exc, name) from exc
    flags = libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    params: dict = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml,
                    libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: persist_xml}
    if offline:
        flags |= libvirt.VIR_MIGRATE_OFFLINE
    else:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = uri
        if live:
            flags |= libvirt.VIR_MIGRATE_LIVE
        if copy_disks:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(copy_disks)
    try:
        dom.migrate3(dst.raw, params, flags)
    except libvirt.libvirtError as exc:
        message = exc.get_error_message() or str(exc)
        raise LibvirtError(f"libvirt's migration failed: {message}") from exc
