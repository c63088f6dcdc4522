"""Test and benchmark helpers: a shared ``tiny`` build and a direct QEMU/TCG boot of it.

Import only from tests and benchmarks (it imports pytest lazily for the fixtures). Any conftest can
expose the session fixtures with ``from vmctl.build.testing import tiny_build  # noqa: F401``
(and ``tiny_bios_build`` for the firmware-boot image).

``DirectBoot`` runs ``qemu-system-x86_64 -accel tcg -machine q35`` on a throw-away qcow2 overlay
of a build (direct kernel boot, or SeaBIOS for ``boot_kind == "firmware"``), with the seed as a SATA cdrom, user-mode networking ``restrict=on`` and SSH forwarded
from a free port on 127.0.0.1, the serial console in a file and a QMP unix socket.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from vmctl.build.builder import BuildResult, build
from vmctl.build.tools import require
from vmctl.config import build_cache_dir
from vmctl.storage import qemu_img


def test_cache_dir() -> Path:
    """Where tests keep downloaded packages across runs: ``$VMCTL_TEST_CACHE``, else the same
    package cache ``vmctl image build`` uses (so a fresh machine downloads each .deb once)."""
    return Path(os.environ.get("VMCTL_TEST_CACHE") or build_cache_dir())


test_cache_dir.__test__ = False  # type: ignore[attr-defined]  # not a test despite its name


def build_for_tests(recipe: str, cache_dir: Path, work_dir: Path) -> BuildResult:
    """Build ``recipe`` into ``cache_dir`` with packages from the shared test cache."""
    return build(recipe, cache_dir, work_dir, packages_cache=test_cache_dir())


def _fixture(recipe: str):
    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory) -> BuildResult:
        base = tmp_path_factory.mktemp(f"{recipe}-build")
        return build_for_tests(recipe, base / "cache", base / "work")

    fixture.__doc__ = f"The ``{recipe}`` image, built once per test session from a clean image cache."
    return fixture


try:
    tiny_build = _fixture("tiny")
    tiny_bios_build = _fixture("tiny-bios")
except ImportError:  # pragma: no cover - pytest absent (benchmarks)
    pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DirectBoot:
    """One QEMU process booting a build directly; use as a context manager (always stopped)."""

    def __init__(self, result: BuildResult, seed: Path | None, work_dir: Path, *,
                 memory_mib: int = 256, cpus: int = 1, rng: bool = True, extra_cmdline: str = "",
                 disk: Path | None = None):
        """Start QEMU. ``disk``: boot this existing overlay (kept at close) instead of a new one."""
        self.result = result
        self.dir = Path(tempfile.mkdtemp(dir=work_dir, prefix="boot-"))
        self.disk = disk or self.dir / "disk.qcow2"
        self.console = self.dir / "console.log"
        self.qmp_path = self.dir / "qmp.sock"
        self.port = free_port()
        if disk is None:
            qemu_img.create(self.disk, backing=result.disk, backing_fmt="qcow2")
        args = [require("qemu-system-x86_64", "qemu-system-x86"), "-accel", "tcg", "-machine", "q35",
                "-m", str(memory_mib), "-smp", str(cpus), "-nodefaults", "-no-user-config",
                "-display", "none", "-no-reboot",
                "-drive", f"file={self.disk},format=qcow2,if=none,id=d0,cache=unsafe",
                "-device", "virtio-blk-pci,drive=d0" + (",bootindex=1" if result.boot_kind == "firmware" else ""),
                "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", "virtio-net-pci,netdev=n0,romfile=",
                "-serial", f"file:{self.console}",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if result.boot_kind == "kernel":
            args += ["-kernel", str(result.kernel), "-initrd", str(result.initrd),
                     "-append", f"{result.cmdline} {extra_cmdline}".strip()]
        elif extra_cmdline:
            raise ValueError("extra_cmdline needs a direct kernel boot")
        if seed is not None:
            args += ["-drive", f"file={seed},format=raw,if=none,id=cd0,media=cdrom,readonly=on",
                     "-device", "ide-cd,drive=cd0,bus=ide.0"]
        if rng:
            args += ["-object", "rng-random,id=rng0,filename=/dev/urandom",
                     "-device", "virtio-rng-pci,rng=rng0"]
        self.args = args
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    def __enter__(self) -> "DirectBoot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def text(self) -> str:
        """Everything the guest printed on its serial console so far."""
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str, timeout: float) -> float:
        """Wait until a console line matches ``pattern`` (a regex); return seconds since start."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rx.search(self.text()):
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise RuntimeError(f"qemu exited ({self.proc.returncode}): {self._stderr()}\n{self.text()}")
            time.sleep(0.05)
        raise TimeoutError(f"no {pattern!r} on the console after {timeout}s:\n{self.text()[-3000:]}")

    def wait_for_banner(self, timeout: float) -> float:
        """Wait until the forwarded SSH port answers with a banner; return seconds since start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(8).startswith(b"SSH-"):
                        return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"no SSH banner on port {self.port} after {timeout}s")

    def qmp(self, command: str, **arguments) -> dict:
        """Send one QMP command (after the capabilities handshake) and return its reply."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.qmp_path))
            f = s.makefile("rw")
            f.readline()
            for cmd, args in (("qmp_capabilities", {}), (command, arguments)):
                f.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit; return its exit status (raises ``TimeoutError``)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"qemu still running after {timeout}s:\n{self.text()[-2000:]}") from exc

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        """Stop QEMU (kill if needed) and remove the overlay and console."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
