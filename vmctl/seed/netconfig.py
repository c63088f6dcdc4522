"""A static address for the guest's NIC as cloud-init network-config (version 2), from ``--ip``.

The NIC is matched by its MAC (vmctl chose it, so it is known before boot), never by an interface
name the guest's udev decides. Addresses are parsed with :mod:`ipaddress`, so nothing but an
address reaches the YAML.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from vmctl.errors import UsageError

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class StaticAddress:
    """``address`` as ``A.B.C.D/PREFIX`` on the NIC with ``mac``; a default route via ``gateway``."""

    mac: str
    address: str
    gateway: str | None = None
    dns: tuple[str, ...] = field(default_factory=tuple)

    def config(self) -> dict:
        eth: dict = {"match": {"macaddress": self.mac}, "addresses": [self.address]}
        if self.gateway:
            eth["routes"] = [{"to": "0.0.0.0/0" if ":" not in self.gateway else "::/0", "via": self.gateway}]
        if self.dns:
            eth["nameservers"] = {"addresses": list(self.dns)}
        return {"version": 2, "ethernets": {"nic0": eth}}

    @property
    def host(self) -> str:
        """The address without its prefix (where SSH reaches the guest)."""
        return self.address.split("/", 1)[0]


def parse_static(mac: str, ip: str, gateway: str | None = None, dns: tuple[str, ...] = ()) -> StaticAddress:
    """Check ``--ip ADDR/PREFIX`` (``--gateway``, ``--dns``); raise UsageError on anything else."""
    if not _MAC.fullmatch(mac):
        raise UsageError(f"invalid MAC address {mac!r}")
    try:
        iface = ipaddress.ip_interface(ip)
    except ValueError:
        raise UsageError(f"invalid --ip {ip!r}: use ADDRESS/PREFIX, e.g. 192.168.122.10/24") from None
    if "/" not in ip:
        raise UsageError(f"--ip {ip!r} needs a prefix length, e.g. {ip}/24")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address) and iface.network.prefixlen < 31:
        raise UsageError(f"--ip {ip}: that is the network's own or broadcast address")
    gw = None
    if gateway:
        try:
            gw_ip = ipaddress.ip_address(gateway)
        except ValueError:
            raise UsageError(f"invalid --gateway {gateway!r}") from None
        if gw_ip not in iface.network:
            raise UsageError(f"--gateway {gateway} is not in {iface.network}")
        gw = str(gw_ip)
    servers = []
    for d in dns:
        try:
            servers.append(str(ipaddress.ip_address(d)))
        except ValueError:
            raise UsageError(f"invalid --dns {d!r}") from None
    return StaticAddress(mac, str(iface), gw, tuple(servers))


# The guest side of a stack's networks, as seed bootcmd argv lists (run at every boot by cloud-init
# and by vmctl's tiny guest alike): the shell text is fixed, the MAC, address and host lines are its
# arguments ("$1", "$@"), never part of it. The NIC is found by its MAC, not by a name.
_ADDRESS_SCRIPT = ('for d in /sys/class/net/*; do read -r a <"$d/address" || continue; [ "$a" = "$1" ] || continue; '
                   'n=${d##*/}; ip link set "$n" up; ip addr add "$2" dev "$n" 2>/dev/null || true; done')
# /etc/hosts of a stack VM: the list `vmctl up` last pushed (kept under the VM's hostname, so a VM
# made from a commit of this one does not take it), else the seed's own. $0 is the hostname.
HOSTS_KEPT = "/var/lib/vmctl-stack"
_HOSTS_SCRIPT = (f'k={HOSTS_KEPT}/"$0".hosts; if [ -s "$k" ]; then cp "$k" /etc/hosts.vmctl; '
                 'else printf "%s\\n" "$@" >/etc/hosts.vmctl; fi && mv /etc/hosts.vmctl /etc/hosts')
_PUSH_SCRIPT = (f'k={HOSTS_KEPT}/"$0".hosts; mkdir -p {HOSTS_KEPT} && printf "%s\\n" "$@" >"$k.new" && '
                'mv "$k.new" "$k" && cp "$k" /etc/hosts.vmctl && mv /etc/hosts.vmctl /etc/hosts')
_HOSTS_ENTRY = re.compile(r"[0-9.]{7,15}( [a-z0-9][a-z0-9.-]{0,252})+")


def address_command(mac: str, address: str) -> list[str]:
    """The bootcmd that puts ``ADDR/PREFIX`` `address` on the NIC with `mac`."""
    if not _MAC.fullmatch(mac):
        raise UsageError(f"invalid MAC address {mac!r}")
    iface = ipaddress.ip_interface(address)
    return ["sh", "-c", _ADDRESS_SCRIPT, "vmctl-address", mac, str(iface)]


def hosts_command(hostname: str, entries: list[str], *, push: bool = False) -> list[str]:
    """The bootcmd that writes the guest's whole ``/etc/hosts`` at every boot: localhost,
    `hostname` on 127.0.1.1 (as cloud-init's template does) and `entries` ("ADDRESS NAME..."
    lines) -- or, once `up` has pushed a newer list (`push`: the command that does, run over SSH),
    that list."""
    for e in entries:
        if not _HOSTS_ENTRY.fullmatch(e):
            raise UsageError(f"invalid hosts entry {e!r}")
    lines = ["127.0.0.1 localhost", f"127.0.1.1 {hostname}", *entries,
             "::1 localhost ip6-localhost ip6-loopback"]
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{0,62}", hostname):
        raise UsageError(f"invalid hostname {hostname!r}")
    return ["sh", "-c", _PUSH_SCRIPT if push else _HOSTS_SCRIPT, hostname, *lines]
