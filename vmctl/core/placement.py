"""How much a vmctl host can take, and which host a VM goes to: what ``run --host auto``,
``migrate`` and ``host drain`` decide by. Read from each host's libvirt every time (node facts,
its domains' records, the layers in its pool)."""

from __future__ import annotations

from dataclasses import dataclass

from vmctl.backend.fleet import node_facts
from vmctl.core.hostplace import HostPlace
from vmctl.core.session import Session
from vmctl.errors import ResourceError, UsageError, VmctlError
from vmctl.hosts import Host, HostTable, hosts_file


def table() -> HostTable:
    """The user's host table (`vmctl.hosts`)."""
    return HostTable.read(hosts_file())


@dataclass
class Capacity:
    """What a host can take, from its libvirt: memory vmctl may still give VMs, CPUs, its VMs."""
    host: Host
    cpus: int
    memory_mib: int          # capacity: the host's `memory_mib`, else its physical memory
    allotted_mib: int        # memory of vmctl's running VMs there
    available_mib: int       # what the kernel can still give (free + cache)
    vms: int
    running: int
    vcpus: int               # vCPUs of vmctl's running VMs

    @property
    def free_mib(self) -> int:
        return max(0, min(self.memory_mib - self.allotted_mib, self.available_mib))

    def to_json(self) -> dict:
        return {"cpus": self.cpus, "memory_mib": self.memory_mib, "allotted_mib": self.allotted_mib,
                "free_mib": self.free_mib, "vms": self.vms, "running": self.running, "vcpus": self.vcpus}


def capacity(session: Session) -> Capacity:
    """`session`'s host as placement and migration see it."""
    facts = node_facts(session.backend)
    states = session.backend.list_states()
    records = HostPlace(session).records()
    running = [r for r in records if states.get(r.name) and states[r.name].state in ("running", "paused")]
    return Capacity(host=session.host, cpus=facts.cpus,
                    memory_mib=session.host.memory_mib or facts.memory_bytes >> 20,
                    allotted_mib=sum(r.memory_mib for r in running), available_mib=facts.available_bytes >> 20,
                    vms=len(records), running=len(running), vcpus=sum(r.cpus for r in running))


def require_memory(cap: Capacity, memory_mib: int, what: str) -> None:
    """ResourceError unless the host has `memory_mib` free for VMs; `what` says what was asked
    (``migrate web to h2``)."""
    if memory_mib > cap.free_mib:
        raise ResourceError(f"cannot {what}: it needs {memory_mib} MiB and "
                            f"{cap.host.name} has {cap.free_mib} MiB free for VMs ({cap.allotted_mib} of "
                            f"{cap.memory_mib} MiB given to running VMs)")


@dataclass(frozen=True)
class Placement:
    host: Host
    reason: str


def place(session: Session, *, memory_mib: int, layers: tuple[str, ...], exclude: tuple[str, ...] = ()) -> Placement:
    """The host for a new (or moving) VM of `memory_mib` on `layers`: among the reachable hosts
    with room for it, the one already holding most of its layers, then the most free memory,
    then the fewest vCPUs per CPU. ResourceError when none has room (naming each host's free)."""
    t = table()
    candidates = [h for n, h in sorted(t.hosts.items()) if n not in exclude]
    if not candidates:
        raise UsageError("no host to place the VM on: add one with 'vmctl host add NAME URI'")
    scored, refusals = [], []
    for host in candidates:
        on = session.for_host(host)
        try:
            cap = capacity(on)
            present = HostPlace(on).layers_present(layers)
        except VmctlError as exc:
            refusals.append(f"{host.name}: unreachable ({exc.message[:80]})")
            continue
        finally:
            on.close()
        if cap.free_mib < memory_mib:
            refusals.append(f"{host.name}: {cap.free_mib} MiB free")
            continue
        load = cap.vcpus / max(cap.cpus, 1)
        scored.append(((present, cap.free_mib, -load), host, cap, present))
    if not scored:
        raise ResourceError(f"no host has {memory_mib} MiB free for the VM ({'; '.join(refusals)})")
    scored.sort(key=lambda s: s[0], reverse=True)
    _key, host, cap, present = scored[0]
    return Placement(host, f"{present}/{len(layers)} layers there, {cap.free_mib} MiB free, "
                           f"{cap.running} VMs running on {cap.cpus} CPUs")
