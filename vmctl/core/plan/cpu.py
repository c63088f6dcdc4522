"""CPUs, memory and the clock. Defaults: static vCPU placement; the profile's CPU mode under KVM
and its TCG mode (QEMU's "max") under emulation; a custom model never falls back silently."""

from __future__ import annotations

from vmctl.core.plan.inputs import DomainInputs
from vmctl.profiles import Profile
from vmctl.xml.domain import CPU, Domain


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    d.memory_mib = i.memory_mib
    d.vcpus = i.max_cpus or i.cpus
    d.vcpu_placement = "static"
    if i.max_cpus and i.max_cpus > i.cpus:
        d.vcpus_current = i.cpus   # the others are hot-plugged by `vmctl update --cpus`
    m = p.machine
    mode = m.cpu_mode if i.virt_type == "kvm" else m.tcg_cpu_mode
    cpu: CPU = d.cpu
    cpu.mode = mode
    if mode == "custom":
        cpu.model = m.cpu_model
        cpu.model_fallback = "forbid"
    if mode == "maximum" and i.virt_type == "qemu":
        # QEMU's "max" offers 5-level paging under TCG, and a guest kernel that takes it walks five
        # page-table levels on every emulated TLB miss: plain QEMU booted the Debian cloud guest to
        # SSH in 88 s with -cpu max, 78 s with max,la57=off, 73 s on qemu64 (single runs, 2-core
        # host). No VM here needs more than 4-level paging's 128 TiB.
        cpu.disable_feature("la57")
    clock = d.clock
    clock.offset = p.clock.offset
    for timer in p.clock.timers:
        clock.add_timer(timer.name, tickpolicy=timer.tickpolicy, present=timer.present)
