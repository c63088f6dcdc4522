"""CPUs, memory and the clock. Defaults: static vCPU placement; the profile's CPU mode under KVM
and its TCG mode (QEMU's "max") under emulation; a custom model never falls back silently."""

from __future__ import annotations

from vmctl.core.plan.inputs import DomainInputs
from vmctl.profiles import Profile
from vmctl.xml.domain import CPU, Domain


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    d.memory_mib = i.memory_mib
    d.vcpus = i.cpus
    d.vcpu_placement = "static"
    m = p.machine
    mode = m.cpu_mode if i.virt_type == "kvm" else m.tcg_cpu_mode
    cpu: CPU = d.cpu
    cpu.mode = mode
    if mode == "custom":
        cpu.model = m.cpu_model
        cpu.model_fallback = "forbid"
    clock = d.clock
    clock.offset = p.clock.offset
    for timer in p.clock.timers:
        clock.add_timer(timer.name, tickpolicy=timer.tickpolicy, present=timer.present)
