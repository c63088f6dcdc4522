"""Machine profiles: what kind of machine a VM is, as data (TOML) instead of code.

A profile is a TOML file named ``<name>.toml``. vmctl looks in the user's profile directory first
(``$XDG_CONFIG_HOME/vmctl/profiles``), then in the built-in ``templates/profiles``, so a user adds
or overrides a profile by dropping a file there, without touching code. A profile may start from
another one with ``extends = "NAME"`` and change only some keys (tables are merged key by key).

Every key is checked: unknown keys, wrong types and values outside the allowed set are refused with a
`UsageError` that names the file and the key. The built-in profiles document each key.

Sections (all optional except where a built-in default is missing)::

    description = "..."
    extends = "hosted"
    [libvirt]  uri, mode
    [machine]  domain_type, cpus, memory_mib, arch, machine, cpu_mode, tcg_cpu_mode, tcg_tb_cache_mib,
               cpu_model, firmware, features_acpi, features_apic, vmport, on_poweroff, on_reboot, on_crash
    [clock]    offset, timers = [{name, tickpolicy, present}]
    [disk]     bus, cache, discard, seed_bus
    [network]  kind, source, model, user_pci_slot
    [console]  serial_log, log_append
    [devices]  rng, rng_rate_bytes, rng_rate_period, balloon, balloon_stats_period,
               free_page_reporting, guest_agent, graphics, video
    [tuning]   cpu_shares, cpu_quota_percent, memory_headroom_mib, tcg_memory_headroom_mib,
               blkio_weight
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from vmctl.config import templates_dir, user_config_dir
from vmctl.errors import NotFoundError, UsageError
from vmctl.limits import MAX_CPUS, MAX_MEMORY_MIB, MIN_MEMORY_MIB
from vmctl.names import check_name
from vmctl.userfiles import read_toml


def profile_dirs() -> list[Path]:
    """Directories searched for ``<name>.toml``, highest priority first."""
    return [user_config_dir() / "profiles", templates_dir() / "profiles"]


# --- the typed profile ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Timer:
    name: str
    tickpolicy: str | None = None
    present: bool | None = None


@dataclass(frozen=True)
class MachineSpec:
    domain_type: str = "kvm"
    cpus: int = 1
    memory_mib: int = 1024
    arch: str = "x86_64"
    machine: str = "q35"
    cpu_mode: str = "host-passthrough"
    tcg_cpu_mode: str = "maximum"
    # QEMU's default translation cache under TCG is 1 GiB, filled and never given back: an idle
    # tiny guest held 88 MiB of it after booting. None: QEMU's default.
    tcg_tb_cache_mib: int | None = None
    cpu_model: str | None = None
    firmware: str = "bios"
    features_acpi: bool = True
    features_apic: bool = True
    vmport: bool | None = False
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"


@dataclass(frozen=True)
class ClockSpec:
    offset: str = "utc"
    timers: tuple[Timer, ...] = ()


@dataclass(frozen=True)
class DiskSpec:
    bus: str = "virtio"
    cache: str = "writeback"
    discard: str | None = "unmap"
    seed_bus: str = "virtio"


@dataclass(frozen=True)
class NetworkSpec:
    kind: str = "user"
    source: str | None = None
    model: str = "virtio"
    user_pci_slot: int = 0x1C


@dataclass(frozen=True)
class ConsoleSpec:
    serial_log: bool = True
    log_append: bool = False


@dataclass(frozen=True)
class DeviceSpec:
    rng: str | None = "/dev/urandom"
    rng_rate_bytes: int | None = None
    rng_rate_period: int | None = None
    balloon: bool = True
    balloon_stats_period: int | None = None
    # the guest's balloon driver hands pages it frees back to the host (virtio free page reporting)
    free_page_reporting: bool = True
    guest_agent: bool = True
    usb: bool = False
    graphics: str = "none"
    video: str = "virtio"


@dataclass(frozen=True)
class TuningSpec:
    cpu_shares: int | None = None
    cpu_quota_percent: int | None = None
    memory_headroom_mib: int | None = None
    tcg_memory_headroom_mib: int | None = None
    blkio_weight: int | None = None


@dataclass(frozen=True)
class LibvirtSpec:
    uri: str | None = None
    mode: str | None = None


@dataclass(frozen=True)
class Profile:
    """A validated machine profile."""

    name: str
    source: str = "<built-in>"
    description: str = ""
    libvirt: LibvirtSpec = field(default_factory=LibvirtSpec)
    machine: MachineSpec = field(default_factory=MachineSpec)
    clock: ClockSpec = field(default_factory=ClockSpec)
    disk: DiskSpec = field(default_factory=DiskSpec)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    console: ConsoleSpec = field(default_factory=ConsoleSpec)
    devices: DeviceSpec = field(default_factory=DeviceSpec)
    tuning: TuningSpec = field(default_factory=TuningSpec)

    # shortcuts the create command uses
    @property
    def virt_type(self) -> str:
        """Preferred domain type: "kvm" (falls back to "qemu" when KVM is unusable) or "qemu"."""
        return self.machine.domain_type

    @property
    def cpus(self) -> int:
        return self.machine.cpus

    @property
    def memory_mib(self) -> int:
        return self.machine.memory_mib

    @property
    def network_kind(self) -> str:
        return self.network.kind

    @property
    def network_name(self) -> str | None:
        return self.network.source

    @property
    def uri(self) -> str | None:
        return self.libvirt.uri


# --- validation ---------------------------------------------------------------------------------

def _one_of(*values: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v not in values:
            return f"must be one of {', '.join(values)}"
        return None
    return check


def _range(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not lo <= v <= hi:
            return f"must be between {lo} and {hi}"
        return None
    return check


def _pattern(regex: str, what: str) -> Callable[[Any], str | None]:
    compiled = re.compile(regex)

    def check(v: Any) -> str | None:
        if not compiled.fullmatch(v):
            return f"must be {what}"
        return None
    return check


_LIFECYCLE = _one_of("destroy", "restart", "preserve", "rename-restart")
_TOKEN = _pattern(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", "letters, digits, '_', '.', '+', '-'")
_IFNAME = _pattern(r"[A-Za-z0-9_.-]{1,15}", "a network interface name (at most 15 characters)")

# section -> key -> (type, validator or None, nullable)
_SCHEMA: dict[str, dict[str, tuple[type, Callable | None, bool]]] = {
    "libvirt": {
        "uri": (str, _pattern(r"[a-z0-9+]+://[^\s]*", "a libvirt URI"), True),
        "mode": (str, _one_of("hosted", "system"), True),
    },
    "machine": {
        "domain_type": (str, _one_of("kvm", "qemu"), False),
        "cpus": (int, _range(1, MAX_CPUS), False),
        "memory_mib": (int, _range(MIN_MEMORY_MIB, MAX_MEMORY_MIB), False),
        "arch": (str, _one_of("x86_64"), False),
        "machine": (str, _pattern(r"(q35|pc|pc-q35-[0-9.]+|pc-i440fx-[0-9.]+)",
                                  "q35, pc or a versioned q35/i440fx machine"), False),
        "cpu_mode": (str, _one_of("host-passthrough", "host-model", "maximum", "custom"), False),
        "tcg_cpu_mode": (str, _one_of("maximum", "custom"), False),
        "tcg_tb_cache_mib": (int, _range(8, 4096), True),
        "cpu_model": (str, _TOKEN, True),
        "firmware": (str, _one_of("bios", "uefi"), False),
        "features_acpi": (bool, None, False),
        "features_apic": (bool, None, False),
        "vmport": (bool, None, True),
        "on_poweroff": (str, _LIFECYCLE, False),
        "on_reboot": (str, _LIFECYCLE, False),
        "on_crash": (str, _one_of("destroy", "restart", "preserve", "rename-restart",
                                  "coredump-destroy", "coredump-restart"), False),
    },
    "clock": {
        "offset": (str, _one_of("utc", "localtime"), False),
        "timers": (list, None, False),
    },
    "disk": {
        "bus": (str, _one_of("virtio", "sata", "scsi"), False),
        "cache": (str, _one_of("none", "writeback", "writethrough", "directsync", "unsafe"), False),
        "discard": (str, _one_of("unmap", "ignore"), True),
        "seed_bus": (str, _one_of("sata", "scsi", "virtio"), False),
    },
    "network": {
        "kind": (str, _one_of("user", "network", "bridge"), False),
        "source": (str, _IFNAME, True),
        "model": (str, _one_of("virtio", "e1000e", "e1000", "rtl8139"), False),
        "user_pci_slot": (int, _range(0x02, 0x1E), False),
    },
    "console": {
        "serial_log": (bool, None, False),
        "log_append": (bool, None, False),
    },
    "devices": {
        "rng": (str, _one_of("/dev/urandom", "/dev/random", "/dev/hwrng"), True),
        "rng_rate_bytes": (int, _range(1, 1 << 30), True),
        "rng_rate_period": (int, _range(1, 1 << 30), True),
        "balloon": (bool, None, False),
        "balloon_stats_period": (int, _range(1, 3600), True),
        "free_page_reporting": (bool, None, False),
        "guest_agent": (bool, None, False),
        "usb": (bool, None, False),
        "graphics": (str, _one_of("none", "vnc"), False),
        "video": (str, _one_of("virtio", "vga", "qxl", "bochs"), False),
    },
    "tuning": {
        "cpu_shares": (int, _range(2, 262144), True),
        "cpu_quota_percent": (int, _range(1, 100), True),
        "memory_headroom_mib": (int, _range(64, 1 << 20), True),
        "tcg_memory_headroom_mib": (int, _range(64, 1 << 20), True),
        "blkio_weight": (int, _range(100, 1000), True),
    },
}
_SECTION_CLASSES = {
    "libvirt": LibvirtSpec, "machine": MachineSpec, "clock": ClockSpec, "disk": DiskSpec,
    "network": NetworkSpec, "console": ConsoleSpec, "devices": DeviceSpec, "tuning": TuningSpec,
}
_TOP_KEYS = {"description", "extends", *_SCHEMA}
_TIMER_NAMES = ("platform", "pit", "rtc", "hpet", "tsc", "kvmclock", "hypervclock", "armvtimer")
_TICKPOLICIES = ("delay", "catchup", "merge", "discard")
# TOML has no null: an empty string means "off / not set" for nullable keys.
_NULL = ""


def _fail(source: str, key: str, problem: str) -> UsageError:
    return UsageError(f"profile {source}: {key} {problem}")


def _check_value(source: str, section: str, key: str, value: Any) -> Any:
    typ, validator, nullable = _SCHEMA[section][key]
    where = f"[{section}] {key}"
    if nullable and value == _NULL:
        return None
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _fail(source, where, f"must be an integer, not {value!r}")
    if typ is not int and not isinstance(value, typ):
        raise _fail(source, where, f"must be a {typ.__name__}, not {value!r}")
    if validator is not None:
        problem = validator(value)
        if problem:
            raise _fail(source, where, f"{problem} (got {value!r})")
    return value


def _timers(source: str, items: list) -> tuple[Timer, ...]:
    out = []
    for i, item in enumerate(items):
        where = f"[clock] timers[{i}]"
        if not isinstance(item, dict):
            raise _fail(source, where, "must be a table {name=..., tickpolicy=..., present=...}")
        unknown = set(item) - {"name", "tickpolicy", "present"}
        if unknown:
            raise _fail(source, where, f"has unknown key(s) {', '.join(sorted(unknown))}")
        name = item.get("name")
        if name not in _TIMER_NAMES:
            raise _fail(source, where, f"name must be one of {', '.join(_TIMER_NAMES)}")
        tick = item.get("tickpolicy")
        if tick is not None and tick not in _TICKPOLICIES:
            raise _fail(source, where, f"tickpolicy must be one of {', '.join(_TICKPOLICIES)}")
        present = item.get("present")
        if present is not None and not isinstance(present, bool):
            raise _fail(source, where, "present must be true or false")
        out.append(Timer(name=name, tickpolicy=tick, present=present))
    return tuple(out)


def parse_profile(name: str, data: dict, source: str = "<data>") -> Profile:
    """Validate an already-merged profile table (no ``extends`` left) into a Profile."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(source, "", f"has unknown key(s) {', '.join(sorted(unknown))}".lstrip())
    description = data.get("description", "")
    if not isinstance(description, str) or "\n" in description:
        raise _fail(source, "description", "must be a one-line string")
    sections = {}
    for section, cls in _SECTION_CLASSES.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise _fail(source, f"[{section}]", "must be a table")
        unknown = set(table) - set(_SCHEMA[section])
        if unknown:
            raise _fail(source, f"[{section}]", f"has unknown key(s) {', '.join(sorted(unknown))}")
        values = {}
        for key, value in table.items():
            value = _check_value(source, section, key, value)
            if section == "clock" and key == "timers":
                value = _timers(source, value)
            values[key] = value
        sections[section] = cls(**values)
    profile = Profile(name=name, source=source, description=description, **sections)
    _check_consistency(profile)
    return profile


def _check_consistency(p: Profile) -> None:
    m, n = p.machine, p.network
    if m.cpu_mode == "custom" or m.tcg_cpu_mode == "custom":
        if not m.cpu_model:
            raise _fail(p.source, "[machine] cpu_model", "is required when a cpu mode is 'custom'")
    if n.kind in ("network", "bridge") and not n.source:
        raise _fail(p.source, "[network] source",
                    f"is required for kind = '{n.kind}' (the {n.kind} name)")
    if n.kind == "network":
        check_name(n.source, "network name")
    t = p.tuning
    if (t.memory_headroom_mib is None) != (t.tcg_memory_headroom_mib is None):
        raise _fail(p.source, "[tuning]",
                    "memory_headroom_mib and tcg_memory_headroom_mib must be set together")
    d = p.devices
    if (d.rng_rate_bytes is None) != (d.rng_rate_period is None):
        raise _fail(p.source, "[devices]", "rng_rate_bytes and rng_rate_period must be set together")


# --- loading ----------------------------------------------------------------------------------

def find_profile_file(name: str) -> Path:
    """Return the file defining profile `name` (user directory first), or raise NotFoundError."""
    check_name(name, "profile name")
    for directory in profile_dirs():
        path = directory / f"{name}.toml"
        if path.is_file():
            return path
    available = list_profiles()
    raise NotFoundError(
        f"no profile {name!r}; available: {', '.join(available) if available else '(none)'}"
    )


def list_profiles() -> list[str]:
    """Names of all profiles in the user and built-in directories, sorted."""
    names = set()
    for directory in profile_dirs():
        if directory.is_dir():
            for path in directory.glob("*.toml"):
                names.add(path.stem)
    return sorted(names)


def _read(path: Path) -> dict:
    return read_toml(path, "profile")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_raw(name: str, chain: tuple[str, ...]) -> tuple[dict, Path]:
    if name in chain:
        raise UsageError(f"profile {name!r}: 'extends' loops ({' -> '.join(chain + (name,))})")
    path = find_profile_file(name)
    data = _read(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, path
    if not isinstance(parent, str):
        raise _fail(str(path), "extends", "must be a profile name")
    if parent == name:
        # a user file may shadow a built-in of the same name and extend it
        builtin = templates_dir() / "profiles" / f"{name}.toml"
        if path == builtin or not builtin.is_file():
            raise UsageError(f"profile {path}: extends itself")
        base = _read(builtin)
        base.pop("extends", None)
        return _merge(base, data), path
    base, _ = _load_raw(parent, chain + (name,))
    return _merge(base, data), path


def load_profile(name: str) -> Profile:
    """Load and validate profile `name` (NotFoundError lists the available ones)."""
    data, path = _load_raw(name, ())
    return parse_profile(name, data, str(path))


def profile_to_dict(profile: Profile) -> dict:
    """A plain dict of the profile (for ``--json`` output)."""
    out: dict[str, Any] = {"name": profile.name, "source": profile.source,
                           "description": profile.description}
    for section in _SECTION_CLASSES:
        spec = getattr(profile, section)
        table = {}
        for f in fields(spec):
            value = getattr(spec, f.name)
            if f.name == "timers":
                value = [{k: v for k, v in vars(t).items() if v is not None} for t in value]
            table[f.name] = value
        out[section] = table
    return out
