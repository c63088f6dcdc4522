"""The network: hosted user-mode networking with forwards on 127.0.0.1, or a NIC on a libvirt
network or host bridge.

Hosted networking is written
- as ``<interface type='user'><backend type='passt'/><portForward address='127.0.0.1'>`` when the
  caller says libvirt's passt backend works (``passt_supported``) and no ``restrict`` is asked
  (libvirt's passt XML has no equivalent of slirp's ``restrict=on``, and silently dropping an
  isolation the user asked for is not acceptable);
- otherwise as ``<qemu:commandline>``: ``-netdev user,id=vmctl0[,restrict=on],hostfwd=...`` and
  ``-device virtio-net-pci,netdev=vmctl0,bus=pcie.0,addr=0x1c,mac=...,romfile=``.

libvirt 9.0.0 lists passt in its release notes, but its XML parser refuses
``<backend type='passt'>`` ("Invalid value for attribute 'type' in element 'backend'"; checked on
this project's Debian 12 hosts, and libvirt issue #462), hence the qemu:commandline form there.

The device address: libvirt never learns about a device given on QEMU's command line, so the slot
must be one libvirt never fills. On q35 it puts pcie-root-ports (and integrated devices) on the root
bus from slot 0x01 upward and reserves 0x1f (ICH9 LPC/SATA/SMBus), 0x1e (DMI-PCI bridge), 0x1d (ICH9
USB), 0x1b (ICH9 audio): 0x1c is free of all of them. Verified on libvirt 9.0 / QEMU 7.2: defined
through qemu:///session, started, ``info pci`` shows the NIC at bus 0 device 28, ``info usernet``
the forwards bound to 127.0.0.1. ``romfile=`` skips the iPXE option ROM (vmctl never net-boots).
The slot is a profile key (``[network] user_pci_slot``) in case a profile adds such devices.
"""

from __future__ import annotations

from vmctl.core.plan.inputs import DomainInputs
from vmctl.core.ports import LOOPBACK
from vmctl.profiles import Profile
from vmctl.xml.domain import Domain, Interface

NETDEV_ID = "vmctl0"
_MODELS = {"virtio": "virtio-net-pci", "e1000e": "e1000e", "e1000": "e1000", "rtl8139": "rtl8139"}


def _pci_bus(machine: str) -> str:
    return "pcie.0" if machine == "q35" or machine.startswith("pc-q35") else "pci.0"


def user_netdev_args(profile: Profile, i: DomainInputs, mac: str) -> list[str]:
    """QEMU arguments for user-mode networking with forwards on 127.0.0.1 (no passt), and for the
    VM's stack segments: multicast socket netdevs bound to 127.0.0.1 in functions 1.. of the same
    slot (the user NIC is function 0, so it probes first and keeps the first interface name)."""
    netdev = [f"user,id={NETDEV_ID}"]
    if i.restrict:
        netdev.append("restrict=on")
    netdev.append(f"hostfwd=tcp:{i.forward_address}:{i.ssh_host_port}-:22")
    for fwd in i.ports:
        netdev.append(f"hostfwd={fwd.proto}:{forward_address(i, fwd)}:{fwd.host_port}-:{fwd.guest_port}")
    bus, slot, model = _pci_bus(profile.machine.machine), profile.network.user_pci_slot, _MODELS[profile.network.model]
    multi = ".0,multifunction=on" if any(s.group for s in i.segments) else ""
    device = f"{model},netdev={NETDEV_ID},bus={bus},addr=0x{slot:02x}{multi},mac={mac},romfile="
    args = ["-netdev", ",".join(netdev), "-device", device]
    for n, seg in enumerate(s for s in i.segments if s.group):
        sid = f"vmctls{n + 1}"
        args += ["-netdev", f"socket,id={sid},mcast={seg.group}:{seg.port},localaddr={LOOPBACK}",
                 "-device", f"{model},netdev={sid},bus={bus},addr=0x{slot:02x}.{n + 1},mac={seg.mac},romfile="]
    return args


def forward_address(i: DomainInputs, fwd) -> str:
    """Where a forward listens: the loopback address the user wrote, or -- for a VM on a vmctl
    host, which the client reaches over the network -- the host's address."""
    return fwd.host_address if i.forward_address == LOOPBACK else i.forward_address


def _interface(p: Profile, i: DomainInputs) -> Interface:
    iface = Interface()
    iface.mac = i.nic_mac
    iface.model = p.network.model
    if i.user_net:
        iface.type = "user"
        by_proto: dict[str, list[tuple[int, int]]] = {"tcp": [(i.ssh_host_port, 22)]}
        for fwd in i.ports:
            by_proto.setdefault(fwd.proto, []).append((fwd.host_port, fwd.guest_port))
        for proto, pairs in by_proto.items():
            pf = iface.add_port_forward(proto, i.forward_address)
            for host, guest in pairs:
                pf.add_range(host, guest)
        iface.backend_type = "passt"
    elif i.network == "network":
        iface.type = "network"
        iface.source_network = i.network_name
    else:
        iface.type = "bridge"
        iface.source_bridge = i.network_name
    return iface


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    if i.user_net and not i.use_passt:
        d.qemu_commandline.args = user_netdev_args(p, i, i.nic_mac)
    else:
        d.devices.add(_interface(p, i))
    for seg in i.segments:
        if seg.network:
            iface = Interface()
            iface.type, iface.source_network, iface.mac, iface.model = "network", seg.network, seg.mac, p.network.model
            d.devices.add(iface)
