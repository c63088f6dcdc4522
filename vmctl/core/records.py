"""An instance's own record on disk (``instances/<name>/instance.json``).

libvirt's definition is the truth for a VM's hardware and state; this record keeps what vmctl needs
to reach and clean up the VM without asking libvirt (so ``ls`` stays one bulk call): its image, how
to reach its SSH server, the pinned host key, forwarded ports and its files.
"""

from __future__ import annotations

import json
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

    def save(self, directory: Path) -> None:
        """Write the record atomically, readable by its owner only."""
        atomic_write(directory / RECORD, json.dumps(asdict(self), indent=2, sort_keys=True).encode())

    @classmethod
    def load(cls, directory: Path) -> "InstanceRecord":
        path = directory / RECORD
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no such VM: {directory.name}") from None
        except ValueError as exc:
            raise IntegrityError(f"{path} is damaged: {exc}") from None
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def list_records(instances_dir: Path, *, include_unfinished: bool = False) -> list[InstanceRecord]:
    """Every complete instance record under `instances_dir` (half-made temp dirs are skipped, and
    so are VMs whose create has not finished or whose rm has begun, unless `include_unfinished`)."""
    records = []
    try:
        entries = sorted(instances_dir.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name.startswith(".") or not (entry / RECORD).is_file():
            continue
        if not include_unfinished and ((entry / CREATING_MARK).exists() or (entry / REMOVING_MARK).exists()):
            continue  # half made or half removed: doctor's business, not a VM to show
        try:
            records.append(InstanceRecord.load(entry))
        except IntegrityError:
            continue
    return records
