"""Disks: the instance's qcow2 overlay (boot disk 1 for firmware boot) and the cloud-init seed,
read-only: a virtio disk by default (distribution cloud kernels, Debian's among them, have no AHCI
driver, so a SATA CD-ROM seed is never seen), a CD-ROM on a SATA or SCSI seed bus. Target names
follow the bus (vd*, sd*), the seed comes after the root disk on a shared prefix; the root disk's
serial is "vmctl-root"."""

from __future__ import annotations

from vmctl.core.plan.inputs import DomainInputs
from vmctl.profiles import Profile
from vmctl.xml.domain import Disk, Domain

_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd"}


def targets(p: Profile) -> tuple[str, str]:
    """(root disk, seed) target device names for the profile's buses."""
    root = _PREFIX[p.disk.bus] + "a"
    seed_prefix = _PREFIX[p.disk.seed_bus]
    return root, seed_prefix + ("b" if seed_prefix == _PREFIX[p.disk.bus] else "a")


def _keep_labels(disk: Disk, i: DomainInputs) -> None:
    """Where the domain uses DAC labels (a TPM, see .identity), no disk file is relabelled."""
    if i.tpm:
        disk.source_seclabel_model = "dac"
        disk.source_seclabel_relabel = False


def apply(d: Domain, p: Profile, i: DomainInputs) -> None:
    root_dev, seed_dev = targets(p)
    disk = Disk()
    disk.type = "file"
    disk.device = "disk"
    disk.driver_name = "qemu"
    disk.driver_type = "qcow2"
    disk.driver_cache = p.disk.cache
    if p.disk.discard:
        disk.driver_discard = p.disk.discard
    disk.source_file = i.disk
    if i.limits.io_read_bps is not None:
        disk.iotune_read_bytes_sec = i.limits.io_read_bps
    if i.limits.io_write_bps is not None:
        disk.iotune_write_bytes_sec = i.limits.io_write_bps
    disk.target_dev = root_dev
    disk.target_bus = p.disk.bus
    disk.serial = "vmctl-root"
    _keep_labels(disk, i)
    if i.boot_kind == "firmware":
        disk.boot_order = 1
    d.devices.add(disk)
    if i.seed:
        seed = Disk()
        seed.type = "file"
        seed.device = "disk" if p.disk.seed_bus == "virtio" else "cdrom"
        seed.driver_name = "qemu"
        seed.driver_type = "raw"
        seed.source_file = i.seed
        seed.target_dev = seed_dev
        seed.target_bus = p.disk.seed_bus
        seed.readonly = True
        _keep_labels(seed, i)
        d.devices.add(seed)
