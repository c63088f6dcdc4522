"""Kernel blobs for direct kernel boot: the bzImage as shipped, or its ELF for PVH boot.

Under TCG a Debian bzImage spends seconds decompressing itself (xz, ~60 MiB) before Linux starts.
QEMU can instead load the uncompressed ELF ``vmlinux`` through the PVH entry point
(``XEN_ELFNOTE_PHYS32_ENTRY``, present with ``CONFIG_PVH=y``); libvirt passes the same file as
``<kernel>``, so nothing else changes. The zero tail of the last segment (bss/brk) is cut from the
file (``p_filesz`` shrinks, ``p_memsz`` stays) since ELF loaders zero-fill it anyway.
"""

from __future__ import annotations

import lzma
import struct
import zlib

_XEN_ELFNOTE_PHYS32_ENTRY = 18
_PT_LOAD, _PT_NOTE = 1, 4


def _decompress(bzimage: bytes) -> bytes | None:
    """Return the ELF payload of a bzImage compressed with xz or gzip, else ``None``."""
    for magic, make in ((b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor()),
                        (b"\x1f\x8b\x08", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))):
        start = bzimage.find(magic)
        while start != -1:
            try:
                out = make().decompress(bzimage[start:])
            except (lzma.LZMAError, zlib.error):
                out = b""
            if out[:4] == b"\x7fELF":
                return out
            start = bzimage.find(magic, start + 1)
    return None


def _phdrs(elf: bytes) -> tuple[int, int, int]:
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return phoff, phentsize, phnum


def has_pvh_entry(elf: bytes) -> bool:
    """True when the ELF's notes carry a Xen PVH 32-bit entry point."""
    phoff, phentsize, phnum = _phdrs(elf)
    for i in range(phnum):
        p_type, _f, off, _va, _pa, filesz, _ms, _al = struct.unpack_from("<IIQQQQQQ", elf, phoff + i * phentsize)
        if p_type != _PT_NOTE:
            continue
        pos, end = off, off + filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\x00")
            if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def max_segment_end(elf: bytes) -> int:
    """End offset in the file of the last byte any program header covers."""
    phoff, phentsize, phnum = _phdrs(elf)
    end = phoff + phentsize * phnum
    for i in range(phnum):
        _t, _f, off, _va, _pa, filesz, _ms, _al = struct.unpack_from("<IIQQQQQQ", elf, phoff + i * phentsize)
        end = max(end, off + filesz)
    return end


def trim_zero_tail(elf: bytes) -> bytes:
    """Drop section headers (loaders use program headers only) and the zero bytes ending the
    last PT_LOAD segment, when nothing else follows it in the file."""
    data = bytearray(elf)
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    if shoff:
        struct.pack_into("<Q", data, 0x28, 0)
        struct.pack_into("<HHH", data, 0x3A, 0, 0, 0)
        elf = bytes(data[: max_segment_end(elf)])
        data = bytearray(elf)
    phoff, phentsize, phnum = _phdrs(elf)
    loads = []
    for i in range(phnum):
        at = phoff + i * phentsize
        p_type, _f, off, _va, _pa, filesz, memsz, _al = struct.unpack_from("<IIQQQQQQ", elf, at)
        if p_type == _PT_LOAD:
            loads.append((off + filesz, at, off, filesz))
    if not loads:
        return elf
    end, at, off, filesz = max(loads)
    if end < len(elf.rstrip(b"\x00")):
        return elf  # something (sections, notes) lives after the segment: leave the file alone
    keep = len(elf[off : off + filesz].rstrip(b"\x00"))
    struct.pack_into("<Q", data, at + 32, keep)
    return bytes(data[: off + keep])


def pvh_kernel(bzimage: bytes) -> bytes | None:
    """Return a trimmed PVH-bootable ELF from a bzImage, or ``None`` if it cannot boot that way."""
    elf = _decompress(bzimage)
    if elf is None or elf[4] != 2 or not has_pvh_entry(elf):
        return None
    return trim_zero_tail(elf)
