"""Warm starts end to end: a running tiny VM becomes a checkpoint image, clones of it are restored
(not booted) and each takes its own identity before anything can reach it.

One checkpoint is made for the module (the source VM keeps running, unchanged); three clones are
started at once from it and shared by the tests that only look at them. What only a real guest
can show is checked here: the process saved in the checkpoint still runs in every clone, each
clone answers SSH with its own pinned host key, its own hostname, MAC, forwarded port and
machine-id, the first bytes its kernel's RNG gave after the restore differ, files written in one
are not in another; a clone stops and boots like any VM; a damaged checkpoint boots instead of
restoring, said plainly; the image travels through a registry to another store and warm-starts
there with that store's keys.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .conftest import make_vmctl, vmctl_with_tiny

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "registry"))
import regserver  # noqa: E402

pytestmark = pytest.mark.e2e

TAG = os.urandom(2).hex()
SOURCE = f"warm-src-{TAG}"
CLONES = [f"warm-{TAG}-{i}" for i in range(3)]


def _sh(vmctl, name: str, script: str) -> str:
    return vmctl("exec", name, "--", "sh", "-c", script).stdout


def _inspect(vmctl, name: str) -> dict:
    return json.loads(vmctl("inspect", name).stdout)[0]


@pytest.fixture(scope="module")
def warm(libvirtd):
    """(vmctl, checkpoint image id) with the source VM running and three clones started at once."""
    root = Path(tempfile.mkdtemp(prefix="vmctl-e2e-warm-", dir="/var/tmp"))
    try:
        with vmctl_with_tiny(root) as vm:
            vm("run", SOURCE, "--image", "tiny", "--restrict-network", timeout=400)
            # a process and a file of the running machine: the clones must have both without booting
            _sh(vm, SOURCE, "echo saved-state >/root/marker; "
                            "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i >/tmp/counter; sleep 1; done' "
                            "</dev/null >/dev/null 2>&1 &")
            out = vm("commit", "--checkpoint", SOURCE, "tiny-warm", "-m", "booted tiny")
            image_id = out.stdout.strip().splitlines()[-1]
            procs = [vm.popen("run", c, "--image", "tiny-warm", "--restrict-network") for c in CLONES]
            for name, proc in zip(CLONES, procs):
                stdout, stderr = proc.communicate(timeout=400)
                assert proc.returncode == 0, f"run {name}: {stdout} {stderr}"
                assert "booting" not in stderr, stderr   # restored, not booted
            yield vm, image_id
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_checkpoint_image_and_source_goes_on(warm):
    vm, image_id = warm
    image = json.loads(vm("image", "inspect", "tiny-warm").stdout)[0]
    cp = image["config"]["checkpoint"]
    assert cp["cpus"] == 1 and cp["memory_mib"] == 256 and cp["domain_type"] in ("qemu", "kvm")
    assert cp["machine"].startswith("pc-q35-") and cp["size"] > 0 and cp["memory"]
    # the source VM runs on, with its own identity, its file and its process
    assert _sh(vm, SOURCE, "hostname; cat /root/marker").split() == [SOURCE, "saved-state"]
    assert int(_sh(vm, SOURCE, "cat /tmp/counter")) > 0


def test_three_clones_each_their_own(warm):
    vm, _ = warm
    seen = {"host_key": set(), "hostname": set(), "mac": set(), "port": set(), "machine_id": set(),
            "urandom": set()}
    source_key = _inspect(vm, SOURCE)["ssh"]["host_key"]
    for name in CLONES:
        info = _inspect(vm, name)
        assert info["warm"]["started"] == "warm", info["warm"]
        # the saved machine goes on: its process counts on, its file is there, it did not boot
        out = _sh(vm, name, "hostname; cat /root/marker; cat /tmp/counter; cat /sys/class/net/eth0/address; "
                            "cat /etc/machine-id; cat /run/vmctl/urandom-after-restore; echo; "
                            "pidof dropbear >/dev/null && echo sshd-up").split()
        hostname, marker, counter, mac, machine_id, urandom, sshd = out
        assert (hostname, marker, sshd) == (name, "saved-state", "sshd-up")
        assert int(counter) > 0
        # vmctl exec got in: the SSH server proved it holds this clone's pinned key (not the source's)
        assert info["ssh"]["host_key"] != source_key
        domain = subprocess.run(["virsh", "-c", "qemu:///session", "dumpxml", name], capture_output=True,
                                text=True, check=True).stdout
        assert f"mac={mac}" in domain        # the guest took the MAC its domain has
        for key, value in (("host_key", info["ssh"]["host_key"]), ("hostname", hostname), ("mac", mac),
                           ("port", info["ssh"]["port"]), ("machine_id", machine_id), ("urandom", urandom)):
            seen[key].add(value)
        assert len(urandom) == 32
    for key, values in seen.items():
        assert len(values) == len(CLONES), f"clones share a {key}: {values}"
    # nothing of the warm start stays in the instance dirs; what a killed one would leave, doctor mends
    for name in CLONES:
        files = {p.name for p in (vm.root / "instances" / name).iterdir()}
        assert not files & {"restore.save", "warm-identity.json"}, files
    leftover = vm.root / "instances" / CLONES[1] / "restore.save"
    leftover.write_bytes(b"QEVM")
    assert "warm-leftover" in vm("doctor", check=False).stdout
    vm("doctor", "--fix", check=False)
    assert not leftover.exists()
    # a file written in one clone is in no other (each has its own overlay)
    _sh(vm, CLONES[0], "echo only-here >/root/mine; sync")
    for other in CLONES[1:]:
        assert _sh(vm, other, "test -e /root/mine && echo yes || echo no").strip() == "no"


def test_clone_snapshots_commits_stops_and_boots_like_any_vm(warm):
    vm, _ = warm
    name = CLONES[2]
    # a memory snapshot of a warm clone, reverted: the clone as it was, with its own identity
    _sh(vm, name, "echo before >/root/snap-mark; sync")
    vm("snapshot", "create", name, "s1")
    _sh(vm, name, "echo after >/root/snap-mark; sync")
    vm("snapshot", "revert", name, "s1")
    assert _sh(vm, name, "hostname; cat /root/snap-mark").split() == [name, "before"]
    # a plain commit of a clone is a plain image: its disk, no saved machine
    vm("commit", name, "clone-disk:1")
    assert json.loads(vm("image", "inspect", "clone-disk:1").stdout)[0]["checkpoint"] is None
    vm("stop", name, "--timeout", "60")
    vm("start", name)
    vm("wait", name, "--timeout", "240")
    # a boot now: the saved process is gone, the identity stays (the seed carries the same key)
    out = _sh(vm, name, "hostname; test -e /tmp/counter && echo counter || echo no-counter").split()
    assert out == [name, "no-counter"]
    assert _inspect(vm, name)["warm"]["started"] == "warm"   # how it first started, kept


def test_checkpoint_refused_where_it_cannot_reidentify(warm):
    vm, _ = warm
    bad = vm("commit", "--checkpoint", SOURCE, "tiny-warm:bad", "--squash", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--checkpoint" in bad.stderr
    vm("pause", SOURCE)
    try:
        paused = vm("commit", "--checkpoint", SOURCE, "tiny-warm:paused", check=False)
        assert paused.returncode == 2 and "running" in paused.stderr
    finally:
        vm("resume", SOURCE)
    assert "tiny-warm:bad" not in vm("images").stdout and "paused" not in vm("images").stdout


def test_push_pull_warm_start_elsewhere_and_damaged_state_boots(warm, tmp_path):
    vm, image_id = warm
    server = regserver.start_registry(tmp_path / "reg", auth=False)
    other_root = Path(tempfile.mkdtemp(prefix="vmctl-e2e-warm2-", dir="/var/tmp"))
    other = make_vmctl(other_root)
    name = f"warm-{TAG}-far"
    try:
        ref = f"{server.host}/e2e/tiny-warm:1"
        pushed = json.loads(vm("push", "tiny-warm", ref, "--insecure", "--json").stdout)
        assert pushed["image_id"] == image_id
        manifest = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                                  capture_output=True, text=True, check=True).stdout
        kinds = [d["mediaType"] for d in json.loads(manifest)["layers"]]
        assert "application/vnd.vmctl.memory.v1+zstd" in kinds
        pulled = json.loads(other("pull", ref, "--insecure", "--json").stdout)
        assert pulled["id"] == image_id       # same image id on both hosts
        # another store, another client key: the clone authorises this store's key
        other("run", name, "--image", ref, "--restrict-network", timeout=400)
        assert json.loads(other("inspect", name).stdout)[0]["warm"]["started"] == "warm"
        assert _sh(other, name, "hostname; cat /root/marker").split() == [name, "saved-state"]
        other("rm", "-f", name)

        # a damaged memory chunk (the store's file rewritten behind vmctl's back): the restore
        # fails in QEMU and the VM boots instead, said in one line; nothing is left running half-made
        chunk = Path(json.loads(other("image", "inspect", ref).stdout)[0]["memory"][0]["path"])
        chunk.chmod(0o600)
        with open(chunk, "r+b") as fh:
            fh.seek(4096)
            fh.write(b"\xff" * 4096)
        out = other("run", name, "--image", ref, "--restrict-network", timeout=400)
        assert "cannot be restored here" in out.stderr and "booting it instead" in out.stderr
        info = json.loads(other("inspect", name).stdout)[0]
        assert info["warm"]["started"] == "cold" and info["warm"]["reason"]
        assert _sh(other, name, "hostname").strip() == name
    finally:
        other("rm", "-f", name, check=False)
        server.stop()
        shutil.rmtree(other_root, ignore_errors=True)
