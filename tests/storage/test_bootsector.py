"""Firmware detection from a disk's first sectors: real partition tables made by sgdisk and
sfdisk, and crafted ones (the bytes of an imported disk are hostile)."""

from __future__ import annotations

import shutil
import subprocess
import struct

import pytest
from hypothesis import given, settings, strategies as st

from vmctl.errors import UsageError
from vmctl.storage.bootsector import SECTOR, firmware_choice, parse_head

pytestmark = pytest.mark.skipif(shutil.which("sgdisk") is None, reason="gdisk is in .ci/deps")


def _disk(tmp_path, name: str, *sgdisk: str, code: bool = False) -> bytes:
    path = tmp_path / name
    with open(path, "wb") as fh:
        fh.truncate(64 << 20)
    subprocess.run(["sgdisk", *sgdisk, str(path)], check=True, capture_output=True)
    if code:
        with open(path, "r+b") as fh:
            fh.write(b"\xeb\x63\x90" + b"GRUB" * 50)
    return path.read_bytes()[:34 * SECTOR]


def test_what_real_partition_tables_say(tmp_path):
    uefi = parse_head(_disk(tmp_path, "u", "-n", "1:2048:+32M", "-t", "1:EF00"))
    assert (uefi.table, uefi.firmwares) == ("gpt", ("uefi",))
    bios = parse_head(_disk(tmp_path, "b", "-n", "1:2048:+1M", "-t", "1:EF02", "-n", "2:0:0", code=True))
    assert (bios.firmwares, bios.bios_boot_partition) == (("bios",), True)
    hybrid = parse_head(_disk(tmp_path, "h", "-n", "1:2048:+1M", "-t", "1:EF02", "-n", "2:0:+32M",
                              "-t", "2:EF00", code=True))
    assert hybrid.firmwares == ("bios", "uefi")
    # a GPT with a BIOS boot partition but no boot code cannot boot by BIOS
    assert parse_head(_disk(tmp_path, "n", "-n", "1:2048:+1M", "-t", "1:EF02")).firmwares == ()
    assert parse_head(b"\0" * 512).table == "none"


def test_mbr_disks(tmp_path):
    path = tmp_path / "mbr"
    with open(path, "wb") as fh:
        fh.truncate(64 << 20)
    subprocess.run(["sfdisk", "-q", str(path)], input="label: dos\n,32M,ef\n,,83,*\n", text=True, check=True)
    head = path.read_bytes()[:34 * SECTOR]
    assert parse_head(head).firmwares == ("uefi",)
    assert parse_head(b"\x33\xc0" + head[2:]).firmwares == ("bios", "uefi")


def test_crafted_tables_cost_nothing_and_claim_nothing(tmp_path):
    head = bytearray(_disk(tmp_path, "c", "-n", "1:2048:+32M", "-t", "1:EF00"))
    for lba, count, size in ((2, 2**32 - 1, 128), (2**63, 128, 128), (2, 128, 0), (2, 128, 2**31), (1, 128, 128)):
        crafted = bytearray(head)
        struct.pack_into("<QII", crafted, SECTOR + 72, lba, count, size)
        info = parse_head(bytes(crafted))  # never raises, never reads past the 34 sectors
        assert info.table == "gpt"


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=34 * SECTOR))
def test_any_bytes_give_an_answer(data):
    parse_head(data)
    parse_head(data[:510].ljust(510, b"\0") + b"\x55\xaa" + data[512:])


def test_asking_for_a_firmware_the_disk_cannot_boot_is_refused(tmp_path):
    raw = tmp_path / "u.raw"
    raw.write_bytes(b"")
    with open(raw, "wb") as fh:
        fh.truncate(64 << 20)
    subprocess.run(["sgdisk", "-n", "1:2048:+32M", "-t", "1:EF00", str(raw)], check=True, capture_output=True)
    layer = tmp_path / "u.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(layer)], check=True)
    assert firmware_choice(layer, tmp_path, None) == {"firmware": "uefi", "supports": ["uefi"]}
    with pytest.raises(UsageError, match="cannot boot with bios"):
        firmware_choice(layer, tmp_path, "bios")
    assert not (tmp_path / "head.raw").exists()
