"""``vmctl update``: change a VM's resource limits, memory (through the balloon) and vCPUs (hot
plug), on the running QEMU and in the persistent definition alike (Docker's ``update``).

Everything asked is checked first against the VM's record (the limits merged with those already
set, memory and vCPUs within what the VM was created with); then each change is applied, and the
record updated with what was applied, so a failure part-way leaves the record saying what holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmctl.core.limits import CPU_PERIOD_US, Limits, check_limits, quota_us
from vmctl.core.session import Session
from vmctl.core.states import LIVE, guard
from vmctl.errors import UsageError
from vmctl.limits import MIN_MEMORY_MIB
from vmctl.units import mib
from vmctl.xml.domain import Domain


@dataclass(frozen=True)
class UpdateRequest:
    limits: Limits = Limits()
    memory_bytes: int | None = None     # the balloon's target, up to the VM's memory
    cpus: int | None = None             # vCPUs online, up to the VM's --max-cpus

    def empty(self) -> bool:
        return self.limits.empty() and self.memory_bytes is None and self.cpus is None


def _root_disk(xml: str) -> str:
    disks = [d for d in Domain.from_xml(xml).devices.disks if d.device == "disk"]
    return disks[0].target_dev


def update(session: Session, name: str, request: UpdateRequest) -> dict:
    """Apply `request` to VM `name` (running: live and persistent; stopped: persistent); return
    the VM's limits, memory and vCPUs as they now are."""
    if request.empty():
        raise UsageError("nothing to update: give a limit, --memory or --cpus")
    backend = session.backend
    with guard(session, name, "update") as g:
        inst, rec = g.instance, g.instance.record
        live = g.state in LIVE
        check_limits(Limits.from_json(rec.limits).merged(request.limits), rec.memory_mib, rec.cpus)
        memory_mib = None
        if request.memory_bytes is not None:
            memory_mib = mib(request.memory_bytes)
            if not MIN_MEMORY_MIB <= memory_mib <= rec.memory_mib:
                raise UsageError(f"--memory {memory_mib} MiB: the balloon gives the guest {MIN_MEMORY_MIB} MiB "
                                 f"up to the {rec.memory_mib} MiB it was created with")
        maximum = rec.max_cpus or rec.cpus
        if request.cpus is not None and not 1 <= request.cpus <= maximum:
            raise UsageError(f"--cpus {request.cpus}: {name} has at most {maximum} vCPUs "
                             "(create it with --max-cpus to hot-plug more)")
        own = request.limits
        sched: dict = {}
        if own.cpu_shares is not None:
            sched["cpu_shares"] = own.cpu_shares
        if own.cpu_quota_percent is not None:
            # per-vCPU quotas (a profile's) first lifted: under cgroup v1 a child's quota may not
            # exceed its parent's, so the VM's own could not go below them
            sched.update(vcpu_quota=-1, global_period=CPU_PERIOD_US, global_quota=quota_us(own.cpu_quota_percent))
        applied = Limits.from_json(rec.limits)
        try:
            if sched:
                backend.set_scheduler(name, sched, live)
                applied = applied.merged(Limits(cpu_shares=own.cpu_shares, cpu_quota_percent=own.cpu_quota_percent))
            if own.memory_limit_bytes is not None:
                # the running process only: vmctl sets it again at every start (limits.apply_after_start)
                if live:
                    backend.set_memory_limits(name, {"hard_limit": own.memory_limit_bytes // 1024}, True,
                                              persistent=False)
                applied = applied.merged(Limits(memory_limit_bytes=own.memory_limit_bytes))
            if own.io_weight is not None:
                backend.set_blkio(name, {"weight": own.io_weight}, live)
                applied = applied.merged(Limits(io_weight=own.io_weight))
            throttle = {k: v for k, v in (("read_bytes_sec", own.io_read_bps),
                                          ("write_bytes_sec", own.io_write_bps)) if v is not None}
            if throttle:
                backend.set_disk_throttle(name, _root_disk(backend.xml(name, inactive=not live)), throttle, live)
                applied = applied.merged(Limits(io_read_bps=own.io_read_bps, io_write_bps=own.io_write_bps))
            if memory_mib is not None:
                backend.set_balloon(name, memory_mib * 1024, live)
            if request.cpus is not None:
                backend.set_vcpus(name, request.cpus, live)
                if rec.max_cpus:
                    rec.cpus = request.cpus   # the maximum stays in max_cpus
        finally:
            rec.limits = applied.to_json()
            inst.record = rec
            inst.save_record(live=live)
        return {"name": name, "limits": applied.to_json(), "live": live,
                "memory_mib": memory_mib, "cpus": request.cpus}
