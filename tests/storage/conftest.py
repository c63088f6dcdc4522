"""Fixtures for the image store tests: small disks made with qemu-img, a store per test."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from vmctl.storage import ImageStore

QEMU_USER = "libvirt-qemu"


def qemu_io(path: Path, fmt: str, command: str) -> None:
    subprocess.run(["qemu-io", "-f", fmt, "-c", command, str(path)], check=True, capture_output=True)


def make_raw(path: Path, size: int = 64 << 20, pattern: int = 0x5A, at: int = 1 << 20,
             length: int = 1 << 20) -> Path:
    """A sparse raw disk with `length` bytes of `pattern` at offset `at`."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(at)
        fh.write(bytes([pattern]) * length)
    return path


def make_qcow2(path: Path, size: int = 64 << 20, pattern: int = 0x33) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)], check=True)
    qemu_io(path, "qcow2", f"write -P {pattern} 0 512k")
    return path


def read_back(path: Path, fmt: str, offset: int, length: int, pattern: int) -> bool:
    proc = subprocess.run(["qemu-io", "-r", "-f", fmt, "-c", f"read -P {pattern} {offset} {length}", str(path)],
                          capture_output=True, text=True)
    return proc.returncode == 0 and "Pattern verification failed" not in proc.stdout


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "root", None)


def qemu_user_available() -> bool:
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        return False
    return shutil.which("setfacl") is not None and os.geteuid() == 0


@pytest.fixture
def qemu_tmp():
    """A temp dir outside pytest's basetemp: pytest (ours or a concurrent run) chmods
    /tmp/pytest-of-<user> to 0700, which clears the ACL mask and with it QEMU's search right."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="vmctl-storage-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def acl_store(qemu_tmp) -> ImageStore:
    if not qemu_user_available():
        pytest.skip(f"needs root, setfacl and the {QEMU_USER} user")
    return ImageStore(qemu_tmp / "root", QEMU_USER)


@pytest.fixture
def raw_disk(tmp_path) -> Path:
    return make_raw(tmp_path / "disk.raw")


@pytest.fixture
def qcow2_disk(tmp_path) -> Path:
    return make_qcow2(tmp_path / "disk.qcow2")
