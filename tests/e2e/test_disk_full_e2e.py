"""A full disk: create, commit, snapshot, import, pull and load on a small file system the test
makes (a tmpfs), filled to the last byte. Each fails with the resources exit code (14) and one
line, and leaves the data root, libvirt and the caches exactly as they were (doctor finds nothing).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import make_vmctl
from tests.figures import record
from tests.registry import regserver

pytestmark = pytest.mark.e2e
MiB = 1 << 20
VM = "vmctl-full-vm"


def _disk(path: Path, seed: bytes) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(8 * MiB)
        fh.write(hashlib.sha256(seed).digest() * (2 * MiB // 32))
    return path


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


@pytest.fixture(scope="module")
def full(libvirtd):
    base = Path(tempfile.mkdtemp(prefix="vmctl-e2e-full-", dir="/var/tmp"))
    base.chmod(0o711)
    mnt = base / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0711", "tmpfs", str(mnt)], check=True)
    registry = regserver.start_registry(base / "registry", tls=False, auth=False)
    vm = make_vmctl(mnt / "data")
    try:
        vm("image", "import", str(_disk(base / "base.raw", b"base")), "base:1")
        vm("create", VM, "--image", "base:1")
        vm("image", "import", str(_disk(base / "p.raw", b"pushed")), "p:1")
        ref = f"{registry.host}/full/p:1"
        vm("push", "p:1", ref, "--insecure")
        other = make_vmctl(base / "other")
        other("image", "import", str(_disk(base / "a.raw", b"archived")), "arch:1")
        other("save", "-o", str(base / "arch.tar"), "arch:1")
        vm("rmi", "p:1")
        vm("image", "prune")
        filler = mnt / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)  # until ENOSPC
        assert shutil.disk_usage(mnt).free < MiB
        yield vm, ref, base
    finally:
        names = vm("ls", "-a", "-q", check=False).stdout.split()
        (mnt / "filler").unlink(missing_ok=True)
        if names:
            vm("rm", "-f", *names, check=False)
        registry.stop()
        subprocess.run(["umount", str(mnt)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


OPERATIONS = {
    "create": lambda ref, base: ["create", "vmctl-full-new", "--image", "base:1"],
    "commit": lambda ref, base: ["commit", VM, "c:1"],
    "snapshot": lambda ref, base: ["snapshot", "create", VM, "s1"],
    "import": lambda ref, base: ["image", "import", str(base / "a.raw"), "imp:1"],
    "pull": lambda ref, base: ["pull", ref, "--insecure"],
    "load": lambda ref, base: ["load", "-i", str(base / "arch.tar")],
}


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_a_full_disk_is_one_resources_line_and_changes_nothing(full, op):
    vm, ref, base = full
    root = vm.root
    before = tree(root)
    domains_before = vm("ls", "-a", "-q").stdout.split()
    proc = vm(*OPERATIONS[op](ref, base), check=False)
    assert proc.returncode == 14, f"{op}: {proc.returncode} {proc.stderr}"
    err = proc.stderr.strip()
    assert err.startswith("vmctl: error: ") and "\n" not in err, err
    assert tree(root) == before
    assert vm("ls", "-a", "-q").stdout.split() == domains_before
    assert json.loads(vm("doctor", "--json").stdout) == []
    record("operations refused on a full disk", 1)
