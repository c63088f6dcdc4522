"""Decide an input file's format from its bytes, without letting qemu-img guess.

Only two formats are accepted: qcow2 (magic ``QFI\\xfb``, version 2 or 3) and raw (anything else that
is not one of the other image formats we recognise and refuse). The qcow2 header is parsed here, so a
file that names a backing file, an external data file or encryption is refused *before* any tool
opens it (opening a qcow2 with a data file already opens that other file).
"""

from __future__ import annotations

import stat as _stat
import struct
from dataclasses import dataclass
from pathlib import Path

from vmctl.errors import UsageError

QCOW2_MAGIC = b"QFI\xfb"
_EXT_DATA_FILE = 0x44415441
_EXT_BACKING_FORMAT = 0xE2792ACA
_EXT_END = 0
_INCOMPAT_DATA_FILE = 1 << 2
_KNOWN_INCOMPAT = 0b11111  # dirty, corrupt, external data, compression type, extended L2

# (offset, magic, name) of formats we refuse rather than import as raw bytes.
_OTHER_MAGICS = (
    (0, b"KDMV", "VMDK"),
    (0, b"# Disk DescriptorFile", "VMDK descriptor"),
    (0, b"vhdxfile", "VHDX"),
    (0, b"conectix", "VHD"),
    (0x40, b"\x7f\x10\xda\xbe", "VDI"),
    (0, b"QED\x00", "QED"),
    (0, b"LUKS\xba\xbe", "LUKS"),
    (0, b"WithoutFreeSpace", "Parallels"),
    (0, b"WithouFreSpacExt", "Parallels"),
    (0, b"cloop", "cloop"),
    (0, b"BXFS", "bochs"),
)
# Suffixes that promise a qcow2 file: a file with such a name and no qcow2 magic is refused.
QCOW2_SUFFIXES = (".qcow2", ".qcow", ".qcow2c")


@dataclass(frozen=True)
class Qcow2Header:
    version: int
    size: int
    cluster_bits: int
    backing_file: str | None
    crypt_method: int
    incompatible: int
    data_file: str | None
    nb_snapshots: int
    backing_format: str | None = None


def read_qcow2_header(path: Path) -> Qcow2Header:
    """Parse the qcow2 header of `path`; raise UsageError if it is not a sane qcow2 header."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
        if len(head) < 72 or head[:4] != QCOW2_MAGIC:
            raise UsageError(f"{path} is not a qcow2 image")
        (version, backing_off, backing_len, cluster_bits, size, crypt, _l1_size, _l1_off,
         _rt_off, _rt_clusters, nb_snapshots, _snap_off) = struct.unpack(">IQIIQIIQQIIQ", head[4:72])
        if version not in (2, 3):
            raise UsageError(f"{path}: unsupported qcow2 version {version}")
        incompat = 0
        header_len = 72
        if version == 3:
            if len(head) < 104:
                raise UsageError(f"{path}: truncated qcow2 header")
            incompat, _compat, _autoclear, _rorder, header_len = struct.unpack(">QQQII", head[72:104])
            if header_len < 104 or header_len > 4096 or header_len % 8:
                raise UsageError(f"{path}: malformed qcow2 header (length {header_len})")
        backing = None
        if backing_off:
            if backing_len > 1023:
                raise UsageError(f"{path}: malformed qcow2 backing file name")
            fh.seek(backing_off)
            backing = fh.read(backing_len).decode("utf-8", errors="replace")
        data_file = None
        backing_format = None
        off = header_len
        for _ in range(256):
            if off + 8 > len(head):
                break
            ext_type, ext_len = struct.unpack(">II", head[off:off + 8])
            if ext_type == _EXT_END:
                break
            if ext_type == _EXT_DATA_FILE:
                data_file = head[off + 8:off + 8 + ext_len].decode("utf-8", errors="replace")
            elif ext_type == _EXT_BACKING_FORMAT:
                backing_format = head[off + 8:off + 8 + ext_len].decode("ascii", errors="replace")
            off += 8 + ((ext_len + 7) & ~7)
    return Qcow2Header(version, size, cluster_bits, backing, crypt, incompat, data_file, nb_snapshots,
                       backing_format)


def check_input_file(path: Path) -> None:
    """Refuse an input disk that is not a regular file or a block device (a FIFO would hang)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    if _stat.S_ISDIR(mode):
        raise UsageError(f"{path} is a directory, not a disk image")
    if not (_stat.S_ISREG(mode) or _stat.S_ISBLK(mode)):
        raise UsageError(f"{path} is not a regular file or a block device")


def detect_format(path: Path) -> str:
    """Return "qcow2" or "raw" for an input disk; refuse other image formats and empty files."""
    check_input_file(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a disk image") from None
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    if not head:
        raise UsageError(f"{path} is empty")
    if head[:4] == QCOW2_MAGIC:
        return "qcow2"
    for offset, magic, name in _OTHER_MAGICS:
        if head[offset:offset + len(magic)] == magic:
            raise UsageError(
                f"{path} is a {name} image; convert it to qcow2 or raw first "
                f"(qemu-img convert -f <format> -O qcow2 ...)"
            )
    if path.suffix.lower() in QCOW2_SUFFIXES:
        raise UsageError(f"{path} is named like a qcow2 image but has no qcow2 header (QFI\\xfb)")
    return "raw"


def check_standalone_qcow2(path: Path, *, allowed_backing: str | None = None) -> Qcow2Header:
    """Refuse a qcow2 file that reaches outside itself.

    No external data file, no encryption, no unknown incompatible features, and no backing file
    unless it is exactly `allowed_backing` (a store layer's relative parent name).
    """
    hdr = read_qcow2_header(path)
    if hdr.data_file is not None or hdr.incompatible & _INCOMPAT_DATA_FILE:
        raise UsageError(f"{path} uses an external data file ({hdr.data_file!r}); refused")
    if hdr.backing_file is not None and hdr.backing_file != allowed_backing:
        raise UsageError(
            f"{path} has a backing file ({hdr.backing_file!r}); import a standalone image "
            "(qemu-img convert -O qcow2 flattens it)"
        )
    if allowed_backing is not None and hdr.backing_file is None:
        raise UsageError(f"{path} should be an overlay of {allowed_backing} but has no backing file")
    if hdr.backing_file is not None and hdr.backing_format != "qcow2":
        # without it qemu would probe the parent's format: a raw parent could then be read as qcow2
        raise UsageError(f"{path} names its parent without the backing format qcow2 "
                         f"({hdr.backing_format or 'no format'}); refused")
    if hdr.crypt_method:
        raise UsageError(f"{path} is encrypted; refused")
    if hdr.incompatible & ~_KNOWN_INCOMPAT:
        raise UsageError(f"{path} uses unknown qcow2 features (0x{hdr.incompatible:x}); refused")
    return hdr
