"""What a stack was given, kept in ``<root>/stacks/<name>.json`` so a killed ``up`` resumes.

`allocate` gives each network its subnet (and, hosted, its multicast group and port; system, its
libvirt network and bridge names) and each VM its MACs and addresses, once: later ``up`` runs keep
them, so a VM that is recreated keeps its address and its peers' ``/etc/hosts`` stay true. The file
is written (atomically, 0600) before anything is made from it: whatever a killed ``up`` made is
named in it, and the VMs carry the stack's name in their records, so ``up`` finds them again and
``down`` finds everything.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vmctl.errors import IntegrityError, UsageError
from vmctl.fsutil import atomic_write, private_dirs

from vmctl.stack.spec import StackSpec

DEFAULT_POOL = ipaddress.ip_network("10.213.0.0/16")   # /24s for networks that name no subnet
FIRST_HOST = 10            # VMs get .10, .11, ... (.1 is the gateway of a libvirt network)
MCAST_PORTS = (42000, 43999)


@dataclass
class NetworkState:
    subnet: str
    group: str | None = None      # hosted: the segment's multicast group on 127.0.0.1
    port: int | None = None
    libvirt: str | None = None    # system: the libvirt network and its bridge
    bridge: str | None = None


@dataclass
class VmState:
    macs: dict[str, str] = field(default_factory=dict)        # network -> MAC
    addresses: dict[str, str] = field(default_factory=dict)   # network -> IPv4 address
    health: str | None = None      # "healthy" | "unhealthy": its healthcheck at the last up


@dataclass
class StackState:
    name: str
    file: str
    mode: str
    networks: dict[str, NetworkState] = field(default_factory=dict)
    vms: dict[str, VmState] = field(default_factory=dict)

    def save(self, stacks_dir: Path) -> None:
        private_dirs(stacks_dir)
        atomic_write(stacks_dir / f"{self.name}.json", json.dumps(asdict(self), indent=2, sort_keys=True).encode())

    @classmethod
    def load(cls, stacks_dir: Path, name: str) -> "StackState | None":
        path = stacks_dir / f"{name}.json"
        try:
            d = json.loads(path.read_text())
            return cls(name=d["name"], file=d["file"], mode=d["mode"],
                       networks={k: NetworkState(**v) for k, v in d["networks"].items()},
                       vms={k: VmState(**v) for k, v in d["vms"].items()})
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{path} is damaged ({exc}): remove it and the stack's VMs by hand") from None


def all_states(stacks_dir: Path) -> list[StackState]:
    out = []
    for p in sorted(stacks_dir.glob("*.json")) if stacks_dir.is_dir() else []:
        st = StackState.load(stacks_dir, p.stem)
        if st is not None:
            out.append(st)
    return out


def remove(stacks_dir: Path, name: str) -> None:
    (stacks_dir / f"{name}.json").unlink(missing_ok=True)


def _free_subnet(taken: set[ipaddress.IPv4Network]) -> str:
    for net in DEFAULT_POOL.subnets(new_prefix=24):
        if not any(net.overlaps(t) for t in taken):
            return str(net)
    raise UsageError("no free /24 left in 10.213.0.0/16 for a stack network: give subnet: in the file")


def _mac(taken: set[str]) -> str:
    while True:
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if mac not in taken:
            return mac


def _group(salt: str, stack: str, net: str, taken: set[tuple[str, int]]) -> tuple[str, int]:
    """A multicast group in the organization-local 239.255/16 scope and a port: from a digest of
    the store (`salt`: its data root, so two stores' stacks of one name do not share a segment)
    and the names, moved on while another stack of this store has it."""
    for attempt in range(1000):
        d = hashlib.sha256(f"{salt}/{stack}/{net}/{attempt}".encode()).digest()
        group = f"239.255.{1 + d[0] % 254}.{1 + d[1] % 254}"
        port = MCAST_PORTS[0] + int.from_bytes(d[2:4], "big") % (MCAST_PORTS[1] - MCAST_PORTS[0])
        if (group, port) not in taken:
            return group, port
    raise UsageError("no free multicast group for a stack network")  # pragma: no cover


def _check_subnet(text: str, where: str) -> str:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise UsageError(f"{where}: invalid subnet {text!r}: use A.B.C.0/PREFIX") from None
    if net.version != 4 or not 16 <= net.prefixlen <= 28:
        raise UsageError(f"{where}: subnet {text}: an IPv4 network from /16 to /28")
    if net.overlaps(ipaddress.ip_network("10.0.2.0/24")):
        raise UsageError(f"{where}: subnet {text} overlaps 10.0.2.0/24, the user-mode network every hosted VM has")
    return str(net)


def allocate(spec: StackSpec, mode: str, previous: StackState | None, others: list[StackState],
             salt: str = "", in_use: set | None = None) -> StackState:
    """The stack's state: `previous` kept where it still fits the file, the rest given now
    (`salt`: the store's data root, see `_group`; `in_use`: subnets a new default one must not
    overlap, such as the daemon's other networks in system mode)."""
    st = previous or StackState(name=spec.name, file=str(spec.file), mode=mode)
    st.file, st.mode = str(spec.file), mode
    taken_nets = {ipaddress.ip_network(n.subnet) for o in others for n in o.networks.values()} | set(in_use or ())
    taken_groups = {(n.group, n.port) for o in others for n in o.networks.values() if n.group}
    for name, net in spec.networks.items():
        want = _check_subnet(net.subnet, f"networks.{name}.subnet") if net.subnet else None
        have = st.networks.get(name)
        if have is not None and (want is None or have.subnet == want):
            continue
        subnet = want or _free_subnet(taken_nets | {ipaddress.ip_network(n.subnet) for n in st.networks.values()})
        new = NetworkState(subnet=subnet)
        if mode == "hosted":
            new.group, new.port = _group(salt, spec.name, name, taken_groups)
        else:
            digest = hashlib.sha256(f"{spec.name}/{name}".encode()).hexdigest()
            new.libvirt, new.bridge = f"vmctl-{spec.name}-{name}", f"vmst{digest[:8]}"
        st.networks[name] = new
    macs_taken = {m for v in st.vms.values() for m in v.macs.values()}
    for short, vm in spec.vms.items():
        vs = st.vms.setdefault(short, VmState())
        for net, fixed in vm.networks:
            subnet = ipaddress.ip_network(st.networks[net].subnet)
            if net not in vs.macs:
                vs.macs[net] = _mac(macs_taken)
                macs_taken.add(vs.macs[net])
            used = {a for other, v in st.vms.items() if other != short for n, a in v.addresses.items() if n == net}
            if fixed:
                addr = ipaddress.ip_address(fixed)
                if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address, subnet[1]):
                    raise UsageError(f"vms.{short}.networks.{net}.ipv4_address: {fixed} is not a host address "
                                     f"of {subnet} (.1 is the network's own)")
                if fixed in used:
                    raise UsageError(f"vms.{short}.networks.{net}.ipv4_address: {fixed} is another VM's")
                vs.addresses[net] = fixed
            elif vs.addresses.get(net) is None or vs.addresses[net] in used \
                    or ipaddress.ip_address(vs.addresses[net]) not in subnet:
                hosts = (str(h) for i, h in enumerate(subnet.hosts(), 1) if i >= FIRST_HOST)
                vs.addresses[net] = next((h for h in hosts if h not in used), None) or _full(net)
        for net in set(vs.addresses) - {n for n, _ in vm.networks}:
            vs.addresses.pop(net)
            vs.macs.pop(net, None)
    return st


def _full(net: str):
    raise UsageError(f"network {net} has no free address left")
