"""What firmware a whole disk boots with, read from its first sectors (the bytes are hostile).

A disk is **BIOS-bootable** when its MBR holds boot code (bytes 0-439 not all zero: GRUB's
``boot.img``, syslinux, Windows' loader; a GPT disk's protective MBR made by a partitioner holds
none), and **UEFI-bootable** when it has an EFI system partition (GPT type
``C12A7328-F81F-11D2-BA4B-00A0C93EC93B`` or MBR type ``0xEF``). A BIOS boot partition (GPT type
``21686148-6449-6E6F-744E-656564454649``, where GRUB keeps its core image on GPT disks) is reported
too. Only the first 34 sectors are read and every count and offset is bounded, so a crafted table
costs nothing. The choice for a disk that can do both is BIOS (faster to reach the bootloader,
what ``virt-install --import`` does); ``--firmware`` overrides.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from vmctl.errors import UsageError
from vmctl.storage import qemu_img

SECTOR = 512
HEAD_SECTORS = 34            # MBR, GPT header, 128 entries of 128 bytes
ESP_GUID = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
BIOS_BOOT_GUID = uuid.UUID("21686148-6449-6E6F-744E-656564454649")


@dataclass(frozen=True)
class BootInfo:
    """What the first sectors say."""

    table: str                  # "gpt", "mbr" or "none"
    mbr_boot_code: bool
    esp: bool
    bios_boot_partition: bool

    @property
    def firmwares(self) -> tuple[str, ...]:
        """The firmwares the disk can boot with, preferred first (empty: no bootloader found)."""
        out = []
        if self.mbr_boot_code:
            out.append("bios")
        if self.esp:
            out.append("uefi")
        return tuple(out)

    def as_dict(self) -> dict:
        return {"table": self.table, "mbr_boot_code": self.mbr_boot_code, "esp": self.esp,
                "bios_boot_partition": self.bios_boot_partition}


def parse_head(head: bytes) -> BootInfo:
    """Read a partition table from the first sectors of a disk (at most 34 are looked at)."""
    head = head[:HEAD_SECTORS * SECTOR].ljust(HEAD_SECTORS * SECTOR, b"\0")
    if head[510:512] != b"\x55\xaa":
        return BootInfo("none", False, False, False)
    code = any(head[:440])
    mbr_types = [head[446 + 16 * i + 4] for i in range(4)]
    if 0xEE not in mbr_types or head[SECTOR:SECTOR + 8] != b"EFI PART":
        return BootInfo("mbr", code, 0xEF in mbr_types, False)
    entries_lba, count, size = struct.unpack_from("<QII", head, SECTOR + 72)
    esp = bios_boot = False
    # Entries are read only where they lie inside the sectors read: a table that claims more
    # entries, or puts them elsewhere, is looked at no further (a GPT's usual layout fits).
    if size >= 128 and size % 8 == 0 and 2 <= entries_lba < HEAD_SECTORS:
        start = entries_lba * SECTOR
        for i in range(min(count, 128)):
            off = start + i * size
            if off + 16 > len(head):
                break
            guid = uuid.UUID(bytes_le=head[off:off + 16])
            esp |= guid == ESP_GUID
            bios_boot |= guid == BIOS_BOOT_GUID
    return BootInfo("gpt", code, esp, bios_boot)


def read_head(disk: Path, fmt: str, work: Path) -> bytes:
    """The first 34 sectors of `disk` (a qcow2 or raw file), read through qemu-img, never guessed."""
    out = work / "head.raw"
    out.unlink(missing_ok=True)
    qemu_img.dd_head(disk, fmt, out, SECTOR, HEAD_SECTORS)
    try:
        with open(out, "rb") as fh:
            return fh.read(HEAD_SECTORS * SECTOR)
    finally:
        out.unlink(missing_ok=True)


def detect(disk: Path, fmt: str, work: Path) -> BootInfo:
    """What firmware `disk` boots with (see the module doc)."""
    return parse_head(read_head(disk, fmt, work))


def firmware_choice(layer: Path, work: Path, asked: str | None) -> dict:
    """The ``boot`` entries of an image config for the qcow2 `layer`: ``firmware`` (the one a VM
    boots with) and ``supports`` (all it can boot with). `asked` (``--firmware``) wins, but one
    the disk's boot sectors show it cannot boot with is refused; a disk with no bootloader found
    gets `asked`, else BIOS."""
    found = detect(layer, "qcow2", work).firmwares
    if asked is not None:
        if found and asked not in found:
            raise UsageError(f"the disk cannot boot with {asked}: its boot sectors show only "
                             f"{' and '.join(found)} (an EFI system partition is what UEFI needs, "
                             "boot code in the MBR what BIOS needs)")
        return {"firmware": asked, "supports": list(found) or [asked]}
    if not found:
        return {"firmware": "bios", "supports": ["bios"]}
    return {"firmware": found[0], "supports": list(found)}
