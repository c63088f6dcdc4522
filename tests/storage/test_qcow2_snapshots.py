"""The qcow2 snapshot-table reader (a host VM's snapshots, read over a volume download) agrees with
qemu-img on real files, and refuses hostile bytes in one line within its bounds."""

from __future__ import annotations

import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmctl.errors import IntegrityError
from vmctl.storage import qcow2_snapshots as q
from vmctl.storage import qemu_img


def _reader(data: bytes, log: list | None = None):
    def read(offset: int, length: int) -> bytes:
        if log is not None:
            log.append((offset, length))
        return data[offset:offset + length]
    return read


def _qcow2(tmp_path, names):
    f = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(f), "64M"], check=True)
    for n in names:
        subprocess.run(["qemu-img", "snapshot", "-c", n, str(f)], check=True)
    return f


def test_agrees_with_qemu_img(tmp_path):
    names = ["one", "two-with-a-longer-name", "x" * 200, "ünï"]
    f = _qcow2(tmp_path, names)
    ours = q.read_table(_reader(f.read_bytes()), "d.qcow2")
    theirs = qemu_img.snapshot_table(f)
    assert list(ours) == names
    for n in names:
        for key in ("id", "name", "vm-state-size", "date-sec", "date-nsec", "vm-clock-sec", "vm-clock-nsec"):
            assert ours[n][key] == theirs[n][key], (n, key)


def test_no_snapshots_is_one_small_read(tmp_path):
    log: list = []
    assert q.read_table(_reader(_qcow2(tmp_path, []).read_bytes(), log), "d") == {}
    assert log == [(0, q.HEADER_BYTES)]


def test_a_table_longer_than_the_first_guess_is_read_again_larger(tmp_path):
    # ~330 bytes an entry (QEMU keeps names to 255 bytes): 60 of them run past nb*256+4096
    names = [f"s{i:03d}-" + "n" * 250 for i in range(60)]
    f = _qcow2(tmp_path, names)
    log: list = []
    assert list(q.read_table(_reader(f.read_bytes(), log), "d")) == names
    assert len(log) == 3 and log[2][1] > log[1][1]


def _header(nb: int, offset: int, version: int = 3) -> bytes:
    h = bytearray(q.HEADER_BYTES)
    h[:4] = q.QCOW2_MAGIC
    struct.pack_into(">I", h, 4, version)
    struct.pack_into(">IQ", h, 60, nb, offset)
    return bytes(h)


def _entry(name: bytes, ident: bytes = b"1", extra: bytes = b"", nsec: int = 0) -> bytes:
    e = struct.pack(">QIHHIIQII", 0, 0, len(ident), len(name), 1, nsec, 0, 7, len(extra)) + extra + ident + name
    return e + b"\0" * (-len(e) % 8)


@pytest.mark.parametrize("data, message", [
    (b"not a qcow2 at all" * 8, "is not a qcow2 image"),
    (_header(1, 72, version=9), "unsupported qcow2 version 9"),
    (_header(q.MAX_SNAPSHOTS + 1, 72), "more than qcow2 allows"),
    (_header(1, 73), "malformed snapshot table offset"),
    (_header(1, 8), "malformed snapshot table offset"),
    (_header(2, 72) + _entry(b"a"), "truncated at entry 1"),
    (_header(1, 72) + _entry(b"a", extra=b"\0" * 2048), "bytes of extra data"),
    (_header(1, 72) + _entry(b"\xff\xfe"), "not UTF-8"),
    (_header(1, 72) + _entry(b"a", nsec=2_000_000_000), "malformed date"),
    (_header(3, 1 << 40), "truncated at entry 0"),          # the table lies past the end of the file
])
def test_hostile_tables_are_one_line(data, message):
    with pytest.raises(IntegrityError) as err:
        q.read_table(_reader(data), "h1:vm.qcow2")
    assert message in str(err.value) and "\n" not in str(err.value) and "h1:vm.qcow2" in str(err.value)


def test_two_entries_of_one_name_keep_the_later_as_qemu_img_does(tmp_path):
    f = _qcow2(tmp_path, ["same", "same"])
    ours = q.read_table(_reader(f.read_bytes()), "d")
    assert list(ours) == ["same"] and ours["same"]["id"] == qemu_img.snapshot_table(f)["same"]["id"] == "2"


def test_large_state_size_comes_from_the_extra_data():
    data = _header(1, 72) + _entry(b"big", extra=struct.pack(">QQQ", 5 << 32, 0, 0))
    assert q.read_table(_reader(data), "d")["big"]["vm-state-size"] == 5 << 32


def test_reads_stay_bounded_whatever_the_header_claims():
    log: list = []
    data = _header(q.MAX_SNAPSHOTS, 72) + b"\0" * 64   # claims the most entries, holds almost none
    with pytest.raises(IntegrityError):
        q.read_table(_reader(data, log), "d")
    assert all(length <= q.MAX_TABLE for _off, length in log) and len(log) <= 2


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=600), st.integers(0, 40), st.integers(0, 1 << 20))
def test_any_bytes_give_a_table_or_one_integrity_line(tail, nb, offset):
    data = _header(nb, 72 + (offset % 64) * 8) + tail
    try:
        table = q.read_table(_reader(data), "d")
    except IntegrityError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(table) == nb
