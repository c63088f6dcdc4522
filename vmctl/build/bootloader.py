"""A BIOS-bootable disk without root, loop devices or grub-install: MBR + GRUB in the MBR gap.

The raw disk gets an MBR partition table with one bootable Linux partition starting at 1 MiB;
GRUB's ``boot.img`` goes into the first 440 bytes and the ``core.img`` that ``grub-mkimage``
makes (with the modules to read ext4 and boot Linux built in) into the sectors right after it,
where ``boot.img`` and core.img's own block list look for it by default (the classic
``dd core.img seek=1`` layout). GRUB then reads ``/boot/grub/grub.cfg`` from the partition.
``grub-mkimage`` and the modules come from Debian's ``grub-common``/``grub-pc-bin`` packages,
extracted like any other package of the recipe.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from vmctl.build.tools import run
from vmctl.errors import NotFoundError, UsageError

SECTOR = 512
PARTITION_OFFSET = 1024 * 1024
#: Built into core.img: BIOS disks, MBR partitions, ext2/3/4, and what grub.cfg uses.
CORE_MODULES = ["biosdisk", "part_msdos", "ext2", "normal", "linux", "echo", "test"]
_SAFE_CMDLINE = re.compile(r"^[A-Za-z0-9=,._/:+ -]*$")


def grub_cfg(cmdline: str, kernel: str = "/boot/vmlinuz", initrd: str = "/boot/initrd.img") -> str:
    """A grub.cfg that boots ``kernel`` with ``cmdline`` at once; refuses shell-special text."""
    if not _SAFE_CMDLINE.match(cmdline):
        raise UsageError("kernel command line for a firmware-boot image may only hold "
                         "letters, digits, spaces and = , . _ / : + -")
    return (f"set timeout=0\n"
            f"linux {kernel} {cmdline}\n"
            f"initrd {initrd}\n"
            f"boot\n")


def make_core_image(grub_tree: Path, out: Path) -> Path:
    """Run the extracted ``grub-mkimage`` to make an i386-pc core.img that reads (hd0,msdos1)."""
    mkimage = grub_tree / "usr" / "bin" / "grub-mkimage"
    mods = grub_tree / "usr" / "lib" / "grub" / "i386-pc"
    if not mkimage.is_file() or not (mods / "boot.img").is_file():
        raise NotFoundError("grub-mkimage or the i386-pc modules are missing: add grub-common and grub-pc-bin")
    run([str(mkimage), "-O", "i386-pc", "-d", str(mods), "-o", str(out),
         "-p", "(hd0,msdos1)/boot/grub", *CORE_MODULES])
    return mods / "boot.img"


def _mbr_entry(bootable: bool, ptype: int, start: int, sectors: int) -> bytes:
    # CHS fields set to the "use LBA" maximum, as modern tools do for large disks.
    chs = b"\xfe\xff\xff"
    return struct.pack("<B3sB3sII", 0x80 if bootable else 0, chs, ptype, chs, start, sectors)


def install(raw: Path, grub_tree: Path, work_dir: Path) -> None:
    """Write the partition table, boot.img and core.img into ``raw`` (its fs starts at 1 MiB)."""
    size = raw.stat().st_size
    core = work_dir / "core.img"
    boot_img = make_core_image(grub_tree, core)
    core_bytes = core.read_bytes()
    if SECTOR + len(core_bytes) > PARTITION_OFFSET:
        raise UsageError(f"GRUB core image ({len(core_bytes)} bytes) does not fit before the partition")
    boot = boot_img.read_bytes()
    start = PARTITION_OFFSET // SECTOR
    table = _mbr_entry(True, 0x83, start, size // SECTOR - start) + b"\x00" * 48
    disk_sig = os.urandom(4)
    mbr = boot[:440] + disk_sig + b"\x00\x00" + table + b"\x55\xaa"
    assert len(mbr) == SECTOR
    with open(raw, "r+b") as f:
        f.write(mbr)
        f.seek(SECTOR)
        f.write(core_bytes)
    core.unlink()
