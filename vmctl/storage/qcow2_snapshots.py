"""The internal snapshot table of a qcow2 file, read from its bytes alone.

Why not ``qemu-img``: a VM on a vmctl host has its disk on that host, and vmctl reaches the host
through libvirt only (no shell there): the disk's bytes come over a storage-volume download, so
the table is parsed here from the header and the table's byte range (a few KiB) instead of
streaming the whole disk to run ``qemu-img info`` on it. No maintained Python library reads qcow2
snapshot tables; the format is small and documented (QEMU's docs/interop/qcow2.txt, "Snapshot
table"). The bytes come from another machine: every size and offset is checked, the table read is
bounded (`MAX_TABLE`), and anything malformed is one IntegrityError line.

The entries have the keys and values of ``qemu-img info --output=json``'s ``snapshots`` list
(``id``, ``name``, ``vm-state-size``, ``date-sec``, ``date-nsec``, ``vm-clock-sec``,
``vm-clock-nsec``), so callers treat both sources alike.
"""

from __future__ import annotations

import struct
from typing import Callable

from vmctl.errors import IntegrityError

QCOW2_MAGIC = b"QFI\xfb"
HEADER_BYTES = 72            # up to and including snapshots_offset (version 2 and 3 alike)
MAX_SNAPSHOTS = 65536        # QEMU's own limit (QCOW_MAX_SNAPSHOTS)
MAX_TABLE = 8 << 20          # bytes of table read at most: thousands of snapshots with long names
ENTRY_FIXED = 40             # bytes of an entry before its extra data, id and name

Reader = Callable[[int, int], bytes]   # (offset, length) -> at most length bytes from offset


def needed(header: bytes, where: str) -> tuple[int, int, int]:
    """(nb_snapshots, snapshots_offset, bytes to read) from the first `HEADER_BYTES` of a qcow2 file."""
    if len(header) < HEADER_BYTES or header[:4] != QCOW2_MAGIC:
        raise IntegrityError(f"{where} is not a qcow2 image")
    version = struct.unpack(">I", header[4:8])[0]
    if version not in (2, 3):
        raise IntegrityError(f"{where}: unsupported qcow2 version {version}")
    nb, offset = struct.unpack(">IQ", header[60:72])
    if nb > MAX_SNAPSHOTS:
        raise IntegrityError(f"{where}: {nb} snapshots in its table, more than qcow2 allows")
    if nb and (offset < HEADER_BYTES or offset % 8):
        raise IntegrityError(f"{where}: malformed snapshot table offset {offset}")
    return nb, offset, min(MAX_TABLE, nb * 256 + 4096) if nb else 0


class _Short(IntegrityError):
    """The table goes on past the bytes read."""


def parse_table(data: bytes, nb: int, where: str) -> dict[str, dict]:
    """The `nb` entries at the start of `data` (the table's bytes), by snapshot name."""
    out: dict[str, dict] = {}
    pos = 0
    for i in range(nb):
        if pos + ENTRY_FIXED > len(data):
            raise _Short(f"{where}: snapshot table truncated at entry {i} (read {len(data)} bytes)")
        (_l1_off, _l1_size, id_len, name_len, date_sec, date_nsec, vm_clock, state_size,
         extra_len) = struct.unpack(">QIHHIIQII", data[pos:pos + ENTRY_FIXED])
        if extra_len > 1024:   # QEMU writes 24 and caps what it reads at 1024 (QCOW_MAX_SNAPSHOT_EXTRA_DATA)
            raise IntegrityError(f"{where}: snapshot entry {i} has {extra_len} bytes of extra data")
        if date_nsec >= 1_000_000_000:
            raise IntegrityError(f"{where}: snapshot entry {i} has a malformed date")
        extra = pos + ENTRY_FIXED
        strings = extra + extra_len
        end = strings + id_len + name_len
        if end > len(data):
            raise _Short(f"{where}: snapshot table truncated at entry {i} (read {len(data)} bytes)")
        if extra_len >= 8:   # vm_state_size_large replaces the 32-bit field
            state_size = struct.unpack(">Q", data[extra:extra + 8])[0]
        try:
            ident = data[strings:strings + id_len].decode("utf-8")
            name = data[strings + id_len:end].decode("utf-8")
        except UnicodeDecodeError:
            raise IntegrityError(f"{where}: snapshot entry {i} has a name that is not UTF-8") from None
        # two entries of one name (qemu-img makes them): the later one, as vmctl's local reading
        # of `qemu-img info` keeps it
        out[name] = {"id": ident, "name": name, "vm-state-size": state_size, "date-sec": date_sec,
                     "date-nsec": date_nsec, "vm-clock-sec": vm_clock // 1_000_000_000,
                     "vm-clock-nsec": vm_clock % 1_000_000_000}
        pos = (end + 7) & ~7   # entries are padded to 8 bytes
    return out


def read_table(read: Reader, where: str) -> dict[str, dict]:
    """The snapshot table of the qcow2 file that `read` gives bytes of: the header, then the
    table (read again, larger, while its entries run past what was read, up to `MAX_TABLE`)."""
    nb, offset, length = needed(read(0, HEADER_BYTES), where)
    if not nb:
        return {}
    while True:
        data = read(offset, length)
        try:
            return parse_table(data, nb, where)
        except _Short:
            if len(data) < length or length >= MAX_TABLE:   # the file ends, or the bound is reached
                raise
            length = min(MAX_TABLE, length * 4)
