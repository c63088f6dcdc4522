"""Host directories shared with a VM: parsing `-v`/`--mount`, the checks, the transport choice and
the guest's mount commands.

A volume is one host directory (resolved once, at create: the guest sees exactly that directory,
never what a later symlink swap names) mounted at one absolute guest path. virtio-fs when the
daemon can run virtiofsd for this connection, virtio-9p otherwise. Read-only is always the host's
doing, never only the guest's mount flags: by 9p, QEMU's export is read-only; by virtio-fs (libvirt
9.0 refuses read-only virtio-fs), virtiofsd shares a read-only bind mount of the directory, made
in the VM's directory at every start (vmctl.hostmount) -- so a read-only volume still reaches a
guest whose kernel has virtio-fs but no 9p (Debian's cloud kernel). Without the right to mount,
read-only volumes use 9p.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from vmctl.errors import UsageError
from vmctl.hostmount import bind_read_only

MAX_VOLUMES = 16
TRANSPORTS = ("virtiofs", "9p")
# Guest paths go into the seed's bootcmd as argv words (never a shell line) and into fstab-like
# mount arguments: printable ASCII without spaces, commas, colons or quotes keeps them one word
# everywhere.
_GUEST_PATH = re.compile(r"/[A-Za-z0-9._@+/-]{0,254}")
_TRUE = ("", "1", "true", "yes")
_FALSE = ("0", "false", "no")
# 9p: msize 256 KiB (the Linux default of 8 KiB makes large reads crawl); cache=mmap keeps mmap()
# working without caching file contents the host may change underneath.
NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=262144,cache=mmap"


@dataclass(frozen=True)
class VolumeSpec:
    """What the user asked for: host directory `source` (absolute) at guest path `target`."""
    source: str
    target: str
    readonly: bool = False


@dataclass(frozen=True)
class VolumeMount:
    """A planned volume: the spec, its transport ("virtiofs" | "9p") and the mount tag."""
    source: str
    target: str
    readonly: bool
    transport: str
    tag: str
    bind: str | None = None     # virtio-fs read-only: the read-only bind mount libvirt shares

    @property
    def shared_path(self) -> str:
        """The host directory libvirt hands to QEMU or virtiofsd."""
        return self.bind or self.source

    def to_json(self) -> dict:
        return {"source": self.source, "target": self.target, "readonly": self.readonly,
                "transport": self.transport, "tag": self.tag, "bind": self.bind}

    @classmethod
    def from_json(cls, d: dict) -> "VolumeMount":
        mount = cls(str(d["source"]), str(d["target"]), bool(d["readonly"]), str(d["transport"]),
                    str(d["tag"]), str(d["bind"]) if d.get("bind") else None)
        check_target(mount.target)
        if mount.transport not in TRANSPORTS or not re.fullmatch(r"vmctl[0-9]{1,2}", mount.tag) \
                or (mount.bind is not None and (not mount.bind.startswith("/") or not mount.readonly)):
            raise ValueError(f"bad volume {d!r}")
        return mount


def check_target(target: str) -> str:
    """Refuse a guest path that is not absolute, not normalized, `/` itself or not one plain word."""
    if not target.startswith("/"):
        raise UsageError(f"volume target must be an absolute guest path: {target!r}")
    if target.strip("/") == "":
        raise UsageError("a volume cannot be mounted over the guest's /")
    if not _GUEST_PATH.fullmatch(target) or posixpath.normpath(target) != target or "//" in target \
            or "/../" in target + "/":
        raise UsageError(f"invalid volume target {target!r}: a normalized absolute path of letters, "
                         "digits and ._@+-")
    return target


def _flag(value: str, what: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise UsageError(f"invalid {what} value {value!r}: true or false")


def parse_volume(text: str) -> VolumeSpec:
    """`HOST_DIR:GUEST_DIR[:ro|rw]` (Docker's -v) as a spec; paths not yet checked on disk."""
    parts = text.split(":")
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        readonly = parts[2] == "ro"
    elif len(parts) == 2:
        readonly = False
    else:
        raise UsageError(f"invalid volume {text!r}: use HOST_DIR:GUEST_DIR[:ro]")
    return VolumeSpec(parts[0], parts[1], readonly)


def parse_mount(text: str) -> VolumeSpec:
    """`type=bind,source=...,target=...[,readonly]` (Docker's --mount) as a spec."""
    fields: dict[str, str] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        key = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly"}.get(key, key)
        if key not in ("type", "source", "target", "readonly"):
            raise UsageError(f"invalid --mount field {key!r}: type, source, target, readonly")
        if key in fields:
            raise UsageError(f"--mount names {key} twice")
        fields[key] = value
    if fields.get("type", "bind") != "bind":
        raise UsageError(f"unsupported --mount type {fields['type']!r}: only bind (a host directory)")
    if not fields.get("source") or not fields.get("target"):
        raise UsageError("--mount needs source=HOST_DIR and target=GUEST_DIR")
    readonly = _flag(fields["readonly"], "readonly") if "readonly" in fields else False
    return VolumeSpec(fields["source"], fields["target"], readonly)


def resolve_specs(specs: tuple[VolumeSpec, ...], data_root: Path) -> tuple[VolumeSpec, ...]:
    """Check every spec against the host and the others; return them with sources resolved.

    Refused (UsageError, one line): a relative or missing host path, one that is not a directory
    or lies in vmctl's data root (keys, disks), a bad guest path, two volumes on one target.
    """
    if len(specs) > MAX_VOLUMES:
        raise UsageError(f"at most {MAX_VOLUMES} volumes per VM")
    root = os.path.realpath(data_root)
    seen: set[str] = set()
    out = []
    for spec in specs:
        if not spec.source.startswith("/"):
            raise UsageError(f"volume source must be an absolute host path: {spec.source!r}")
        if "\n" in spec.source or "\x00" in spec.source:
            raise UsageError("volume source contains a newline or NUL")
        source = os.path.realpath(spec.source)
        if not os.path.isdir(source):
            what = "does not exist" if not os.path.lexists(spec.source) else "is not a directory"
            raise UsageError(f"volume source {spec.source} {what}")
        if source == root or source.startswith(root + os.sep):
            raise UsageError(f"volume source {spec.source} is vmctl's own data ({data_root})")
        target = check_target(spec.target)
        if target in seen:
            raise UsageError(f"two volumes are mounted on {target}")
        seen.add(target)
        out.append(VolumeSpec(source, target, spec.readonly))
    return tuple(out)


def plan_mounts(specs: tuple[VolumeSpec, ...], virtiofs: bool,
                binds: Path | None = None) -> tuple[VolumeMount, ...]:
    """Give each checked spec its transport and tag (vmctl0, vmctl1, ... in order): virtio-fs when
    `virtiofs`, for a read-only one only when read-only bind mounts can be made under `binds`."""
    out = []
    for n, s in enumerate(specs):
        tag = f"vmctl{n}"
        if virtiofs and not s.readonly:
            out.append(VolumeMount(s.source, s.target, False, "virtiofs", tag))
        elif virtiofs and binds is not None:
            out.append(VolumeMount(s.source, s.target, True, "virtiofs", tag, str(binds / tag)))
        else:
            out.append(VolumeMount(s.source, s.target, s.readonly, "9p", tag))
    return tuple(out)


def ensure_binds(recorded: list[dict]) -> None:
    """Make the read-only bind mounts a VM's volumes share, before QEMU starts (they do not
    survive a host reboot; an existing one is kept)."""
    for d in recorded:
        m = VolumeMount.from_json(d)
        if m.bind:
            bind_read_only(Path(m.source), Path(m.bind))


def boot_commands(mounts: tuple[VolumeMount, ...]) -> list[list[str]]:
    """The seed's bootcmd argv lists that mount every volume at every boot."""
    commands: list[list[str]] = []
    for m in mounts:
        commands.append(["mkdir", "-p", m.target])
        if m.transport == "virtiofs":
            commands.append(["mount", "-t", "virtiofs", m.tag, m.target])
        else:
            options = NINEP_OPTIONS + (",ro" if m.readonly else "")
            commands.append(["mount", "-t", "9p", "-o", options, m.tag, m.target])
    return commands
