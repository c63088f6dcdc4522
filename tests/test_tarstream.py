"""vmctl's bounded tar reader: what real tar writers produce, and what hostile ones send."""

from __future__ import annotations

import io
import os
import resource
import tarfile

import pytest

from tests import tarcraft
from tests.figures import record
from vmctl.tarstream import DIRECTORY, HARDLINK, REGULAR, SYMLINK, TarFormatError, TarReader


def _members(data: bytes, **kw):
    out = []
    for m, body in TarReader(io.BytesIO(data), **kw):
        content = b""
        while chunk := body.read(1 << 16):
            content += chunk
        out.append((m.name, m.kind, m.mode, m.linkname, content))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_what_tarfile_writes_in_every_format(fmt):
    long = "d/" + "n" * 150 + "/" + "é" * 40 + ".txt"  # needs a prefix, a long name or pax
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, data, link in [("d", tarfile.DIRTYPE, b"", ""), ("d/a", tarfile.REGTYPE, b"hello", ""),
                                       (long if fmt != tarfile.USTAR_FORMAT else "d/" + "p" * 120 + "/x",
                                        tarfile.REGTYPE, os.urandom(3000), ""),
                                       ("d/l", tarfile.SYMTYPE, b"", "a" if fmt == tarfile.USTAR_FORMAT else "x" * 200),
                                       ("d/h", tarfile.LNKTYPE, b"", "d/a")]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o640
            tf.addfile(info, io.BytesIO(data) if data else None)
    got = _members(buf.getvalue())
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        want = [(i.name, i.type, i.linkname, tf.extractfile(i).read() if i.isreg() else b"") for i in tf]
    kinds = {tarfile.DIRTYPE: DIRECTORY, tarfile.REGTYPE: REGULAR, tarfile.SYMTYPE: SYMLINK, tarfile.LNKTYPE: HARDLINK}
    assert [(n.rstrip("/"), k, lk, c) for n, k, _, lk, c in got] == [(n, kinds[t], lk, c) for n, t, lk, c in want]
    assert all(mode == 0o640 for _, _, mode, _, _ in got)


def test_gnu_base256_size_and_skipping_unread_data():
    big = tarcraft.header("big", size_field=b"\x80" + (70000).to_bytes(11, "big")) + tarcraft.pad(b"z" * 70000)
    data = tarcraft.stream(big, tarcraft.member("after", b"ok"))
    reader = TarReader(io.BytesIO(data))
    first, body = reader.next()
    assert first.size == 70000 and body.read(10) == b"z" * 10  # the rest is skipped
    second, body = reader.next()
    assert second.name == "after" and body.read() == b"ok"
    assert reader.next() is None


HOSTILE = {
    "truncated member": tarcraft.header("f", size=5000) + b"x" * 100,
    "truncated header": tarcraft.header("f")[:300],
    "bad checksum": tarcraft.stream(tarcraft.header("f", bad_checksum=True)),
    "negative base-256 size": tarcraft.stream(tarcraft.header("f", size_field=b"\xff" * 12)),
    "non-octal size": tarcraft.stream(tarcraft.header("f", size_field=b"\xd9\xa1\xd9\xa2" + b"\0" * 8)),
    "unknown member type": tarcraft.stream(tarcraft.member("f", typeflag=b"S")),
    "pax header claims 8 GiB": tarcraft.header("p", typeflag=b"x", size=8 << 30) + b"0" * 4096,
    "GNU long name claims 1 GiB": tarcraft.header("././@LongLink", typeflag=b"L", size=1 << 30) + b"a" * 4096,
    "malformed pax record": tarcraft.stream(tarcraft.member("p", b"99999 path=x\n", typeflag=b"x"),
                                            tarcraft.member("f")),
    "pax size that is not a number": tarcraft.stream(tarcraft.pax({"size": "١٢"}), tarcraft.member("f")),
    "extended header with nothing after it": tarcraft.stream(tarcraft.pax({"path": "x"})),
    "a name over 4096 bytes": tarcraft.stream(tarcraft.pax({"path": "a/" * 2100}), tarcraft.member("f")),
    "a pax size of 5000 digits": tarcraft.stream(tarcraft.pax({"size": "9" * 5000}), tarcraft.member("f")),
    "a pax size over 1 PiB": tarcraft.stream(tarcraft.pax({"size": str(1 << 51)}), tarcraft.member("f")),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_streams_are_one_line_errors_in_bounded_memory(case):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TarFormatError) as info:
        _members(HOSTILE[case])
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert "\n" not in str(info.value)
    assert grown < 64 * 1024, f"{case}: peak memory grew {grown} KiB"  # KiB: far below any claimed size
    record("hostile tar streams refused", 1)


def test_member_count_is_bounded():
    data = tarcraft.stream(*[tarcraft.member(f"f{i}") for i in range(50)])
    with pytest.raises(TarFormatError, match="more than 10 members"):
        _members(data, max_members=10)
    assert len(_members(data)) == 50


def test_an_absurd_pax_mtime_is_ignored_not_a_crash():
    got = _members(tarcraft.stream(tarcraft.pax({"mtime": "9" * 5000}), tarcraft.member("f", b"x")))
    assert [(n, c) for n, _, _, _, c in got] == [("f", b"x")]


def test_clean_eof_without_end_blocks_is_the_end():
    assert [m[0] for m in _members(tarcraft.stream(tarcraft.member("a", b"1"), terminate=False))] == ["a"]
