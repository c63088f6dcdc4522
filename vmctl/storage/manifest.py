"""The image manifest and image config (see FORMAT.md): building, canonical bytes, validation.

Validation is strict because manifests also arrive from registries: every digest well-formed, every
media type known, the kernel/initrd named in the config present among the descriptors.
"""

from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from vmctl.errors import IntegrityError, UsageError
from vmctl.limits import MAX_CPUS, MAX_MEMORY_MIB, MIN_MEMORY_MIB
from vmctl.storage.digest import canonical_json, is_digest

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.vmctl.image.v1"
CONFIG_MEDIA_TYPE = "application/vnd.vmctl.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.vmctl.disk.layer.v1.qcow2"
KERNEL_MEDIA_TYPE = "application/vnd.vmctl.kernel.v1"
INITRD_MEDIA_TYPE = "application/vnd.vmctl.initrd.v1"
# One chunk of a checkpoint's saved memory: a slice of QEMU's migration stream (FORMAT.md).
MEMORY_MEDIA_TYPE = "application/vnd.vmctl.memory.v1"
BLOB_MEDIA_TYPES = (CONFIG_MEDIA_TYPE, KERNEL_MEDIA_TYPE, INITRD_MEDIA_TYPE, MEMORY_MEDIA_TYPE)
MAX_MEMORY_CHUNKS = 4096

FIRMWARES = ("bios", "uefi")
BOOT_KINDS = ("firmware", "kernel")
RECIPE_LABEL = "vmctl.recipe.digest"
DEFAULT_CPUS = 1
DEFAULT_MEMORY_MIB = 1024


def descriptor(media_type: str, digest: str, size: int) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": int(size)}


def host_architecture() -> str:
    """The host's architecture in QEMU/libvirt spelling (x86_64, aarch64, ...)."""
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine)


def normalize_created(value) -> str:
    """RFC 3339 UTC with second precision, from a datetime, epoch seconds or an RFC 3339 string."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        dt = datetime.fromtimestamp(int(value), timezone.utc)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"invalid creation time {value!r}: expected RFC 3339") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
    else:
        raise UsageError(f"invalid creation time {value!r}")
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _exposed(ports) -> list[dict]:
    """A build file's EXPOSE list: [{"port": 1-65535, "proto": "tcp" | "udp"}], at most 64."""
    if not isinstance(ports, list) or len(ports) > 64:
        raise UsageError("invalid image default ports: a list of at most 64")
    out = []
    for p in ports:
        if not isinstance(p, dict) or not isinstance(p.get("port"), int) or isinstance(p.get("port"), bool) \
                or not 1 <= p["port"] <= 65535 or p.get("proto", "tcp") not in ("tcp", "udp"):
            raise UsageError(f"invalid image default port {str(p)[:60]}")
        out.append({"port": p["port"], "proto": p.get("proto", "tcp")})
    return out


def normalize_defaults(defaults: dict | None, *, disk_bytes: int) -> dict:
    d = dict(defaults or {})
    unknown = set(d) - {"cpus", "memory_mib", "disk_bytes", "ports"}
    if unknown:
        raise UsageError(f"unknown image default(s): {', '.join(sorted(unknown))}")
    out = {
        "cpus": int(d.get("cpus") or DEFAULT_CPUS),
        "memory_mib": int(d.get("memory_mib") or DEFAULT_MEMORY_MIB),
        "disk_bytes": max(int(d.get("disk_bytes") or 0), int(disk_bytes)),
    }
    if d.get("ports"):
        out["ports"] = _exposed(d["ports"])
    if not 1 <= out["cpus"] <= MAX_CPUS or not MIN_MEMORY_MIB <= out["memory_mib"] <= MAX_MEMORY_MIB:
        raise UsageError(f"invalid image defaults {out}")
    return out


def normalize_labels(labels: dict | None) -> dict[str, str]:
    out = {}
    for key, value in (labels or {}).items():
        if not isinstance(key, str) or not key or len(key) > 255 or any(c.isspace() for c in key):
            raise UsageError(f"invalid label key {key!r}")
        out[key] = str(value)
    return out


def build_config(
    *, architecture: str, boot: dict, defaults: dict, cloud_init: bool, user: str | None,
    labels: dict, created: str, parent: str | None, history: list[dict],
) -> dict:
    check_user(user)
    return {
        "architecture": architecture,
        "boot": boot,
        "defaults": defaults,
        "cloud_init": bool(cloud_init),
        "user": user,
        "labels": labels,
        "created": created,
        "parent": parent,
        "history": history,
    }


def build_manifest(config_desc: dict, layer_descs: list[dict], kernel_desc: dict | None = None,
                   initrd_desc: dict | None = None, memory_descs: list[dict] = ()) -> bytes:
    """The canonical manifest bytes. Disk layers base first, then kernel, then initrd, then the
    chunks of a checkpoint's memory state in stream order."""
    layers = list(layer_descs)
    if kernel_desc:
        layers.append(kernel_desc)
    if initrd_desc:
        layers.append(initrd_desc)
    layers.extend(memory_descs)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": config_desc,
        "layers": layers,
    }
    return canonical_json(manifest)


@dataclass(frozen=True)
class ParsedManifest:
    raw: dict
    config: dict          # descriptor
    disk_layers: list     # descriptors, base first
    kernel: dict | None
    initrd: dict | None
    memory: list = ()     # descriptors of the checkpoint's memory chunks, stream order

    @property
    def blobs(self) -> list[dict]:
        """Every descriptor this manifest references (config, layers, kernel, initrd, memory)."""
        return [self.config, *self.disk_layers, *[d for d in (self.kernel, self.initrd) if d], *self.memory]


def _check_descriptor(desc, where: str) -> dict:
    if (not isinstance(desc, dict) or not is_digest(desc.get("digest", ""))
            or not isinstance(desc.get("size"), int) or desc["size"] < 0
            or not isinstance(desc.get("mediaType"), str)):
        raise IntegrityError(f"manifest: malformed {where} descriptor")
    return desc


def parse_manifest(data: bytes) -> ParsedManifest:
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"manifest is not JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("schemaVersion") != 2:
        raise IntegrityError("manifest: schemaVersion must be 2")
    if raw.get("mediaType", MANIFEST_MEDIA_TYPE) != MANIFEST_MEDIA_TYPE:
        raise IntegrityError(f"manifest: unsupported mediaType {raw.get('mediaType')!r}")
    if raw.get("artifactType") != ARTIFACT_TYPE:
        raise IntegrityError(f"manifest: not a vmctl image (artifactType {raw.get('artifactType')!r})")
    config = _check_descriptor(raw.get("config"), "config")
    if config["mediaType"] != CONFIG_MEDIA_TYPE:
        raise IntegrityError(f"manifest: unexpected config mediaType {config['mediaType']!r}")
    disks, kernel, initrd, memory = [], None, None, []
    layers = raw.get("layers")
    if not isinstance(layers, list):
        raise IntegrityError("manifest: layers must be a list")
    for desc in layers:
        _check_descriptor(desc, "layer")
        mt = desc["mediaType"]
        if mt == MEMORY_MEDIA_TYPE:
            memory.append(desc)
            if len(memory) > MAX_MEMORY_CHUNKS:
                raise IntegrityError(f"manifest: more than {MAX_MEMORY_CHUNKS} memory chunks")
            continue
        if memory:
            raise IntegrityError("manifest: memory chunks must come last")
        if mt == LAYER_MEDIA_TYPE:
            if kernel or initrd:
                raise IntegrityError("manifest: disk layers must come before kernel and initrd")
            disks.append(desc)
        elif mt == KERNEL_MEDIA_TYPE and kernel is None:
            kernel = desc
        elif mt == INITRD_MEDIA_TYPE and initrd is None:
            initrd = desc
        else:
            raise IntegrityError(f"manifest: unexpected layer mediaType {mt!r}")
    if not disks:
        raise IntegrityError("manifest: an image needs at least one disk layer")
    if len({d["digest"] for d in disks}) != len(disks):
        raise IntegrityError("manifest: a disk layer appears twice")
    return ParsedManifest(raw, config, disks, kernel, initrd, memory)


_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_ARCH = re.compile(r"[a-z0-9_]{1,32}")
_LABEL_KEY = re.compile(r"[^\s\x00-\x1f\x7f]{1,255}")
MAX_DISK_BYTES = 1 << 50           # 1 PiB
MAX_HISTORY = 10_000
MAX_LABELS = 1_000
MAX_TEXT = 4096


def check_user(user) -> str | None:
    """An image's login user: None or a POSIX user name (it becomes an SSH user and a path)."""
    if user is None:
        return None
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise UsageError(f"invalid login user {str(user)[:40]!r}: a POSIX user name (a-z, 0-9, '_', '-')")
    return user


def _text(value, what: str, *, limit: int = MAX_TEXT, one_line: bool = True) -> str:
    if not isinstance(value, str) or len(value) > limit or "\0" in value or (one_line and "\n" in value):
        raise IntegrityError(f"image config: {what} must be a string of at most {limit} characters")
    return value


def _int(value, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise IntegrityError(f"image config: {what} must be an integer from {low} to {high}")
    return value


def validate_config(config, parsed: ParsedManifest) -> dict:
    """Check every field vmctl uses, with its type and range: an image config arrives from
    registries and archives too, and its values become VM settings, SSH users and XML."""
    if not isinstance(config, dict):
        raise IntegrityError("image config is not a JSON object")
    for key, kind in (("architecture", str), ("boot", dict), ("defaults", dict), ("cloud_init", bool),
                      ("labels", dict), ("created", str), ("history", list)):
        if not isinstance(config.get(key), kind):
            raise IntegrityError(f"image config: {key!r} missing or not a {kind.__name__}")
    if not _ARCH.fullmatch(config["architecture"]):
        raise IntegrityError(f"image config: unknown architecture {config['architecture'][:40]!r}")
    boot = config["boot"]
    if boot.get("kind") == "kernel":
        if not parsed.kernel or boot.get("kernel") != parsed.kernel["digest"]:
            raise IntegrityError("image config: the kernel is not among the manifest's blobs")
        if boot.get("initrd") and (not parsed.initrd or boot["initrd"] != parsed.initrd["digest"]):
            raise IntegrityError("image config: the initrd is not among the manifest's blobs")
        _text(boot.get("cmdline", ""), "boot.cmdline")
    elif boot.get("kind") == "firmware":
        if boot.get("firmware") not in FIRMWARES:
            raise IntegrityError(f"image config: unknown firmware {str(boot.get('firmware'))[:40]!r}")
        supports = boot.get("supports", [boot["firmware"]])
        if not isinstance(supports, list) or not set(supports) <= set(FIRMWARES) or len(supports) > 2:
            raise IntegrityError("image config: boot.supports must list firmwares (bios, uefi)")
    else:
        raise IntegrityError(f"image config: unknown boot kind {str(boot.get('kind'))[:40]!r}")
    defaults = config["defaults"]
    unknown = set(defaults) - {"cpus", "memory_mib", "disk_bytes", "ports"}
    if unknown:
        raise IntegrityError(f"image config: unknown defaults {', '.join(sorted(map(str, unknown)))[:80]}")
    if "ports" in defaults:
        try:
            _exposed(defaults["ports"])
        except UsageError as exc:
            raise IntegrityError(f"image config: {exc}") from None
    if "cpus" in defaults:
        _int(defaults["cpus"], "defaults.cpus", 1, MAX_CPUS)
    if "memory_mib" in defaults:
        _int(defaults["memory_mib"], "defaults.memory_mib", MIN_MEMORY_MIB, MAX_MEMORY_MIB)
    if "disk_bytes" in defaults:
        _int(defaults["disk_bytes"], "defaults.disk_bytes", 0, MAX_DISK_BYTES)
    try:
        check_user(config.get("user"))
    except UsageError as exc:
        raise IntegrityError(f"image config: {exc}") from None
    labels = config["labels"]
    if len(labels) > MAX_LABELS:
        raise IntegrityError(f"image config: more than {MAX_LABELS} labels")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise IntegrityError(f"image config: invalid label key {key[:40]!r}")
        _text(value, f"label {key[:40]!r}", one_line=False)
    try:
        normalize_created(config["created"])
    except UsageError:
        raise IntegrityError(f"image config: created {config['created'][:40]!r} is not an RFC 3339 time") from None
    if len(config["history"]) > MAX_HISTORY:
        raise IntegrityError(f"image config: more than {MAX_HISTORY} history entries")
    for entry in config["history"]:
        if not isinstance(entry, dict):
            raise IntegrityError("image config: a history entry is not an object")
        for key in ("created", "created_by", "comment"):
            if entry.get(key) is not None:
                _text(entry[key], f"history {key}", one_line=False)
        if entry.get("layer") is not None and not is_digest(entry["layer"]):
            raise IntegrityError("image config: a history entry names a layer that is not a digest")
    parent = config.get("parent")
    if parent is not None and not is_digest(parent):
        raise IntegrityError("image config: parent must be an image id or null")
    if config.get("checkpoint") is not None or parsed.memory:
        validate_checkpoint(config.get("checkpoint"), parsed)
    return config


CHECKPOINT_FORMAT = "qemu-migration"
CHECKPOINT_AGENTS = ("vmctl-1", "qga-1")   # vmctl's own agent; QEMU's guest agent (cloud images)
_MACHINE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CPU_MODE = re.compile(r"[a-z-]{1,32}")


def validate_checkpoint(cp, parsed: ParsedManifest) -> dict:
    """The ``checkpoint`` of an image config (FORMAT.md): a saved running machine, whose chunks
    are exactly the manifest's memory descriptors, and the shape it was saved with (its values
    become the restored VM's machine type, CPU count, memory and domain type)."""
    if not isinstance(cp, dict):
        raise IntegrityError("image config: the manifest has memory chunks but no checkpoint")
    if cp.get("format") != CHECKPOINT_FORMAT:
        raise IntegrityError(f"image config: unknown checkpoint format {str(cp.get('format'))[:40]!r}")
    if cp.get("agent") not in CHECKPOINT_AGENTS:
        raise IntegrityError(f"image config: unknown checkpoint agent {str(cp.get('agent'))[:40]!r}")
    memory = cp.get("memory")
    if not isinstance(memory, list) or not memory or memory != [d["digest"] for d in parsed.memory]:
        raise IntegrityError("image config: checkpoint.memory must list the manifest's memory chunks in order")
    if _int(cp.get("size"), "checkpoint.size", 1, 1 << 46) != sum(d["size"] for d in parsed.memory):
        raise IntegrityError("image config: checkpoint.size is not the sum of its memory chunks")
    _int(cp.get("cpus"), "checkpoint.cpus", 1, MAX_CPUS)
    _int(cp.get("memory_mib"), "checkpoint.memory_mib", MIN_MEMORY_MIB, MAX_MEMORY_MIB)
    for key, rx in (("machine", _MACHINE), ("domain_type", _MACHINE), ("cpu_mode", _CPU_MODE),
                    ("profile", _MACHINE), ("firmware", _MACHINE)):
        if not isinstance(cp.get(key), str) or not rx.fullmatch(cp[key]):
            raise IntegrityError(f"image config: checkpoint.{key} is missing or malformed")
    _text(cp.get("qemu", ""), "checkpoint.qemu")
    return cp
