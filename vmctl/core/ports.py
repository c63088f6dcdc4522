"""Port forwards as users write them (``--port HOST:GUEST[/tcp|udp]``) and as vmctl keeps them.

Forwards only ever bind a loopback address of the host: a VM's services are reachable from this
machine, not from the network, unless the user sets up something else on purpose. A host address
may be written (``127.0.0.1:8080:80``) but anything that is not a loopback address is refused.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from vmctl.errors import UsageError

PROTOCOLS = ("tcp", "udp")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, order=True)
class PortForward:
    """One forward: host_address:host_port on the host -> guest_port in the guest."""
    host_port: int
    guest_port: int
    proto: str = "tcp"
    host_address: str = LOOPBACK

    def __post_init__(self) -> None:
        _check_port(self.host_port, "host port", str(self.host_port))
        _check_port(self.guest_port, "guest port", str(self.guest_port))
        if self.proto not in PROTOCOLS:
            raise UsageError(f"invalid protocol {self.proto!r}: use tcp or udp")
        _check_loopback(self.host_address, self.host_address)

    def __str__(self) -> str:
        return f"{self.host_address}:{self.host_port}->{self.guest_port}/{self.proto}"

    @property
    def spec(self) -> str:
        """The form `parse_port` reads back."""
        return f"{self.host_address}:{self.host_port}:{self.guest_port}/{self.proto}"


def _check_port(value: int, what: str, spec: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise UsageError(f"invalid port forward {spec!r}: {what} must be 1-65535")
    return value


def _check_loopback(address: str, spec: str) -> str:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise UsageError(
            f"invalid port forward {spec!r}: host address {address!r} is not an IPv4 address"
        ) from None
    if not ip.is_loopback:
        raise UsageError(
            f"invalid port forward {spec!r}: host address {address} is not a loopback address; "
            "forwards only listen on 127.0.0.0/8"
        )
    return address


def _parse_number(text: str, what: str, spec: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5:  # "²".isdigit() is True
        raise UsageError(f"invalid port forward {spec!r}: {what} {text!r} is not a number 1-65535")
    return _check_port(int(text), what, spec)


def parse_port(spec: str) -> PortForward:
    """Parse ``[ADDR:]HOST:GUEST[/tcp|/udp]`` into a PortForward (UsageError when invalid)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("invalid port forward '': use HOST:GUEST[/tcp|udp]")
    text = spec.strip()
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
        proto = proto.lower()
        if proto not in PROTOCOLS:
            raise UsageError(f"invalid port forward {spec!r}: protocol must be tcp or udp")
    parts = text.split(":")
    if len(parts) == 2:
        address, host, guest = LOOPBACK, parts[0], parts[1]
    elif len(parts) == 3:
        address, host, guest = parts
        _check_loopback(address, spec)
    else:
        raise UsageError(f"invalid port forward {spec!r}: use [127.0.0.1:]HOST:GUEST[/tcp|udp]")
    return PortForward(
        host_port=_parse_number(host, "host port", spec),
        guest_port=_parse_number(guest, "guest port", spec),
        proto=proto,
        host_address=address,
    )


def check_forwards(forwards: Iterable[PortForward], *, reserved: Iterable[int] = ()) -> tuple[PortForward, ...]:
    """Refuse two forwards of one host address/port/protocol, or one on a reserved host port."""
    seen: dict[tuple[str, int, str], PortForward] = {}
    taken = set(reserved)
    out = []
    for fwd in forwards:
        key = (fwd.host_address, fwd.host_port, fwd.proto)
        if key in seen:
            raise UsageError(f"port forward {fwd} conflicts with {seen[key]}: same host port")
        if fwd.proto == "tcp" and fwd.host_port in taken:
            raise UsageError(f"port forward {fwd}: host port {fwd.host_port} is used for SSH")
        seen[key] = fwd
        out.append(fwd)
    return tuple(out)
