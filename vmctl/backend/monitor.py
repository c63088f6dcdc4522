"""Resource counters of running domains, from libvirt's bulk statistics: one call per sample.

`sample` asks libvirt once (``virConnectGetAllDomainStats``) for the state, CPU time, balloon,
block and interface counters of every domain and hands them back as `DomainCounters`, in
libvirt's own units (nanoseconds, KiB, bytes). Turning two samples into rates and percentages is
`vmctl.core.monitor`'s job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import libvirt

from vmctl.backend.connection import STATE_NAMES
from vmctl.backend.errors import libvirt_errors

_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
          | libvirt.VIR_DOMAIN_STATS_BLOCK | libvirt.VIR_DOMAIN_STATS_INTERFACE)
# NOWAIT: a domain busy in a long job (a snapshot, a commit) gives what it can at once instead
# of stalling every other VM's row until the job ends.
_FLAGS = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)
# balloon.* fields vmctl reads; all in KiB. current/maximum come from libvirt's definition, rss
# from the host's view of the QEMU process, the others only from a guest whose virtio_balloon
# driver reports statistics (the domain needs <memballoon><stats period='N'/>).
BALLOON_FIELDS = ("current", "maximum", "available", "unused", "usable", "rss")


@dataclass(frozen=True)
class DomainCounters:
    """One domain's counters at one instant (`taken`: time.monotonic()); None = not reported."""

    name: str
    state: str
    taken: float
    cpu_time_ns: int | None = None
    balloon_kib: dict[str, int] = field(default_factory=dict)
    block_read_bytes: int | None = None
    block_write_bytes: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None


def _summed(values: dict, prefix: str, key: str) -> int | None:
    """The sum of ``{prefix}.N.{key}`` over N < ``{prefix}.count``; None when none reports it."""
    parts = [values.get(f"{prefix}.{i}.{key}") for i in range(int(values.get(f"{prefix}.count", 0)))]
    parts = [p for p in parts if p is not None]
    return sum(parts) if parts else None


def counters(name: str, values: dict, taken: float) -> DomainCounters:
    """`DomainCounters` from one domain's entry of libvirt's bulk statistics."""
    state = values.get("state.state", libvirt.VIR_DOMAIN_NOSTATE)
    return DomainCounters(
        name=name,
        state=STATE_NAMES.get(state, "unknown"),
        taken=taken,
        cpu_time_ns=values.get("cpu.time"),
        balloon_kib={k: values[f"balloon.{k}"] for k in BALLOON_FIELDS if f"balloon.{k}" in values},
        block_read_bytes=_summed(values, "block", "rd.bytes"),
        block_write_bytes=_summed(values, "block", "wr.bytes"),
        net_rx_bytes=_summed(values, "net", "rx.bytes"),
        net_tx_bytes=_summed(values, "net", "tx.bytes"),
    )


def sample(backend) -> dict[str, DomainCounters]:
    """Counters of every domain (inactive ones carry their state only), by name: one libvirt call."""
    with libvirt_errors("domain statistics"):
        entries = backend.raw.getAllDomainStats(_STATS, _FLAGS)
        taken = time.monotonic()
        return {dom.name(): counters(dom.name(), values, taken) for dom, values in entries}
