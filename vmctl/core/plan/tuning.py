"""Resource tuning libvirt applies through cgroups: block I/O weight, the memory hard limit (the
profile's headroom over the guest's memory; a separate one under TCG), CPU shares and quota --
each overridden by the VM's own limits (`create --cpu-shares ...`, `vmctl update`)."""

from __future__ import annotations

from vmctl.core.limits import CPU_PERIOD_US, quota_us
from vmctl.core.plan.inputs import DomainInputs
from vmctl.profiles import Profile
from vmctl.xml.domain import Domain


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    t, own = p.tuning, i.limits
    weight = own.io_weight if own.io_weight is not None else t.blkio_weight
    if weight is not None:
        d.blkio_weight = weight
    # the VM's own --memory-limit is set on the running process by vmctl at each start
    # (vmctl.core.limits.apply_after_start), never as <memtune>: see there why
    headroom = t.tcg_memory_headroom_mib if i.virt_type == "qemu" else t.memory_headroom_mib
    if headroom is not None and own.memory_limit_bytes is None:
        d.memtune_hard_limit_kib = (i.memory_mib + headroom) * 1024
    shares = own.cpu_shares if own.cpu_shares is not None else t.cpu_shares
    if shares is not None:
        d.cpu_shares = shares
    # the VM's own quota replaces the profile's per-vCPU one: under cgroup v1 a vCPU's quota may not
    # exceed its VM's, so a VM capped below one CPU could not start with both
    if t.cpu_quota_percent is not None and own.cpu_quota_percent is None:
        d.cpu_period = CPU_PERIOD_US
        d.cpu_quota = CPU_PERIOD_US * t.cpu_quota_percent // 100
    if own.cpu_quota_percent is not None:
        # the whole VM's share of the host (Docker's --cpus), not each vCPU's
        d.cpu_global_period = CPU_PERIOD_US
        d.cpu_global_quota = quota_us(own.cpu_quota_percent)
