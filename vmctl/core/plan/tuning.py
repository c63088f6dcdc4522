"""Resource tuning libvirt applies through cgroups: block I/O weight, the memory hard limit (the
profile's headroom over the guest's memory; a separate one under TCG), CPU shares and quota."""

from __future__ import annotations

from vmctl.core.plan.inputs import DomainInputs
from vmctl.profiles import Profile
from vmctl.xml.domain import Domain

CPU_PERIOD_US = 100_000   # the CFS period the quota is a share of


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    t = p.tuning
    if t.blkio_weight is not None:
        d.blkio_weight = t.blkio_weight
    headroom = t.tcg_memory_headroom_mib if i.virt_type == "qemu" else t.memory_headroom_mib
    if headroom is not None:
        d.memtune_hard_limit_kib = (i.memory_mib + headroom) * 1024
    if t.cpu_shares is not None:
        d.cpu_shares = t.cpu_shares
    if t.cpu_quota_percent is not None:
        d.cpu_period = CPU_PERIOD_US
        d.cpu_quota = CPU_PERIOD_US * t.cpu_quota_percent // 100
