"""An instance's own record on disk (``instances/<name>/instance.json``).

libvirt's definition is the truth for a VM's hardware and state; this record keeps what vmctl needs
to reach and clean up the VM without asking libvirt (so ``ls`` stays one bulk call): its image, how
to reach its SSH server, the pinned host key, forwarded ports and its files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vmctl.errors import IntegrityError, NotFoundError
from vmctl.fsutil import atomic_write

RECORD = "instance.json"
DISK = "disk.qcow2"
SEED = "seed.iso"
SERIAL_LOG = "serial.log"
CREATING_MARK = ".creating"   # inside an instance dir: its create has not finished
REMOVING_MARK = ".removing"   # inside an instance dir: its rm has begun


@dataclass
class InstanceRecord:
    name: str
    uuid: str
    mode: str
    uri: str
    profile: str
    image_ref: str
    image_id: str
    created: str
    ssh_user: str
    host_key: str
    ssh_port: int | None = None          # hosted: forwarded SSH port on 127.0.0.1
    ports: list[dict] = field(default_factory=list)  # {"host": "127.0.0.1", "host_port", "guest_port", "proto"}
    network: dict = field(default_factory=dict)      # {"kind": "user"|"network"|"bridge", "name": ...}
    restrict: bool = False
    cpus: int = 1
    memory_mib: int = 256
    disk_bytes: int | None = None
    static_ip: str | None = None         # --ip: where SSH reaches the guest (system mode)
    boot: dict = field(default_factory=dict)  # {"kind", "firmware", "secure_boot", "tpm"}
    volumes: list[dict] = field(default_factory=list)  # VolumeMount.to_json(): source, target, readonly, transport, tag
    limits: dict = field(default_factory=dict)   # vmctl.core.limits.Limits.to_json(), as last set
    max_cpus: int | None = None
    stack: dict = field(default_factory=dict)   # a stack's VM: {"name", "vm", "definition"} (vmctl.stack)
    # made from a checkpoint image (vmctl.core.warm): {"checkpoint": image id, "pending": bool, and
    # once started "started": "warm" | "cold", "reason": why cold}; {} for a VM that always boots
    warm: dict = field(default_factory=dict)
    # a VM on a vmctl host (vmctl.hosts): the host's name, the address its forwards listen on (the
    # client reaches SSH there, not on 127.0.0.1) and the layer digests its overlay stands on
    host: str | None = None
    ssh_host: str = "127.0.0.1"
    layers: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def save(self, directory: Path) -> None:
        """Write the record atomically, readable by its owner only."""
        atomic_write(directory / RECORD, json.dumps(asdict(self), indent=2, sort_keys=True).encode())

    @classmethod
    def load(cls, directory: Path) -> "InstanceRecord":
        path = directory / RECORD
        try:
            return cls.from_bytes(_read(os.fspath(path)), path)
        except FileNotFoundError:
            raise NotFoundError(f"no such VM: {directory.name}") from None

    @classmethod
    def from_bytes(cls, raw: bytes, path: object) -> "InstanceRecord":
        """The record in `raw` (the file at `path`, named in the error); IntegrityError if damaged."""
        try:
            data = json.loads(raw)
            return cls(**{k: v for k, v in data.items() if k in _FIELDS})
        except (ValueError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{path} is damaged: {exc}") from None


_FIELDS = frozenset(InstanceRecord.__dataclass_fields__)


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def list_records(instances_dir: Path, *, include_unfinished: bool = False) -> list[InstanceRecord]:
    """Every complete instance record under `instances_dir` (half-made temp dirs are skipped, and
    so are VMs whose create has not finished or whose rm has begun, unless `include_unfinished`)."""
    # os.scandir/listdir on plain strings, not pathlib: `ls` reads every record, and with 1,000
    # VMs pathlib's object churn alone took 70 ms
    base = os.fspath(instances_dir)
    try:
        with os.scandir(base) as it:
            names = sorted(e.name for e in it if not e.name.startswith("."))
    except FileNotFoundError:
        return []
    records = []
    for name in names:
        directory = os.path.join(base, name)
        try:
            present = os.listdir(directory)   # one call answers for the record and both marks
        except OSError:
            continue   # not a directory, or gone meanwhile
        if RECORD not in present:
            continue
        if not include_unfinished and (CREATING_MARK in present or REMOVING_MARK in present):
            continue  # half made or half removed: doctor's business, not a VM to show
        path = os.path.join(directory, RECORD)
        try:
            records.append(InstanceRecord.from_bytes(_read(path), path))
        except (OSError, IntegrityError):
            continue
    return records
