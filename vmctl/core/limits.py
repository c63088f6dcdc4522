"""Resource limits of one VM: what `create --cpu-shares ...` and `vmctl update` set.

libvirt applies them through the QEMU process's cgroup (CPU weight, the CPU quota of the whole VM,
the memory hard limit, the block I/O weight) and through QEMU's own block throttling for the
per-disk rates (a cgroup throttles a host block device, not one VM disk file among others on it).
All live in the domain's definition except the memory hard limit, which vmctl sets on the running
process at every start (`apply_after_start`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from vmctl.errors import UsageError, VmctlError
from vmctl.limits import MAX_CPUS
from vmctl.units import parse_rate, parse_size

CPU_PERIOD_US = 100_000          # the CFS period a quota is a share of
MIN_HEADROOM_MIB = 64            # a hard limit below guest RAM + QEMU's own gets QEMU OOM-killed


@dataclass(frozen=True)
class Limits:
    """None: not set (the profile's, or nothing). Quota in percent of one host CPU for the whole
    VM (150 = one and a half CPUs), rates in bytes per second."""
    cpu_shares: int | None = None
    cpu_quota_percent: int | None = None
    memory_limit_bytes: int | None = None
    io_weight: int | None = None
    io_read_bps: int | None = None
    io_write_bps: int | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: dict) -> "Limits":
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in d.items() if k in known and v is not None})

    def merged(self, newer: "Limits") -> "Limits":
        """These limits with every field `newer` sets replaced."""
        return Limits(**{**asdict(self), **newer.to_json()})

    def empty(self) -> bool:
        return not self.to_json()


def parse_limits(cpu_shares=None, cpu_quota_percent=None, memory_limit=None, io_weight=None,
                 io_read_bps=None, io_write_bps=None) -> Limits:
    """The Limits of create's limit options as given (sizes and rates as text, parsed here)."""
    return Limits(
        cpu_shares=cpu_shares, cpu_quota_percent=cpu_quota_percent,
        memory_limit_bytes=parse_size(str(memory_limit), "memory limit", default_unit="m", maximum=16 << 40)
        if memory_limit else None,
        io_weight=io_weight,
        io_read_bps=parse_rate(io_read_bps, "read rate") if io_read_bps else None,
        io_write_bps=parse_rate(io_write_bps, "write rate") if io_write_bps else None,
    )


def check_limits(limits: Limits, memory_mib: int, cpus: int) -> Limits:
    """Refuse values libvirt or the kernel would refuse or that would kill the VM (one line)."""
    if limits.cpu_shares is not None and not 2 <= limits.cpu_shares <= 262_144:
        raise UsageError(f"invalid --cpu-shares {limits.cpu_shares}: 2-262144")
    if limits.cpu_quota_percent is not None and not 1 <= limits.cpu_quota_percent <= 100 * MAX_CPUS:
        raise UsageError(f"invalid --cpu-quota {limits.cpu_quota_percent}: 1-{100 * MAX_CPUS} (percent of one host CPU)")
    if limits.memory_limit_bytes is not None:
        floor = (memory_mib + MIN_HEADROOM_MIB) << 20
        if limits.memory_limit_bytes < floor:
            raise UsageError(f"--memory-limit must be at least the guest's memory plus {MIN_HEADROOM_MIB} MiB "
                             f"({floor >> 20} MiB): below it the kernel kills QEMU")
    if limits.io_weight is not None and not 100 <= limits.io_weight <= 1000:
        raise UsageError(f"invalid --io-weight {limits.io_weight}: 100-1000")
    for what, rate in (("--io-read-bps", limits.io_read_bps), ("--io-write-bps", limits.io_write_bps)):
        if rate is not None and not 1 <= rate <= 1 << 50:
            raise UsageError(f"invalid {what} {rate}: 1 byte/s to 1 PiB/s")
    del cpus
    return limits


def apply_after_start(backend, name: str, recorded: dict) -> None:
    """Give a VM that just started the limits libvirt cannot keep in its definition: the memory
    hard limit. A ``<memtune><hard_limit>`` makes libvirt raise QEMU's RLIMIT_MEMLOCK to it before
    exec, which a daemon without CAP_SYS_RESOURCE cannot (every start then fails); set on the
    running process's cgroup instead, it is the same cgroup limit and needs no rlimit."""
    limit = Limits.from_json(recorded).memory_limit_bytes
    if limit is not None:
        backend.set_memory_limits(name, {"hard_limit": limit // 1024}, live=True, persistent=False)


def quota_us(percent: int) -> int:
    """The CFS quota for the whole VM in microseconds per `CPU_PERIOD_US`."""
    return CPU_PERIOD_US * percent // 100


# libvirt 9.0 writes <blkiotune><weight> to the blkio controller's weight file, which only the bfq
# (or, before Linux 5.0, cfq) I/O scheduler provides; on a host whose disks use none,
# mq-deadline or kyber every start of such a domain fails with this message (seen on this
# project's machines with cgroup v1 and no bfq module).
NO_IO_WEIGHT = "blkio device weight is valid only for bfq or cfq"


def start_domain(session, name: str, recorded: dict | None) -> None:
    """Start domain `name` (see `without_io_weight_if_refused`)."""
    without_io_weight_if_refused(session, name, recorded, lambda: session.backend.start(name))


def without_io_weight_if_refused(session, name: str, recorded: dict | None, start) -> None:
    """Run `start()` (a start or a restore of domain `name`). Where the host cannot weigh I/O (see
    `NO_IO_WEIGHT`) the profile's weight is dropped from the definition and `start()` run again,
    silently: it is the profile's preference, not the user's, and `dumpxml` shows what the VM has
    (as Docker applies no weight, and says nothing, where the kernel has none and the user asked
    for none). A weight the user asked for (``--io-weight``, in `recorded`) is not dropped: the
    start fails, saying why."""
    backend = session.backend
    try:
        start()
        return
    except VmctlError as exc:
        if NO_IO_WEIGHT not in exc.message:
            raise
        if (recorded or {}).get("io_weight") is not None:
            raise UsageError(f"start {name}: --io-weight needs the bfq I/O scheduler on the host's disks "
                             "(echo bfq > /sys/block/DEV/queue/scheduler), or a VM without it") from None
    from vmctl.core.plan.edits import drop_io_weight  # lazy: the XML model, only on such a host

    backend.define(drop_io_weight(backend.xml(name, inactive=True)))
    start()
