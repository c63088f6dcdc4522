"""Crafting tar streams the way a hostile peer would: raw headers with valid checksums, any lie.

Used by the guest-copy, archive and tar-reader tests. `header()` builds one 512-byte ustar header
whose fields say whatever the test wants; `stream()` joins members, each (header fields, data).
"""

from __future__ import annotations


def _octal(value: int, width: int) -> bytes:
    return (b"%0*o" % (width - 1, value)) + b"\0"


def header(name: str | bytes, *, size: int = 0, typeflag: bytes = b"0", mode: int = 0o644,
           linkname: str | bytes = b"", mtime: int = 0, prefix: bytes = b"", magic: bytes = b"ustar\x00",
           size_field: bytes | None = None, bad_checksum: bool = False) -> bytes:
    name_b = name.encode() if isinstance(name, str) else name
    link_b = linkname.encode() if isinstance(linkname, str) else linkname
    h = bytearray(512)
    h[0:100] = name_b[:100].ljust(100, b"\0")
    h[100:108] = _octal(mode, 8)
    h[108:116] = _octal(0, 8)
    h[116:124] = _octal(0, 8)
    h[124:136] = size_field if size_field is not None else _octal(size, 12)
    h[136:148] = _octal(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157:257] = link_b[:100].ljust(100, b"\0")
    h[257:263] = magic
    h[263:265] = b"00"
    h[345:500] = prefix[:155].ljust(155, b"\0")
    checksum = sum(h) + (1 if bad_checksum else 0)
    h[148:156] = b"%06o\0 " % checksum
    return bytes(h)


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def member(name, data: bytes = b"", **kw) -> bytes:
    kw.setdefault("size", len(data))
    return header(name, **kw) + pad(data)


def pax(records: dict[str, str]) -> bytes:
    """A pax extended header member (typeflag x) carrying `records`."""
    body = b""
    for key, value in records.items():
        rec = f" {key}={value}\n".encode()
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n = len(str(n)) + len(rec)
        body += str(n).encode() + rec
    return member("./PaxHeaders/x", body, typeflag=b"x")


def end() -> bytes:
    return b"\0" * 1024


def stream(*members: bytes, terminate: bool = True) -> bytes:
    return b"".join(members) + (end() if terminate else b"")
