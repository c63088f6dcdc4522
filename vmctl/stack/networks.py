"""A stack's private networks: the libvirt network XML of system mode (no I/O here) and the
hosts entries every VM of a stack gets.

Hosted mode needs nothing on the host: each network is a multicast group on 127.0.0.1 that the
QEMU processes of its VMs join (a socket netdev with ``localaddr=127.0.0.1``: frames never leave the
loopback interface, no bridge, tap or root needed). System mode makes one libvirt network per stack
network: NAT (``internal: true``: isolated, no forward) with the gateway on .1, a DHCP reservation
per VM (its MAC, name and the address the stack gave it) and no DHCP range, so nothing else gets an
address there.
"""

from __future__ import annotations

import hashlib
import ipaddress

from lxml import etree

from vmctl.stack.spec import NetworkSpec, StackSpec
from vmctl.stack.state import NetworkState, StackState


def host_xml(mac: str, address: str, hostname: str) -> str:
    """A ``<host>`` DHCP reservation (for `vmctl.backend.networks.add_dhcp_host`)."""
    return etree.tostring(etree.Element("host", mac=mac, name=hostname, ip=address), encoding="unicode")


def subnets_in_use(definitions: dict[str, str], own: set[str]) -> set[ipaddress.IPv4Network]:
    """The IPv4 subnets of the daemon's networks other than `own` (a new one must not overlap them)."""
    out = set()
    for name, xml in definitions.items():
        if name in own:
            continue
        for ip in etree.fromstring(xml.encode()).iterfind("ip"):
            try:
                prefix = ip.get("prefix") or ip.get("netmask")
                out.add(ipaddress.ip_network(f"{ip.get('address')}/{prefix}", strict=False))
            except ValueError:
                continue   # IPv6 or a form we do not read: it cannot clash with an IPv4 /24
    return {n for n in out if n.version == 4}


def reserved_macs(definition: str) -> set[str]:
    """The MACs a libvirt network's XML has DHCP reservations for."""
    root = etree.fromstring(definition.encode())
    return {h.get("mac", "").lower() for h in root.iterfind("ip/dhcp/host")}


def network_xml(spec: NetworkSpec, net: NetworkState, hosts: list[tuple[str, str, str]]) -> str:
    """The libvirt network of stack network `spec` with the DHCP reservations `hosts`
    (mac, address, hostname)."""
    subnet = ipaddress.ip_network(net.subnet)
    root = etree.Element("network")
    etree.SubElement(root, "name").text = net.libvirt
    if not spec.internal:
        etree.SubElement(root, "forward", mode="nat")
    etree.SubElement(root, "bridge", name=net.bridge, stp="on", delay="0")
    ip = etree.SubElement(root, "ip", address=str(subnet[1]), netmask=str(subnet.netmask))
    dhcp = etree.SubElement(ip, "dhcp")
    for mac, address, hostname in hosts:
        etree.SubElement(dhcp, "host", mac=mac, name=hostname, ip=address)
    return etree.tostring(root, encoding="unicode")


def reservations(spec: StackSpec, st: StackState, network: str) -> list[tuple[str, str, str]]:
    """(mac, address, hostname) of every VM of the file on `network`."""
    out = []
    for short, vm in spec.vms.items():
        if any(n == network for n, _ in vm.networks):
            vs = st.vms[short]
            out.append((vs.macs[network], vs.addresses[network], spec.vm_name(short)))
    return out


def hosts_entries(spec: StackSpec, st: StackState, short: str) -> list[str]:
    """The ``/etc/hosts`` lines of VM `short`: every VM it shares a network with (itself too), by
    its short name and its vmctl name, at its address on the first network they share."""
    mine = [n for n, _ in spec.vms[short].networks]
    out = []
    for other, vm in spec.vms.items():
        theirs = {n for n, _ in vm.networks}
        shared = next((n for n in mine if n in theirs), None)
        if shared is not None:
            out.append(f"{st.vms[other].addresses[shared]} {other} {spec.vm_name(other)}")
    return out


def hosts_digest(entries: list[str]) -> str:
    """What a VM's record keeps of the hosts list it has (`up` pushes a changed one)."""
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
