"""libvirt networks: the calls a stack's private networks need in system mode.

Each function is one libvirt operation on the connection of a `Backend`, its errors translated.
The XML is made by `vmctl.stack.networks` (no I/O there); what to make when is the stack's call.
"""

from __future__ import annotations

import libvirt

from vmctl.backend.connection import Backend
from vmctl.backend.errors import libvirt_errors, translate


def _lookup(backend: Backend, name: str) -> libvirt.virNetwork | None:
    try:
        return backend.raw.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise translate(exc, f"network {name}") from exc


def exists(backend: Backend, name: str) -> bool:
    return _lookup(backend, name) is not None


def active(backend: Backend, name: str) -> bool:
    net = _lookup(backend, name)
    with libvirt_errors(f"network {name}"):
        return bool(net is not None and net.isActive())


def xml(backend: Backend, name: str) -> str | None:
    """The network's persistent definition, or None when there is no such network."""
    net = _lookup(backend, name)
    if net is None:
        return None
    with libvirt_errors(f"network {name}"):
        return net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)


def define_and_start(backend: Backend, name: str, definition: str) -> None:
    """Define the network (validated against libvirt's schema) and start it; a network that
    cannot start is undefined again (nothing half-made)."""
    with libvirt_errors(f"define network {name}"):
        try:
            net = backend.raw.networkDefineXMLFlags(definition, libvirt.VIR_NETWORK_DEFINE_VALIDATE)
        except (AttributeError, TypeError):   # older bindings: no flags
            net = backend.raw.networkDefineXML(definition)
    try:
        with libvirt_errors(f"start network {name}"):
            net.create()
    except BaseException:
        with libvirt_errors(f"undefine network {name}"):
            net.undefine()
        raise


def start(backend: Backend, name: str) -> None:
    net = _lookup(backend, name)
    with libvirt_errors(f"start network {name}"):
        if net is not None and not net.isActive():
            net.create()


def add_dhcp_host(backend: Backend, name: str, host_xml: str) -> None:
    """Add a ``<host mac name ip>`` DHCP reservation, live (when active) and in the definition."""
    net = _lookup(backend, name)
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    with libvirt_errors(f"network {name}"):
        if net.isActive():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                   -1, host_xml, flags)


def remove(backend: Backend, name: str) -> None:
    """Stop and undefine the network; nothing when it does not exist."""
    net = _lookup(backend, name)
    if net is None:
        return
    with libvirt_errors(f"remove network {name}"):
        if net.isActive():
            net.destroy()
        net.undefine()


def definitions(backend: Backend) -> dict[str, str]:
    """Every network of the daemon (active or not): name -> its XML."""
    with libvirt_errors("list networks"):
        return {n.name(): n.XMLDesc(0) for n in backend.raw.listAllNetworks(0)}
