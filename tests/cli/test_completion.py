"""Shell completion through click's real protocol (what bash's completion function runs):
VM, image, snapshot and registry host names from vmctl's own records, never libvirt."""

import json
import os
import subprocess
import sys

import pytest

from vmctl.core.records import InstanceRecord
from vmctl.core.snapshot_records import SIDECAR


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    for name in ("web1", "web2", "db"):
        d = root / "instances" / name
        d.mkdir(parents=True)
        InstanceRecord(name=name, uuid="0" * 8 + "-0000-4000-8000-" + "0" * 12, mode="hosted",
                       uri="qemu:///session", profile="hosted", image_ref="tiny", image_id="sha256:" + "a" * 64,
                       created="2026-01-01T00:00:00Z", ssh_user="root", host_key="ssh-ed25519 AAAA").save(d)
    (root / "instances" / "web1" / SIDECAR).write_text(json.dumps(
        {"version": 1, "snapshots": {"before-upgrade": {"created": 1}, "clean": {"created": 2}}}))
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    env = _env(root)
    for ref in ("app:1", "app:2", "base:12"):
        subprocess.run([sys.executable, "-m", "vmctl", "-q", "image", "import", str(disk), ref], env=env, check=True)
    return root


def _env(root):
    return {**os.environ, "VMCTL_ROOT": str(root), "VMCTL_CONFIG": "/dev/null"}


def complete(root, line: str) -> list[str]:
    """What bash's completion function would offer after `line` (click's bash protocol)."""
    env = {**_env(root), "_VMCTL_COMPLETE": "bash_complete", "COMP_WORDS": line,
           "COMP_CWORD": str(len(line.split(" ")) - 1)}
    out = subprocess.run([sys.executable, "-m", "vmctl"], env=env, capture_output=True, text=True, check=True).stdout
    return [item.split(",", 1)[1] for item in out.splitlines() if item.startswith("plain,")]


def test_vm_names(root):
    assert complete(root, "vmctl start w") == ["web1", "web2"]
    assert complete(root, "vmctl rm -f ") == ["db", "web1", "web2"]
    assert complete(root, "vmctl update d") == ["db"]


def test_image_references(root):
    assert complete(root, "vmctl run x --image app") == ["app:1", "app:2"]
    assert complete(root, "vmctl rmi b") == ["base:12"]


def test_snapshot_names_of_the_vm_named_before(root):
    assert complete(root, "vmctl snapshot revert web1 ") == ["before-upgrade", "clean"]
    assert complete(root, "vmctl snapshot revert db ") == []


def test_command_names_and_scripts_for_every_shell(root):
    assert "snapshot" in complete(root, "vmctl snap")
    for shell in ("bash", "zsh", "fish"):
        script = subprocess.run([sys.executable, "-m", "vmctl", "completion", shell], env=_env(root),
                                capture_output=True, text=True, check=True).stdout
        assert "_VMCTL_COMPLETE" in script


def test_a_damaged_store_completes_nothing_and_never_fails(tmp_path):
    root = tmp_path / "root"
    (root / "instances" / "broken").mkdir(parents=True)
    (root / "instances" / "broken" / "instance.json").write_text("{not json")
    assert complete(root, "vmctl start ") == []
