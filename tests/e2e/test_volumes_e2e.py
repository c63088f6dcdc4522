"""Volumes end to end with vmctl's tiny guest: what only a running guest can show.

One VM with a writable volume and a read-only one, both by virtio-fs where the daemon runs
virtiofsd (root's session here; the read-only one over a read-only bind mount); a second VM with
the 9p transport forced, writable and read-only (QEMU's read-only export). The cloud-init guest's
side is in test_cloud_e2e.py (volumes on the VM it runs from a commit).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import make_vmctl, shared_dir

pytestmark = pytest.mark.e2e


def _out(vm, *args, **kw) -> str:
    return vm(*args, **kw).stdout.strip()


def _mount_points() -> list[str]:
    from vmctl.hostmount import mount_points
    return mount_points()


def _mounted(path: Path) -> bool:
    return str(path) in _mount_points()


@pytest.fixture
def dirs():
    made = {"rw": shared_dir("vmctl-vol-rw-"), "ro": shared_dir("vmctl-vol-ro-")}
    yield made
    for d in made.values():
        shutil.rmtree(d, ignore_errors=True)


def test_bad_volumes_are_refused_before_anything_is_made(e2e_vmctl, dirs, tmp_path):
    vm = e2e_vmctl
    (tmp_path / "file").write_text("x")
    cases = [
        (["-v", "relative:/data"], "absolute host path"),
        (["-v", f"{tmp_path}/missing:/data"], "does not exist"),
        (["-v", f"{tmp_path}/file:/data"], "not a directory"),
        (["-v", f"{dirs['rw']}:data"], "absolute guest path"),
        (["-v", f"{dirs['rw']}:/"], "over the guest's /"),
        (["-v", f"{dirs['rw']}:/a", "--mount", f"type=bind,source={dirs['ro']},target=/a"], "two volumes"),
        (["-v", f"{vm.root}:/store"], "vmctl's own data"),
        (["-v", f"{dirs['rw']}:/a;reboot"], "invalid volume target"),
    ]
    for extra, message in cases:
        got = vm("create", "bad-vol", "--image", "tiny", *extra, check=False)
        assert got.returncode == 2, (extra, got.stderr)
        assert got.stderr.startswith("vmctl: error: ") and message in got.stderr, (extra, got.stderr)
        assert len(got.stderr.strip().splitlines()) == 1
    assert "bad-vol" not in _out(vm, "ls", "-a", "-q").split()
    assert not (vm.root / "instances" / "bad-vol").exists()


def test_a_vm_mounts_its_volumes_at_every_boot_and_read_only_is_the_hosts(e2e_vmctl, dirs):
    vm = e2e_vmctl
    (dirs["ro"] / "hello.txt").write_text("from the host\n")
    vm("run", "vols", "--image", "tiny", "-v", f"{dirs['rw']}:/work",
       "--mount", f"type=bind,source={dirs['ro']},target=/srv/ro,readonly", timeout=600)
    volumes = {v["target"]: v for v in json.loads(_out(vm, "inspect", "vols"))[0]["volumes"]}
    assert volumes["/work"]["transport"] == "virtiofs" and not volumes["/work"]["readonly"]
    assert volumes["/srv/ro"]["transport"] == "virtiofs" and volumes["/srv/ro"]["readonly"]
    assert volumes["/work"]["source"] == str(dirs["rw"])
    bind = Path(volumes["/srv/ro"]["bind"])
    assert bind.is_relative_to(vm.root / "instances" / "vols")
    assert _mounted(bind)   # read-only on the host

    mounts = _out(vm, "exec", "vols", "--", "cat", "/proc/mounts")
    assert "vmctl0 /work virtiofs" in mounts and "vmctl1 /srv/ro virtiofs" in mounts, mounts
    assert _out(vm, "exec", "vols", "--", "cat", "/srv/ro/hello.txt") == "from the host"
    # writes both ways, seen at once
    vm("exec", "vols", "--", "sh", "-c", "echo from the guest > /work/out.txt")
    assert (dirs["rw"] / "out.txt").read_text() == "from the guest\n"
    (dirs["rw"] / "later.txt").write_text("host wrote later\n")
    assert _out(vm, "exec", "vols", "--", "cat", "/work/later.txt") == "host wrote later"

    # read-only is QEMU's: root in the guest remounts it read-write and still cannot write
    hostile = vm("exec", "vols", "--", "sh", "-c",
                 "mount -o remount,rw /srv/ro; echo x > /srv/ro/new.txt", check=False)
    assert hostile.returncode != 0
    assert sorted(os.listdir(dirs["ro"])) == ["hello.txt"]
    # a link the guest makes is resolved by the guest: it never reaches the host's files
    vm("exec", "vols", "--", "ln", "-s", "/etc", "/work/etc-link")
    assert _out(vm, "exec", "vols", "--", "cat", "/work/etc-link/hostname") == "vols"
    assert os.readlink(dirs["rw"] / "etc-link") == "/etc"

    # a running VM with volumes snapshots its disks only (QEMU cannot save it while mounted)
    refused = vm("snapshot", "create", "vols", "mem", "--memory", check=False)
    assert refused.returncode == 2 and "volumes" in refused.stderr
    vm("snapshot", "create", "vols", "disks")
    assert json.loads(_out(vm, "snapshot", "inspect", "vols", "disks"))[0]["memory"] == "no"

    # stop/start: mounted again by the seed's bootcmd
    vm("stop", "vols", timeout=300)
    vm("start", "vols")
    vm("wait", "vols", "--timeout", "600", timeout=700)
    assert _out(vm, "exec", "vols", "--", "cat", "/work/out.txt") == "from the guest"
    assert _out(vm, "exec", "vols", "--", "cat", "/srv/ro/hello.txt") == "from the host"

    # commit keeps where the volumes were, never what is in them
    vm("commit", "vols", "vols-image:1", timeout=600)
    labels = json.loads(_out(vm, "image", "inspect", "vols-image:1"))[0]["labels"]
    assert labels["vmctl.commit.volumes"] == "/work /srv/ro"
    vm("run", "from-commit", "--image", "vols-image:1", timeout=600)
    assert _out(vm, "exec", "from-commit", "--", "ls", "-A", "/work") == ""   # the mount point, empty
    vm("rm", "-f", "vols", "from-commit", timeout=300)
    vm("image", "rm", "vols-image:1")
    # rm released the bind mount first and never touched a volume's files
    assert not _mounted(bind) and not any(p.startswith(str(vm.root)) for p in _mount_points())
    assert (dirs["rw"] / "out.txt").exists() and (dirs["ro"] / "hello.txt").read_text() == "from the host\n"


def test_9p_serves_volumes_where_virtiofs_is_not_chosen(libvirtd, dirs, tmp_path):
    root = Path(tempfile.mkdtemp(prefix="vmctl-e2e-9p-", dir="/var/tmp"))
    config = root / "config.toml"
    config.write_text('volume_transport = "9p"\n')
    vm = make_vmctl(root, VMCTL_CONFIG=str(config))
    try:
        vm("image", "build", "tiny", timeout=1800)
        # 9p is served by QEMU, as its own user: a directory that user cannot reach is refused
        private = tmp_path / "private"      # under pytest's 0700 tmp dir
        private.mkdir()
        refused = vm("create", "bad-9p", "--image", "tiny", "-v", f"{private}:/data:ro", check=False)
        assert refused.returncode == 2 and "QEMU runs as" in refused.stderr and "setfacl" in refused.stderr
        assert "bad-9p" not in _out(vm, "ls", "-a", "-q").split()
        (dirs["ro"] / "hello.txt").write_text("nine ro\n")
        vm("run", "ninep", "--image", "tiny", "-v", f"{dirs['rw']}:/data", "-v", f"{dirs['ro']}:/ro:ro", timeout=600)
        assert [v["transport"] for v in json.loads(_out(vm, "inspect", "ninep"))[0]["volumes"]] == ["9p", "9p"]
        vm("exec", "ninep", "--", "sh", "-c", "mkdir /data/sub && echo nine > /data/sub/p.txt")
        assert (dirs["rw"] / "sub" / "p.txt").read_text() == "nine\n"
        assert _out(vm, "exec", "ninep", "--", "cat", "/ro/hello.txt") == "nine ro"
        hostile = vm("exec", "ninep", "--", "sh", "-c", "mount -o remount,rw /ro; echo x > /ro/new.txt", check=False)
        assert hostile.returncode != 0 and sorted(os.listdir(dirs["ro"])) == ["hello.txt"]
    finally:
        vm("rm", "-f", "ninep", check=False, timeout=300)
        shutil.rmtree(root, ignore_errors=True)
