"""Helpers for the image store tests: small disks made with qemu-img and qemu-io."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

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


def qemu_user_available() -> bool:
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        return False
    return shutil.which("setfacl") is not None and os.geteuid() == 0
