"""`vmctl cp GUEST:DIR DEST` against guests that lie: real SSH servers whose copy tools were replaced.

- dropbear with busybox (the tiny guest's userland), whose login shell is replaced by a script that
  answers vmctl's ``tar -c`` with whatever stream the test wrote (the exec path; busybox's own sh
  runs its applets internally, so replacing /usr/bin/tar would not be enough for a real attacker
  either);
- OpenSSH whose sftp subsystem is replaced by `hostile_sftp.py` (the SFTP path).

Both go through `GuestSession.get`, exactly what ``vmctl cp`` runs.
"""

from __future__ import annotations

import json
import tracemalloc
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tarcraft
from tests.figures import record
from tests.guest.conftest import start_dropbear, start_openssh
from tests.guest.copyhelpers import assert_contained, leftovers, make_box, snapshot
from vmctl.errors import IntegrityError, ResourceError
from vmctl.guest.landing import SKIP_DEVICE, SKIP_OUTSIDE
from vmctl.guest.ssh import GuestSession

pytestmark = pytest.mark.contract
M = tarcraft.member


def _hostile_shell(path: Path, crafted: Path, then: str) -> None:
    """A login shell that answers ``tar -c ...`` with the crafted stream (`then`: more after it)."""
    path.write_text("#!/bin/sh\n"
                    'case "$2" in\n'
                    f'  "tar -c "*) cat {crafted}; {then or ":"} ;;\n'
                    '  *) exec /bin/sh "$@" ;;\n'
                    "esac\n")
    path.chmod(0o755)


@pytest.fixture(scope="module")
def tar_guest(tmp_path_factory, client_key):
    base = tmp_path_factory.mktemp("hostile-dropbear")
    crafted = base / "crafted.tar"
    shell = base / "hostile-shell"
    _hostile_shell(shell, crafted, "")
    srv = start_dropbear(base, client_key.public_line, login_shell=str(shell))
    if not (base / "busybox-bin").is_dir():
        srv.stop()
        pytest.fail("busybox is needed to stand for the tiny guest's userland (apt-get install busybox-static)")
    (base / "remote-dir").mkdir()
    yield srv, crafted, base / "remote-dir"
    srv.stop()


@pytest.fixture(scope="module")
def sftp_guest(tmp_path_factory, client_key):
    base = tmp_path_factory.mktemp("hostile-openssh")
    scenario = base / "scenario.json"
    scenario.write_text("{}")
    server = f"{sys.executable} {Path(__file__).with_name('hostile_sftp.py')} {scenario}"
    srv = start_openssh(base, client_key.public_line, sftp_server=server)
    yield srv, scenario
    srv.stop()


def _session(srv, client_key, **kw):
    return GuestSession(srv.host, srv.port, user=srv.user, client_key=client_key,
                        host_key_line=srv.host_key_line, **kw)


@pytest.fixture
def box(tmp_path):
    return make_box(tmp_path)


TAR_CASES = {
    "climb out with ..": [M("../../outside/secret", b"pwned")],
    "plant a link, write through it": [M("x", typeflag=b"2", linkname="../../outside"), M("x/secret", b"pwned")],
    "absolute name": [M("/tmp/vmctl-pwned", b"pwned")],
    "hard link to a host file": [M("h", typeflag=b"1", linkname="/etc/shadow")],
}


@pytest.mark.parametrize("case", sorted(TAR_CASES))
def test_a_guest_tar_that_lies_is_refused(tar_guest, client_key, box, case):
    srv, crafted, remote = tar_guest
    crafted.write_bytes(tarcraft.stream(M(".", typeflag=b"5", mode=0o755), *TAR_CASES[case]))
    before = snapshot(box)
    with _session(srv, client_key) as s, pytest.raises(IntegrityError) as info:
        s.get(str(remote), box / "dest")
    assert "\n" not in str(info.value)
    assert snapshot(box) == before and not leftovers(box / "dest")
    assert not Path("/tmp/vmctl-pwned").exists()
    record("hostile guest copy streams tried", 1)


def test_a_guest_tar_with_devices_setuid_and_outward_links_lands_sanitized(tar_guest, client_key, box):
    srv, crafted, remote = tar_guest
    crafted.write_bytes(tarcraft.stream(
        M(".", typeflag=b"5", mode=0o777), M("suid", b"x", mode=0o4777), M("null", typeflag=b"3"),
        M("etc", typeflag=b"2", linkname="/etc"), M("ok", typeflag=b"2", linkname="suid")))
    with _session(srv, client_key) as s:
        got = s.get(str(remote), box / "dest")
        report = s.last_report
    assert got == box / "dest" / "remote-dir"
    assert_contained(got)
    assert sorted(p.name for p in got.iterdir()) == ["ok", "suid"]
    assert report.skipped == {SKIP_DEVICE: 1, SKIP_OUTSIDE: 1}


def test_a_guest_tar_that_never_ends_is_bounded_by_free_space(tar_guest, client_key, tmp_path):
    srv, crafted, remote = tar_guest
    # a valid header, then far more data than it announces would fit anywhere: /dev/zero
    _hostile_shell(crafted.parent / "hostile-shell", crafted, "exec cat /dev/zero")
    crafted.write_bytes(tarcraft.header("big", size=1 << 40))
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(mnt)], check=True)
    try:
        with _session(srv, client_key) as s, pytest.raises(ResourceError):
            s.get(str(remote), mnt)
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        _hostile_shell(crafted.parent / "hostile-shell", crafted, "")


SFTP_CASES = {
    "a listed name with a slash": {"listing": {"/g": [{"name": "../outside/secret", "type": "file"}]}},
    "a listed name with a NUL byte": {"listing": {"/g": [{"name": "a\x00b", "type": "file"}]}},
    "an empty listed name": {"listing": {"/g": [{"name": "", "type": "dir", "mode": 0o755}]}},
    "an endless directory listing": {"endless": ["/g"]},
    "a directory nested without end": {"tree": {"/g/a": {"type": "dir", "mode": 0o755}},
                                       "listing": {}, "deep": True},
}


def _scenario(case: dict) -> dict:
    tree = {"/g": {"type": "dir", "mode": 0o755}, **case.get("tree", {})}
    listing = dict(case.get("listing", {}))
    if case.get("deep"):
        # every directory contains "a": /g/a/a/a/... forever
        listing = {"/g" + "/a" * i: [{"name": "a", "type": "dir", "mode": 0o755}] for i in range(300)}
        tree.update({"/g" + "/a" * i: {"type": "dir", "mode": 0o755} for i in range(1, 301)})
    return {"tree": tree, "listing": listing, "endless": case.get("endless", [])}


@pytest.mark.parametrize("case", sorted(SFTP_CASES))
def test_an_sftp_server_that_lies_is_refused(sftp_guest, client_key, box, case):
    srv, scenario = sftp_guest
    scenario.write_text(json.dumps(_scenario(SFTP_CASES[case])))
    before = snapshot(box)
    tracemalloc.start()   # what vmctl (and paramiko) allocate while the server lies, at its peak
    try:
        with _session(srv, client_key) as s, pytest.raises(IntegrityError) as info:
            s.get("/g", box / "dest")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(info.value)
    assert snapshot(box) == before and not leftovers(box / "dest")
    assert peak < 200 << 20, f"peak allocations {peak >> 20} MiB"
    record("hostile guest copy streams tried", 1)
    record("peak allocations under a hostile SFTP server", peak / (1 << 20), how="max", unit="MiB")


def test_an_sftp_server_sending_links_devices_and_modes_lands_sanitized(sftp_guest, client_key, box):
    srv, scenario = sftp_guest
    scenario.write_text(json.dumps({"tree": {
        "/g": {"type": "dir", "mode": 0o777},
        "/g/f": {"type": "file", "mode": 0o6777, "data": "hello"},
        "/g/etc": {"type": "link", "target": "/etc"},
        "/g/up": {"type": "link", "target": "../../outside/secret"},
        "/g/ok": {"type": "link", "target": "f"},
        "/g/dev": {"ifmt": 0o020000, "mode": 0o666},
    }}))
    with _session(srv, client_key) as s:
        got = s.get("/g", box / "dest")
        report = s.last_report
    assert_contained(got)
    assert sorted(p.name for p in got.iterdir()) == ["f", "ok"]
    assert (got / "f").read_text() == "hello" and (got / "f").stat().st_mode & 0o7777 == 0o755
    assert report.skipped == {SKIP_DEVICE: 1, SKIP_OUTSIDE: 2}
    assert (box / "outside" / "secret").read_text() == "keep me"


def test_an_sftp_file_that_never_ends_is_bounded_by_free_space(sftp_guest, client_key, tmp_path):
    srv, scenario = sftp_guest
    scenario.write_text(json.dumps({"tree": {
        "/g": {"type": "dir", "mode": 0o755},
        "/g/endless": {"type": "file", "mode": 0o644, "data": "z" * 4096, "repeat": -1, "size": 10},
    }}))
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(mnt)], check=True)
    try:
        with _session(srv, client_key) as s, pytest.raises(ResourceError):
            s.get("/g", mnt)
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
