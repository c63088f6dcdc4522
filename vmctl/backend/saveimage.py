"""libvirt's QEMU save-image file: the header in front of QEMU's migration stream. No I/O here.

``virDomainSave`` writes ``<header 92 bytes><data: domain XML, NUL, cookie XML, NUL, padding>``
followed by QEMU's migration stream (``QEVM`` magic, version 3). The header is ``LibvirtQemudSave``
and six little-endian uint32 — version (2), data length, was-running, format (0 = raw),
cookie offset within data — then 14 unused ones (libvirt's ``src/qemu/qemu_saveimage.h``; the
magic and layout are libvirt's on-disk ABI).

vmctl keeps only the stream in a checkpoint image and writes a fresh header per clone with the
clone's own domain XML: ``virDomainRestoreFlags`` with a replacement XML would refuse a
different UUID or MAC (libvirt's ABI check), and a clone must have both of its own. QEMU still
checks that the machine it is given matches the stream (device set, RAM sizes) and refuses a
mismatch, which vmctl then reports and answers with a cold boot.
"""

from __future__ import annotations

import struct

MAGIC = b"LibvirtQemudSave"
PARTIAL = b"LibvirtQemudPart"     # libvirt's marker of a save that did not finish
VERSION = 2
_FIELDS = struct.Struct("<6I")    # version, data_len, was_running, format, cookie_offset, unused[0]
HEADER_SIZE = len(MAGIC) + 4 * 19
STREAM_MAGIC = b"QEVM\x00\x00\x00\x03"   # QEMU_VM_FILE_MAGIC, QEMU_VM_FILE_VERSION
MAX_DATA = 16 << 20               # domain XML + cookie: far below this for any real domain
_ALIGN = 4096


class SaveImageError(ValueError):
    """Not a complete, raw libvirt save image."""


def parse_header(head: bytes) -> tuple[int, str]:
    """(offset of the migration stream, domain XML) from the first bytes of a save image, which
    must hold the whole header and data."""
    if len(head) < HEADER_SIZE:
        raise SaveImageError("the file is shorter than a save-image header")
    magic = head[: len(MAGIC)]
    if magic == PARTIAL:
        raise SaveImageError("libvirt did not finish writing this save image")
    if magic != MAGIC:
        raise SaveImageError("not a libvirt save image")
    version, data_len, _running, fmt, _cookie, _ = _FIELDS.unpack_from(head, len(MAGIC))
    if version != VERSION:
        raise SaveImageError(f"save-image version {version} (vmctl reads {VERSION})")
    if fmt != 0:
        raise SaveImageError(f"compressed save image (format {fmt}); vmctl needs raw")
    if data_len > MAX_DATA or len(head) < HEADER_SIZE + data_len:
        raise SaveImageError("save-image data is larger than its file")
    data = head[HEADER_SIZE: HEADER_SIZE + data_len]
    end = data.find(b"\0")
    if end <= 0:
        raise SaveImageError("save image without a domain XML")
    return HEADER_SIZE + data_len, data[:end].decode("utf-8")


def build_header(domain_xml: str, *, running: bool = True) -> bytes:
    """Header and data for `domain_xml` (no cookie); the migration stream follows it directly.
    The data is padded so that the stream starts at a 4 KiB boundary."""
    xml = domain_xml.encode("utf-8") + b"\0"
    if len(xml) > MAX_DATA:
        raise SaveImageError("domain XML too large for a save image")
    pad = -(HEADER_SIZE + len(xml)) % _ALIGN
    data = xml + b"\0" * pad
    fields = _FIELDS.pack(VERSION, len(data), int(running), 0, 0, 0)
    return MAGIC + fields + b"\0" * (4 * 13) + data


def check_stream_start(first: bytes) -> None:
    """Refuse bytes that do not start a QEMU migration stream (version 3)."""
    if not first.startswith(STREAM_MAGIC):
        raise SaveImageError("the saved memory does not start with QEMU's migration stream header")
