"""``vmctl stats``: CPU, memory, block and network figures of vmctl's VMs, as ``docker stats``.

Counters come from one bulk libvirt call per refresh (`vmctl.backend.monitor.sample`). A CPU
percentage needs two samples: it is the CPU time the domain used between them over the wall time
between them, so 100 % is one host CPU busy (a VM with two busy vCPUs shows 200 %, as docker
does). Memory is the guest's own view when its balloon driver reports statistics (used =
available - usable, limit = available), else the host's resident memory of the VM's QEMU process
against the memory the VM was given (QEMU's own memory counts too, so it can pass 100 %: under
TCG a 256 MiB guest's QEMU holds ~290 MiB). Everything here but `frames` is pure arithmetic.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Sequence

from vmctl.backend import monitor as bmon
from vmctl.core.instance import MISSING, all_instances, resolve
from vmctl.core.session import Session
from vmctl.core.states import ACTIVE

KIB = 1024


def cpu_percent(before: bmon.DomainCounters | None, after: bmon.DomainCounters) -> float | None:
    """CPU use between two samples of one domain, in percent of one host CPU; None when unknown
    (no earlier sample, no CPU counter, or a counter that went back: the domain restarted)."""
    if before is None or before.cpu_time_ns is None or after.cpu_time_ns is None:
        return None
    wall_ns = (after.taken - before.taken) * 1e9
    used_ns = after.cpu_time_ns - before.cpu_time_ns
    if wall_ns <= 0 or used_ns < 0:
        return None
    return used_ns / wall_ns * 100


def memory(balloon_kib: dict[str, int]) -> tuple[int | None, int | None, str | None]:
    """(used bytes, limit bytes, where the figures come from: "guest", "host" or None)."""
    b = balloon_kib
    if "available" in b and ("usable" in b or "unused" in b):
        # `usable` (MemAvailable) counts reclaimable caches as free, as `free` does; guests whose
        # kernel lacks it report `unused` (MemFree) only
        free = b.get("usable", b.get("unused"))
        return (b["available"] - free) * KIB, b["available"] * KIB, "guest"
    if "rss" in b:
        limit = b.get("current", b.get("maximum"))
        return b["rss"] * KIB, limit * KIB if limit is not None else None, "host"
    limit = b.get("current")
    return None, limit * KIB if limit is not None else None, None


def row(name: str, before: bmon.DomainCounters | None, after: bmon.DomainCounters | None) -> dict:
    """One VM's figures between two samples (`after` None: libvirt has no such domain)."""
    if after is None:
        return {"name": name, "state": MISSING, "cpu_percent": None, "memory_used_bytes": None,
                "memory_limit_bytes": None, "memory_percent": None, "memory_source": None,
                "block_read_bytes": None, "block_write_bytes": None, "net_rx_bytes": None, "net_tx_bytes": None}
    used, limit, source = memory(after.balloon_kib)
    cpu = cpu_percent(before, after)
    return {
        "name": name,
        "state": after.state,
        "cpu_percent": round(cpu, 2) if cpu is not None else None,
        "memory_used_bytes": used,
        "memory_limit_bytes": limit,
        "memory_percent": round(used / limit * 100, 2) if used is not None and limit else None,
        "memory_source": source,
        "block_read_bytes": after.block_read_bytes,
        "block_write_bytes": after.block_write_bytes,
        "net_rx_bytes": after.net_rx_bytes,
        "net_tx_bytes": after.net_tx_bytes,
    }


def frame(before: dict[str, bmon.DomainCounters], after: dict[str, bmon.DomainCounters],
          names: Sequence[str], *, active_only: bool) -> list[dict]:
    """Rows for `names` in that order; with `active_only`, only VMs whose domain runs or is paused."""
    rows = []
    for name in names:
        now = after.get(name)
        if active_only and (now is None or now.state not in ACTIVE):
            continue
        rows.append(row(name, before.get(name), now))
    return rows


def frames(session: Session, names: Sequence[str] = (), *, interval: float = 1.0,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[list[dict]]:
    """Frames of rows, one every `interval` seconds, without end (the caller stops reading).

    With `names`, those VMs in any state (NotFoundError, before any sampling, for a name this
    store does not know); without, every running or paused VM of this store, looked up again for
    every frame so VMs started meanwhile appear. The first frame comes after two samples."""
    chosen = [resolve(session, n).name for n in names]
    before = bmon.sample(session.backend)
    while True:
        sleep(interval)
        after = bmon.sample(session.backend)
        shown = chosen or [inst.name for inst in all_instances(session)]
        yield frame(before, after, shown, active_only=not chosen)
        before = after
