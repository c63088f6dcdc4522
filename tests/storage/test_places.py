"""Modes and places: the data root and every directory vmctl makes are private, QEMU's ACL lands
only on vmctl's own directories, root's default data root is /var/lib/vmctl, and no lock file
outlives its lock."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from storage_helpers import QEMU_USER, qemu_user_available
from vmctl.config import load_settings
from vmctl.errors import UsageError


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)) or ".": stat.S_IMODE(p.stat().st_mode)
            for p in [root, *root.rglob("*")] if p.is_dir()}


def test_roots_default_data_root_is_var_lib_vmctl(monkeypatch):
    for var in ("VMCTL_ROOT", "VMCTL_MODE", "VMCTL_CONFIG", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VMCTL_CONFIG", "/dev/null")
    if os.geteuid() == 0:
        assert load_settings().root == Path("/var/lib/vmctl")
    assert load_settings(mode="system").root == Path("/var/lib/vmctl")


def test_every_directory_is_private_and_no_lock_file_survives(cli_run, vmctl_root, tmp_path):
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    assert cli_run("image", "import", str(disk), "base:1").exit_code == 0
    for name in ("v1", "v2"):
        result = cli_run("--connect", "test:///default", "create", name, "--image", "base:1")
        assert result.exit_code == 0, result.output
    # the test driver forgets domains between connections: rm finds none and removes the files
    assert cli_run("--connect", "test:///default", "rm", "v1").exit_code == 0
    modes = _modes(vmctl_root)
    assert set(modes.values()) == {0o700}, {k: oct(v) for k, v in modes.items() if v != 0o700}
    assert list((vmctl_root / "locks").glob("*")) == []   # no lock file for v1, v2 or anything
    assert not any(p.name.endswith((".tmp", ".lock")) for p in vmctl_root.rglob("*") if p.name != "lock")


@pytest.fixture
def qemu_root(qemu_tmp):
    if not qemu_user_available():
        pytest.fail(f"needs root, setfacl and the {QEMU_USER} user")
    return qemu_tmp / "root"


def test_qemus_acl_is_search_only_and_only_on_vmctls_own_directories(qemu_root):
    from vmctl.storage import ImageStore

    parent_acl_before = subprocess.run(["getfacl", "-p", str(qemu_root.parent)], capture_output=True, text=True).stdout
    ImageStore(qemu_root, QEMU_USER)
    for d in (qemu_root, qemu_root / "images", qemu_root / "images" / "layers"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o710, d        # the mask is exactly search
        acl = subprocess.run(["getfacl", "-p", str(d)], capture_output=True, text=True).stdout
        assert f"user:{QEMU_USER}:--x" in acl and "mask::--x" in acl, acl
    for d in (qemu_root / "images" / "tmp", qemu_root / "images" / "holds"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert subprocess.run(["getfacl", "-p", str(qemu_root.parent)], capture_output=True,
                          text=True).stdout == parent_acl_before   # nothing above the data root


def test_opening_the_store_again_never_takes_qemus_access_away(qemu_root, monkeypatch):
    """A chmod of a directory with an ACL resets its mask: done at every open of the store, it
    left a window in which a VM starting in another process could not reach its image."""
    from vmctl import perms
    from vmctl.storage import ImageStore

    ImageStore(qemu_root, QEMU_USER)
    acls = {d: subprocess.run(["getfacl", "-p", str(d)], capture_output=True, text=True).stdout
            for d in (qemu_root, qemu_root / "images", qemu_root / "images" / "layers")}
    chmods = []
    real_chmod = os.chmod
    monkeypatch.setattr(perms.os, "chmod", lambda p, m, *a, **k: (chmods.append(Path(p)), real_chmod(p, m, *a, **k)))
    ImageStore(qemu_root, QEMU_USER)
    assert not set(chmods) & set(acls), chmods       # no directory QEMU searches was chmod'ed
    for d, before in acls.items():
        assert subprocess.run(["getfacl", "-p", str(d)], capture_output=True, text=True).stdout == before
        assert stat.S_IMODE(d.stat().st_mode) == 0o710


def test_a_parent_qemu_cannot_pass_is_named_not_changed(qemu_tmp):
    if not qemu_user_available():
        pytest.fail(f"needs root, setfacl and the {QEMU_USER} user")
    from vmctl.perms import require_path_search

    closed = qemu_tmp / "closed"
    closed.mkdir(mode=0o700)
    root = closed / "data"
    before = subprocess.run(["getfacl", "-p", str(closed)], capture_output=True, text=True).stdout
    with pytest.raises(UsageError, match=f"setfacl -m u:{QEMU_USER}:x {closed}"):
        require_path_search(root, QEMU_USER)
    assert subprocess.run(["getfacl", "-p", str(closed)], capture_output=True, text=True).stdout == before
    closed.chmod(0o711)
    require_path_search(root, QEMU_USER)
    closed.chmod(0o700)
    subprocess.run(["setfacl", "-m", f"u:{QEMU_USER}:x", str(closed)], check=True)
    require_path_search(root, QEMU_USER)  # an ACL the owner granted counts too
