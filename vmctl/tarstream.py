"""A bounded reader of tar streams that somebody else wrote (a guest, an archive, a registry).

Why not :mod:`tarfile`: its reader loads a pax or GNU long-name header whole into memory whatever
size the header claims (a 12-byte size field can claim 8 GiB), keeps every member it has seen in a
list, and leaves the safety of extraction to ``extraction filters`` that Python 3.11.2 (Debian 12's)
does not have. Reading tar is small and well specified (POSIX ustar + pax, GNU's ``L``/``K``), so
vmctl reads it here with hard limits and leaves *writing* to :mod:`tarfile`, which is safe.

What this reader promises:

- memory is bounded by the limits below, whatever the stream says (no member list is kept);
- every header's checksum is verified, numbers are octal or GNU base-256, never negative;
- a member's data is offered as a reader of exactly its size, and skipped if the caller does not
  read it (by seeking when the source can seek, so an archive's index can be scanned cheaply);
- a stream that ends inside a header or a member, a bad checksum, an unknown member type or a
  header beyond the limits raises :class:`TarFormatError` (an :class:`IntegrityError`) with one line.

Names and link targets are returned as they were sent (decoded as UTF-8 with surrogateescape):
judging them is the caller's job (see :func:`vmctl.guest.landing` and :mod:`vmctl.archive`).
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from vmctl.errors import IntegrityError

BLOCK = 512
MAX_NAME = 4096             # PATH_MAX: longer names cannot exist on the host anyway
MAX_PAX = 1 << 20           # one pax extended header (path, linkpath, a few numbers)
MAX_PAX_RECORDS = 1024
MAX_MEMBER = 1 << 50        # 1 PiB: a sanity bound, real bounds are the callers'

REGULAR, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO = "file", "hardlink", "symlink", "chardev", "blockdev", "dir", "fifo"
_TYPES = {b"0": REGULAR, b"\0": REGULAR, b"7": REGULAR, b"1": HARDLINK, b"2": SYMLINK,
          b"3": CHARDEV, b"4": BLOCKDEV, b"5": DIRECTORY, b"6": FIFO}
_GNU_LONGNAME, _GNU_LONGLINK, _PAX, _PAX_GLOBAL = b"L", b"K", b"x", b"g"


class TarFormatError(IntegrityError):
    """The stream is not a well-formed tar within vmctl's limits."""


@dataclass(frozen=True)
class Member:
    """One entry of the stream. `kind` is one of the module's type names."""

    name: str
    kind: str
    size: int          # bytes of data that follow (0 for everything but regular files)
    mode: int          # permission bits as sent (callers mask them)
    mtime: int
    linkname: str

    @property
    def isreg(self) -> bool:
        return self.kind == REGULAR


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstr(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def _number(field: bytes, what: str) -> int:
    """An octal (NUL/space padded) or GNU base-256 number field; negative numbers are refused."""
    if field and field[0] & 0x80:
        if field[0] != 0x80:
            raise TarFormatError(f"tar header: negative or oversized {what}")
        value = 0
        for b in field[1:]:
            value = (value << 8) | b
        return value
    text = field.replace(b"\0", b" ").strip()
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):  # '0'..'7' only: no sign, no Unicode digits
        raise TarFormatError(f"tar header: {what} is not an octal number")
    return int(text, 8)


def _decimal(text: str) -> bool:
    """A non-negative decimal of at most 20 ASCII digits (int() of thousands of digits is slow,
    and of more than 4300 an error)."""
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = sum((b - 256 if b > 127 else b) for b in block[:148]) + 8 * 32 + sum(
        (b - 256 if b > 127 else b) for b in block[156:])
    return stored in (unsigned, signed)


def _parse_pax(data: bytes) -> dict[str, str]:
    """``"LEN key=value\\n"`` records (POSIX pax); only the keys vmctl uses are kept."""
    out: dict[str, str] = {}
    pos = 0
    records = 0
    while pos < len(data):
        if data[pos] == 0:  # padding some writers leave
            break
        space = data.find(b" ", pos, pos + 21)
        if space < 0:
            raise TarFormatError("tar: malformed pax header")
        length_text = data[pos:space]
        if not length_text or len(length_text) > 20 or not all(48 <= c <= 57 for c in length_text):
            raise TarFormatError("tar: malformed pax record length")
        length = int(length_text)
        end = pos + length
        if length < 5 or end > len(data) or data[end - 1:end] != b"\n":
            raise TarFormatError("tar: malformed pax record")
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if not eq:
            raise TarFormatError("tar: malformed pax record")
        records += 1
        if records > MAX_PAX_RECORDS:
            raise TarFormatError("tar: too many pax records")
        k = key.decode("ascii", "replace")
        if k in ("path", "linkpath", "size", "mtime"):
            out[k] = _decode(value)
        pos = end
    return out


class _Data(io.RawIOBase):
    """Exactly `size` bytes of one member; reading past them returns EOF."""

    def __init__(self, reader: "TarReader", size: int):
        self._reader, self.left = reader, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.left <= 0:
            return 0
        want = min(len(b), self.left)
        data = self._reader._read_some(want)
        n = len(data)
        b[:n] = data
        self.left -= n
        return n

    def read(self, n: int = -1) -> bytes:
        """At most `n` bytes, and never more than 1 MiB at once (``read()`` included): callers
        loop, so no member, however large it claims to be, is ever held in memory whole."""
        if n is None or n < 0:
            n = self.left
        n = min(n, self.left, 1 << 20)
        if n <= 0:
            return b""
        data = self._reader._read_exact(n)
        self.left -= len(data)
        return data


class TarReader:
    """Iterate a tar stream: ``for member, data in TarReader(fileobj): ...``.

    `data` is only valid until the next member is requested; what the caller leaves unread is
    skipped. `max_members` bounds the number of entries (links and directories included).
    """

    def __init__(self, fileobj: BinaryIO, *, max_members: int = 1_000_000, what: str = "tar stream"):
        self._f = fileobj
        self.max_members = max_members
        self.what = what
        self.members = 0
        self.offset = 0          # bytes of the stream consumed so far
        self._pending: _Data | None = None
        self._pad = 0
        # Skipping by seeking only on a plain open()ed regular file: a decompressor "seeks" by
        # decompressing (and GzipFile even reports its compressed file's fileno()).
        self._size: int | None = None
        raw = fileobj.raw if isinstance(fileobj, io.BufferedReader) else fileobj
        if isinstance(raw, io.FileIO):
            try:
                st = os.fstat(raw.fileno())
                if stat.S_ISREG(st.st_mode):
                    self._size = st.st_size
            except (OSError, ValueError):
                pass

    # -- raw reading ---------------------------------------------------------------------------
    def _read_some(self, n: int) -> bytes:
        data = self._f.read(n)
        if not data:
            raise TarFormatError(f"{self.what} is truncated (it ends inside a member)")
        self.offset += len(data)
        return data

    def _read_exact(self, n: int) -> bytes:
        parts = []
        left = n
        while left:
            data = self._f.read(min(left, 1 << 20))
            if not data:
                raise TarFormatError(f"{self.what} is truncated (it ends inside a member)")
            parts.append(data)
            left -= len(data)
            self.offset += len(data)
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        if n <= 0:
            return
        if self._size is not None:
            here = self._f.tell()
            if here + n > self._size:
                raise TarFormatError(f"{self.what} is truncated (it ends inside a member)")
            self._f.seek(here + n)
            self.offset += n
            return
        while n:
            data = self._f.read(min(n, 1 << 20))
            if not data:
                raise TarFormatError(f"{self.what} is truncated (it ends inside a member)")
            n -= len(data)
            self.offset += len(data)

    def _finish_pending(self) -> None:
        if self._pending is not None:
            self._skip(self._pending.left)
            self._pending.left = 0
            self._pending = None
        self._skip(self._pad)
        self._pad = 0

    def _block(self) -> bytes | None:
        """The next 512-byte block, or None at a clean end of the stream."""
        first = self._f.read(BLOCK)
        if not first:
            return None
        block = first
        while len(block) < BLOCK:
            more = self._f.read(BLOCK - len(block))
            if not more:
                raise TarFormatError(f"{self.what} is truncated (it ends inside a header)")
            block += more
        self.offset += BLOCK
        return block

    def _extension(self, size: int, limit: int, what: str) -> bytes:
        if size > limit:
            raise TarFormatError(f"{self.what}: a {what} header of {size} bytes is over the {limit}-byte limit")
        data = self._read_exact(size) if size else b""
        self._skip(-size % BLOCK)
        return data

    # -- members -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[Member, _Data]]:
        while True:
            got = self.next()
            if got is None:
                return
            yield got

    def next(self) -> tuple[Member, _Data] | None:
        """The next member and its data reader, or None at the end of the archive."""
        self._finish_pending()
        long_name: str | None = None
        long_link: str | None = None
        pax: dict[str, str] = {}
        while True:
            block = self._block()
            if block is None or block == b"\0" * BLOCK:
                # end of archive: one or two zero blocks, or a clean EOF at a header boundary
                if long_name is not None or long_link is not None or pax:
                    raise TarFormatError(f"{self.what} ends after an extended header")
                return None
            if not _checksum_ok(block):
                raise TarFormatError(f"{self.what}: bad header checksum at byte {self.offset - BLOCK}")
            typeflag = block[156:157]
            size = _number(block[124:136], "size")
            if size > MAX_MEMBER:
                raise TarFormatError(f"{self.what}: member size {size} is absurd")
            if typeflag == _GNU_LONGNAME:
                long_name = _decode(_cstr(self._extension(size, MAX_NAME + 1, "long-name")))
                continue
            if typeflag == _GNU_LONGLINK:
                long_link = _decode(_cstr(self._extension(size, MAX_NAME + 1, "long-link")))
                continue
            if typeflag == _PAX:
                pax = _parse_pax(self._extension(size, MAX_PAX, "pax"))
                continue
            if typeflag == _PAX_GLOBAL:
                _parse_pax(self._extension(size, MAX_PAX, "pax global"))  # checked, then ignored
                continue
            kind = _TYPES.get(typeflag)
            if kind is None:
                raise TarFormatError(f"{self.what}: unsupported member type {typeflag!r}")
            self.members += 1
            if self.members > self.max_members:
                raise TarFormatError(f"{self.what} has more than {self.max_members} members")
            name_b = _cstr(block[0:100])
            magic = block[257:263]
            if magic == b"ustar\0":  # POSIX ustar: a 155-byte prefix (GNU's "ustar  " has none)
                prefix = _cstr(block[345:500])
                if prefix:
                    name_b = prefix + b"/" + name_b
            name = long_name if long_name is not None else _decode(name_b)
            linkname = long_link if long_link is not None else _decode(_cstr(block[157:257]))
            if "path" in pax:
                name = pax["path"]
            if "linkpath" in pax:
                linkname = pax["linkpath"]
            if "size" in pax:
                text = pax["size"]
                if not _decimal(text):
                    raise TarFormatError(f"{self.what}: pax size {text[:20]!r} is not a number")
                size = int(text)
                if size > MAX_MEMBER:
                    raise TarFormatError(f"{self.what}: member size {size} is absurd")
            mtime = _number(block[136:148], "mtime")
            if "mtime" in pax:
                head = pax["mtime"].split(".", 1)[0]
                if _decimal(head):
                    mtime = int(head)
            if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME or len(linkname) > MAX_NAME:
                raise TarFormatError(f"{self.what}: a name is longer than {MAX_NAME} bytes")
            if kind != REGULAR:
                # only regular files carry data; a size on anything else is skipped unread
                self._skip(size + (-size % BLOCK))
                size = 0
            mode = _number(block[100:108], "mode") & 0o7777
            member = Member(name=name, kind=kind, size=size, mode=mode, mtime=mtime, linkname=linkname)
            data = _Data(self, size)
            self._pending = data
            self._pad = -size % BLOCK
            return member, data
