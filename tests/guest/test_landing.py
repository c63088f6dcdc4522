"""Guest → host copies land through `Landing`: crafted tar streams against a real host directory.

Each hostile case is a stream a root-in-the-guest could send instead of what ``tar -c`` writes. The
promise checked every time: nothing outside the destination changes, no staging directory is left,
and the destination is either untouched (refused, one-line error) or holds the copy without any
link leading out, device node, setuid/setgid or group/world-writable mode.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests import tarcraft
from tests.figures import record
from tests.guest.copyhelpers import assert_contained, leftovers, make_box, snapshot
from vmctl.errors import ConflictError, IntegrityError, ResourceError
from vmctl.guest.files import unpack
from vmctl.guest.landing import SKIP_DEVICE, SKIP_OUTSIDE, Landing


@pytest.fixture
def box(tmp_path):
    box = make_box(tmp_path)
    (box / "dest" / "old").write_text("old")
    return box


def land(target: Path, data: bytes, **kw):
    with Landing(target, **kw) as ld:
        unpack(io.BytesIO(data), ld, "the test stream")
        return ld.finish()


M = tarcraft.member

REFUSED = {
    "absolute name": [M("/etc/cron.d/x", b"pwn")],
    "dot-dot name": [M("../outside/secret", b"pwn")],
    "dot-dot inside a name": [M("a/../../outside/secret", b"pwn")],
    "write through a planted symlink": [M("lnk", typeflag=b"2", linkname="../outside"), M("lnk/secret", b"pwn")],
    "write through an absolute symlink": [M("lnk", typeflag=b"2", linkname="/tmp"), M("lnk/x", b"pwn")],
    "directory over a planted symlink": [M("lnk", typeflag=b"2", linkname="../outside"), M("lnk", typeflag=b"5")],
    "hard link to a host file": [M("h", typeflag=b"1", linkname="/etc/passwd")],
    "hard link climbing out": [M("h", typeflag=b"1", linkname="../outside/secret")],
    "hard link to something never sent": [M("h", typeflag=b"1", linkname="nope")],
    "hard link through a symlink": [M("lnk", typeflag=b"2", linkname="../outside"),
                                    M("h", typeflag=b"1", linkname="lnk/secret")],
    "NUL in a name": [tarcraft.pax({"path": "a\x00b"}), M("ignored", b"x")],
    "file over the root": [M(".", b"x")],
    "a hard link to itself": [M("a", b"x"), M("a", typeflag=b"1", linkname="a")],
    "non-directory over a directory": [M("d", typeflag=b"5"), M("d/f", b"1"), M("d", b"file now")],
    "a component over 255 bytes": [tarcraft.pax({"path": "x" * 300}), M("ignored", b"x")],
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_streams_are_refused_and_change_nothing(box, case):
    before = snapshot(box)
    with pytest.raises(IntegrityError) as info:
        land(box / "dest" / "copy", tarcraft.stream(M(".", typeflag=b"5", mode=0o755), *REFUSED[case]))
    assert "\n" not in str(info.value)
    assert snapshot(box) == before, case
    assert not leftovers(box / "dest")
    record("hostile guest copy streams tried", 1)


def test_links_are_kept_inside_and_dropped_when_they_lead_out(box):
    data = tarcraft.stream(
        M(".", typeflag=b"5", mode=0o750),
        M("sub", typeflag=b"5", mode=0o755),
        M("sub/file", b"data", mode=0o644),
        M("ok-rel", typeflag=b"2", linkname="sub/file"),
        M("sub/ok-up", typeflag=b"2", linkname="../ok-rel"),
        M("abs", typeflag=b"2", linkname="/etc/passwd"),
        M("up", typeflag=b"2", linkname="../outside/secret"),
        M("sub/up2", typeflag=b"2", linkname="../../outside"),
        # a chain that only escapes through another link: self -> ., esc -> self/..
        M("self", typeflag=b"2", linkname="."),
        M("esc", typeflag=b"2", linkname="self/.."),
        M("sub/deep", typeflag=b"2", linkname="../self/../self/sub"),
        M("hard", typeflag=b"1", linkname="sub/file"),
    )
    before = snapshot(box)
    report = land(box / "dest" / "copy", data)
    copy = box / "dest" / "copy"
    assert_contained(copy)
    kept = {p.name for p in copy.rglob("*") if p.is_symlink()}
    assert kept == {"ok-rel", "ok-up", "self"}
    assert report.skipped == {SKIP_OUTSIDE: 5}
    assert (copy / "ok-rel").read_text() == "data" and (copy / "sub" / "ok-up").read_text() == "data"
    assert os.stat(copy / "hard").st_ino == os.stat(copy / "sub" / "file").st_ino
    after = snapshot(box)
    assert {k: v for k, v in after.items() if not k.startswith("dest/copy")} == before


def test_link_loops_do_not_break_a_copy(box):
    report = land(box / "dest" / "copy", tarcraft.stream(
        M("loop1", typeflag=b"2", linkname="loop2"), M("loop2", typeflag=b"2", linkname="loop1"),
        M("f", b"x")))
    assert_contained(box / "dest" / "copy")
    assert report.skipped.get(SKIP_OUTSIDE, 0) >= 1  # a loop cannot be proven to stay inside
    assert (box / "dest" / "copy" / "f").read_text() == "x"


def test_modes_devices_and_owners_from_the_guest_are_not_trusted(box):
    data = tarcraft.stream(
        M(".", typeflag=b"5", mode=0o777),
        M("suid", b"#!/bin/sh\n", mode=0o6777),
        M("world", b"w", mode=0o666),
        M("sticky", typeflag=b"5", mode=0o1777),
        M("null", typeflag=b"3"), M("disk", typeflag=b"4"), M("fifo", typeflag=b"6"),
        M("ro-dir", typeflag=b"5", mode=0o500), M("ro-dir/f", b"x", mode=0o400),
    )
    report = land(box / "dest" / "copy", data)
    copy = box / "dest" / "copy"
    assert_contained(copy)
    assert stat.S_IMODE((copy / "suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((copy / "world").stat().st_mode) == 0o644
    assert stat.S_IMODE((copy / "sticky").stat().st_mode) == 0o755
    assert stat.S_IMODE(copy.stat().st_mode) == 0o755
    assert stat.S_IMODE((copy / "ro-dir").stat().st_mode) == 0o700  # the owner can still clean up
    assert report.skipped == {SKIP_DEVICE: 3}
    assert not any((copy / n).exists() for n in ("null", "disk", "fifo"))
    assert all(p.stat().st_uid == os.geteuid() for p in copy.rglob("*"))


def test_a_copy_into_an_existing_directory_merges_and_conflicts_change_nothing(box):
    dest = box / "dest"
    land(dest, tarcraft.stream(M(".", typeflag=b"5", mode=0o755), M("new", b"n"), M("old", b"replaced")))
    assert (dest / "new").read_text() == "n" and (dest / "old").read_text() == "replaced"
    (dest / "d").mkdir()
    (dest / "d" / "keep").write_text("k")
    before = snapshot(box)
    with pytest.raises(ConflictError):
        land(dest, tarcraft.stream(M("a-new-file", b"x"), M("d", b"a file over a directory")))
    assert snapshot(box) == before and not leftovers(box) and not leftovers(dest)
    os.symlink("../outside", dest / "planted")
    with pytest.raises(ConflictError, match="symbolic link"):
        Landing(dest / "planted")


def test_a_stream_that_fills_the_disk_stops_at_the_reserve_and_leaves_nothing(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "dest").mkdir()

        def endless():
            # a header claiming no size, then a pax size of 1 TiB and data that never ends
            yield tarcraft.stream(tarcraft.pax({"size": str(1 << 40)}), terminate=False)
            yield tarcraft.header("big")
            while True:
                yield b"\0" * (1 << 20)

        class Endless(io.RawIOBase):
            def __init__(self):
                self.gen, self.buf = endless(), b""

            def readable(self):
                return True

            def readinto(self, b):
                while not self.buf:
                    self.buf = next(self.gen)
                n = min(len(b), len(self.buf))
                b[:n], self.buf = self.buf[:n], self.buf[n:]
                return n

        with pytest.raises(ResourceError) as info:
            with Landing(mnt / "dest" / "copy", reserve=8 << 20) as ld:
                unpack(io.BufferedReader(Endless()), ld, "endless")
        assert "nothing was copied" in str(info.value)
        # the claimed size alone was refused before writing; a stream that lies about its size fills
        # only up to the reserve:
        with pytest.raises(ResourceError):
            with Landing(mnt / "dest" / "copy", reserve=8 << 20) as ld:
                ld.file("f", 0o644, io.BufferedReader(Endless()))
        assert list((mnt / "dest").iterdir()) == []
        assert os.statvfs(mnt).f_bfree * os.statvfs(mnt).f_frsize > 20 << 20
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_links_are_judged_in_the_tree_a_merge_makes(box):
    """A link that stays inside the copy alone can lead out once merged with what DEST already
    holds (a link of an earlier copy): it is judged in the merged tree, and dropped."""
    (box / "dest" / ".ssh").mkdir()
    (box / "dest" / ".ssh" / "id_rsa").write_text("PRIVATE")
    dot = M(".", typeflag=b"5", mode=0o755)
    land(box / "dest" / "out", tarcraft.stream(dot, M("x", typeflag=b"2", linkname=".")))
    report = land(box / "dest" / "out", tarcraft.stream(dot, M("k", typeflag=b"2", linkname="x/../.ssh/id_rsa"),
                                                        M("ok", typeflag=b"2", linkname="x/x/x")))
    assert report.skipped == {SKIP_OUTSIDE: 1}
    assert not (box / "dest" / "out" / "k").is_symlink()
    assert os.readlink(box / "dest" / "out" / "ok") == "x/x/x"
    assert_contained(box / "dest" / "out")


def test_links_and_directories_count_against_the_reserve(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "dest").mkdir()
        members = []
        for i in range(20000):  # long targets (pax linkpath): a page each on tmpfs, no file data at all
            members += [tarcraft.pax({"linkpath": "y" * 3900}), M(f"d{i}/l", typeflag=b"2", linkname="y")]
        with pytest.raises(ResourceError):
            land(mnt / "dest" / "copy", tarcraft.stream(*members), reserve=16 << 20)
        assert list((mnt / "dest").iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
