"""Minimal ELF reader: the shared libraries (DT_NEEDED) and interpreter of a 64-bit binary.

Used to copy exactly the libraries an extracted Debian binary links against, without ``ldd``
(which would run the binary's loader on the host).
"""

from __future__ import annotations

import struct
from pathlib import Path

_PT_INTERP, _PT_DYNAMIC, _PT_LOAD = 3, 2, 1
_DT_NEEDED, _DT_STRTAB = 1, 5


def read_needed(path: Path) -> tuple[list[str], str | None]:
    """Return ``(needed_sonames, interpreter_path)`` of a little-endian ELF64 file.

    A static binary returns ``([], None)``. Raises ``ValueError`` for anything that is not ELF64 LE.
    """
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a little-endian ELF64 file")
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic, interp = [], None, None
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == _PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == _PT_INTERP:
            interp = data[p_offset : p_offset + p_filesz].rstrip(b"\x00").decode()
    if dynamic is None:
        return [], interp
    needed_offsets, strtab_vaddr = [], None
    off, size = dynamic
    for pos in range(off, off + size, 16):
        tag, val = struct.unpack_from("<qQ", data, pos)
        if tag == 0:
            break
        if tag == _DT_NEEDED:
            needed_offsets.append(val)
        elif tag == _DT_STRTAB:
            strtab_vaddr = val
    if strtab_vaddr is None:
        return [], interp
    strtab = next((o + strtab_vaddr - v for v, o, s in loads if v <= strtab_vaddr < v + s), None)
    if strtab is None:
        raise ValueError(f"{path}: string table outside loaded segments")
    names = []
    for n in needed_offsets:
        end = data.index(b"\x00", strtab + n)
        names.append(data[strtab + n : end].decode())
    return names, interp
