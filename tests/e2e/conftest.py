"""End-to-end fixtures: a private data root QEMU can reach, and the tiny image built into it.

The root lives under /var/tmp, not pytest's tmp dir: pytest makes /tmp/pytest-of-root 0700, and
QEMU runs as libvirt-qemu, which must be able to traverse to the disks (vmctl grants it with ACLs
along the data root's own path, not through a parent it does not own).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Vmctl:
    """Runs the real `vmctl` program (a subprocess, as users run it) against one data root."""

    root: Path
    env: dict
    cwd: Path | None = None     # where it runs (a stack's directory: short names)

    def __call__(self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None):
        proc = subprocess.run(
            [sys.executable, "-m", "vmctl", *args], env=self.env, capture_output=True, text=True,
            timeout=timeout, input=input, cwd=self.cwd,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"vmctl {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "vmctl", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def make_vmctl(root: Path, **extra_env: str) -> Vmctl:
    env = dict(os.environ)
    env.update({"VMCTL_ROOT": str(root), "VMCTL_CONFIG": "/dev/null", "PYTHONUNBUFFERED": "1"})
    env.pop("VMCTL_MODE", None)
    env.pop("VMCTL_CONNECT", None)
    env.update(extra_env)
    return Vmctl(root, env)


@contextlib.contextmanager
def vmctl_with_tiny(root: Path):
    """A vmctl on data root `root` holding tiny:latest; every VM it made is removed on exit."""
    vm = make_vmctl(root)
    try:
        vm("image", "build", "tiny", timeout=1800)
        yield vm
    finally:
        names = vm("ls", "-a", "-q", check=False).stdout.split()
        if names:
            vm("rm", "-f", *names, check=False)


@pytest.fixture(scope="session")
def cloud_guest():
    """The Debian 12 cloud-style disks of tests/cloudguest (built once, cached by recipe hash)."""
    from tests.cloudguest.build import build_cloud_guest
    from vmctl.build.testing import test_cache_dir

    return build_cloud_guest(test_cache_dir() / "cloudguest")


@pytest.fixture(scope="module")
def e2e_vmctl(libvirtd):
    """A vmctl with a private data root holding tiny:latest (the build cache makes this quick)."""
    root = Path(tempfile.mkdtemp(prefix="vmctl-e2e-", dir="/var/tmp"))
    try:
        with vmctl_with_tiny(root) as vm:
            yield vm
    finally:
        shutil.rmtree(root, ignore_errors=True)


def shared_dir(prefix: str) -> Path:
    """A fresh host directory a VM may share (9p is served by QEMU, which runs as libvirt-qemu
    here): under /var/tmp, with an ACL for QEMU's user on that directory only, as a user would
    grant it. The caller removes it."""
    from vmctl.perms import qemu_user

    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    user = qemu_user("qemu:///session")
    if user:
        subprocess.run(["setfacl", "-m", f"u:{user}:rwx", str(path)], check=True)
    return path
