"""Decide whether KVM really runs a guest on this host, and remember the answer.

`/dev/kvm` existing proves little: on nested or paravirtualised hosts it can be present while guest
kernels hang at their first instructions. The probe boots a real Linux kernel under KVM with no root
filesystem and ``panic=-1``: a working KVM reaches the kernel's "VFS: Unable to mount root" panic and
QEMU exits in about a second; a broken one never prints a kernel line. The verdict is cached per user
(keyed by host kernel, QEMU binary and guest kernel) because the failing case costs the whole timeout.
"""

from __future__ import annotations

import glob
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vmctl.fsutil import atomic_write, private_dirs

QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT = 12.0
_SUCCESS_MARKERS = (b"Kernel panic", b"Kernel Offset", b"VFS: Unable to mount root")


@dataclass(frozen=True)
class KvmVerdict:
    """Whether KVM is usable, why, and when that was decided."""

    usable: bool
    reason: str
    checked_at: float
    seconds: float
    cached: bool = False


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vmctl" / "kvm-probe.json"


def _guest_kernel() -> Path | None:
    for path in sorted(glob.glob("/boot/vmlinuz-*"), reverse=True):
        if os.access(path, os.R_OK):
            return Path(path)
    return None


def _cache_key(qemu: str | None, kernel: Path | None) -> dict:
    def stamp(path: str | Path | None) -> list:
        if not path:
            return [None]
        try:
            st = os.stat(path)
            return [str(path), st.st_size, int(st.st_mtime)]
        except OSError:
            return [str(path), None]

    return {
        "host_kernel": os.uname().release,
        "qemu": stamp(qemu),
        "guest_kernel": stamp(kernel),
        "dev_kvm": os.path.exists("/dev/kvm"),
    }


def _boot_under_kvm(qemu: str, kernel: Path, timeout: float) -> tuple[bool, str]:
    argv = [
        qemu, "-accel", "kvm", "-machine", "q35", "-cpu", "host", "-m", "256", "-nodefaults",
        "-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
        "-append", "console=ttyS0 panic=-1 loglevel=4 quiet",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen = (seen + chunk)[-65536:]
                if any(marker in seen for marker in _SUCCESS_MARKERS):
                    return True, "a Linux guest booted under KVM"
        if proc.poll() is not None and proc.returncode != 0:
            tail = seen.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            return False, f"QEMU could not start a KVM guest: {tail[0]}"
        return False, f"a Linux guest did not boot under KVM within {timeout:.0f} s (/dev/kvm present but unusable)"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def probe_kvm(*, refresh: bool = False, kernel: Path | None = None,
              timeout: float = PROBE_TIMEOUT) -> KvmVerdict:
    """Return whether KVM really runs a guest here; cached unless `refresh`.

    ``VMCTL_ACCEL=tcg`` or ``kvm`` forces the answer (for hosts where the user knows better).
    """
    forced = os.environ.get("VMCTL_ACCEL", "auto")
    if forced in ("tcg", "kvm"):
        return KvmVerdict(forced == "kvm", f"forced by VMCTL_ACCEL={forced}", time.time(), 0.0)
    qemu = shutil.which(QEMU)
    kernel = kernel or _guest_kernel()
    key = _cache_key(qemu, kernel)
    path = cache_file()
    if not refresh:
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                return KvmVerdict(**data["verdict"], cached=True)
        except (OSError, ValueError, TypeError, KeyError):
            pass
    started = time.monotonic()
    if not os.path.exists("/dev/kvm"):
        usable, reason = False, "/dev/kvm does not exist"
    elif not os.access("/dev/kvm", os.R_OK | os.W_OK):
        usable, reason = False, "/dev/kvm is not accessible to this user"
    elif qemu is None:
        usable, reason = False, f"{QEMU} is not installed"
    elif kernel is None:
        usable, reason = False, "no guest kernel to verify KVM with (install linux-image-amd64)"
    else:
        usable, reason = _boot_under_kvm(qemu, kernel, timeout)
    verdict = KvmVerdict(usable, reason, time.time(), round(time.monotonic() - started, 2))
    try:
        private_dirs(path.parent)
        record = asdict(verdict)
        record.pop("cached")
        atomic_write(path, json.dumps({"key": key, "verdict": record}).encode())
    except OSError:
        pass  # an unwritable cache only costs a re-probe next time
    return verdict
