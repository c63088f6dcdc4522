"""Resource limits end to end: every limit read back from the QEMU process's cgroup (v1 or v2,
whichever this host has) or from QEMU itself (disk throttles), set at create and changed live by
`vmctl update`; a CPU-bound guest under a 50 % quota uses about half a host CPU (a ratio of the
cgroup's usage counter to wall time, not a timed assertion)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.figures import record

pytestmark = pytest.mark.e2e

CG = Path("/sys/fs/cgroup")


def _out(vm, *args, **kw) -> str:
    return vm(*args, **kw).stdout.strip()


def _qemu_pid(name: str) -> int:
    for base in ("/run/libvirt/qemu", str(Path.home() / ".cache/libvirt/qemu/run")):
        pid = Path(base) / f"{name}.pid"
        if pid.exists():
            return int(pid.read_text())
    raise AssertionError(f"no pid file for {name}")


class VmCgroup:
    """The VM's cgroup directories (libvirt puts QEMU's threads in `emulator`/`vcpuN` below it)."""

    def __init__(self, pid: int):
        self.v2 = (CG / "cgroup.controllers").exists()
        self.paths: dict[str, Path] = {}
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            vm_level = path.rsplit("/emulator", 1)[0] if path.endswith("/emulator") else path
            if controllers == "":
                # v2, or v1's companion cgroup2 hierarchy ("hybrid", /sys/fs/cgroup/unified)
                self.paths["unified"] = (CG if self.v2 else CG / "unified") / vm_level.lstrip("/")
            for c in controllers.split(","):
                if c in ("cpu", "cpuacct", "memory", "blkio"):
                    self.paths[c] = CG / c / vm_level.lstrip("/")

    def read(self, controller: str, v1: str, v2: str) -> str:
        base = self.paths["unified"] if self.v2 else self.paths[controller]
        return (base / (v2 if self.v2 else v1)).read_text().strip()

    def shares(self) -> int:
        return int(self.read("cpu", "cpu.shares", "cpu.weight"))

    def quota(self) -> tuple[int, int]:
        if self.v2:
            q, p = self.read("cpu", "", "cpu.max").split()
            return int(q), int(p)
        return int(self.read("cpu", "cpu.cfs_quota_us", "")), int(self.read("cpu", "cpu.cfs_period_us", ""))

    def memory_limit(self) -> int:
        return int(self.read("memory", "memory.limit_in_bytes", "memory.max"))

    def usage_ns(self) -> int:
        """The VM cgroup's CPU usage counter: cgroup2's cpu.stat (every cgroup2 has it, also the
        hybrid hierarchy's beside v1), else v1's cpuacct -- never the root's, which counts the
        whole host (libvirt leaves QEMU in cpuacct's root when cpuacct is not mounted with cpu)."""
        stat = self.paths.get("unified", Path("/nonexistent")) / "cpu.stat"
        if stat.exists() and self.paths["unified"] not in (CG, CG / "unified"):
            usage = dict(line.split() for line in stat.read_text().splitlines())
            return int(usage["usage_usec"]) * 1000
        acct = self.paths["cpuacct"]
        assert acct != CG / "cpuacct", "QEMU is in no cgroup of its own that counts CPU use"
        return int((acct / "cpuacct.usage").read_text())

    def io_weight_supported(self) -> bool:
        if self.v2:
            return (self.paths["unified"] / "io.weight").exists() or (self.paths["unified"] / "io.bfq.weight").exists()
        return any((self.paths["blkio"] / f).exists() for f in ("blkio.weight", "blkio.bfq.weight"))


def _cpu_ratio(cg: VmCgroup, seconds: float = 6.0) -> float:
    u0, t0 = cg.usage_ns(), time.monotonic()
    time.sleep(seconds)
    return (cg.usage_ns() - u0) / ((time.monotonic() - t0) * 1e9)


def _throttle(name: str) -> dict:
    out = subprocess.run(["virsh", "-c", "qemu:///session", "blkdeviotune", name, "vda"],
                         capture_output=True, text=True, check=True).stdout
    pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {k.strip(): int(v) for k, v in pairs if v.strip().isdigit()}


def test_limits_are_the_cgroups_and_update_changes_them_live(e2e_vmctl):
    vm = e2e_vmctl
    vm("run", "capped", "--image", "tiny", "--memory", "256M", "--max-cpus", "2", "--cpu-shares", "512",
       "--cpu-quota", "50", "--memory-limit", "900M", "--io-read-bps", "20M/s", "--io-write-bps", "10M/s",
       timeout=600)
    try:
        cg = VmCgroup(_qemu_pid("capped"))
        # v2: the kernel's cpu.weight for libvirt's shares (1 + (shares - 2) * 9999 / 262142)
        assert cg.shares() == (512 if not cg.v2 else 1 + (512 - 2) * 9999 // 262142)
        assert cg.quota() == (50_000, 100_000)
        assert cg.memory_limit() == 900 << 20
        assert _throttle("capped")["read_bytes_sec"] == 20 << 20
        assert _throttle("capped")["write_bytes_sec"] == 10 << 20
        info = json.loads(_out(vm, "inspect", "capped"))[0]
        assert info["limits"]["cpu_quota_percent"] == 50 and info["max_cpus"] == 2

        # a CPU-bound guest: about half of one host CPU under the 50 % quota
        vm("exec", "capped", "--", "sh", "-c", "(while :; do :; done) >/dev/null 2>&1 </dev/null &")
        half = _cpu_ratio(cg)
        record("limits: host CPUs used by a busy guest under --cpu-quota 50", half, how="max")
        assert 0.3 < half < 0.7, half

        # live: quota, shares, memory limit, throttles -- in the cgroup at once, and kept
        vm("update", "capped", "--cpu-quota", "25", "--cpu-shares", "256", "--memory-limit", "800M",
           "--io-read-bps", "5M/s")
        assert cg.quota() == (25_000, 100_000)
        assert cg.shares() == (256 if not cg.v2 else 1 + (256 - 2) * 9999 // 262142)
        assert cg.memory_limit() == 800 << 20
        assert _throttle("capped")["read_bytes_sec"] == 5 << 20
        quarter = _cpu_ratio(cg)
        record("limits: host CPUs used by a busy guest after update --cpu-quota 25", quarter, how="max")
        assert 0.1 < quarter < 0.4 and quarter < half, (quarter, half)
        persistent = subprocess.run(["virsh", "-c", "qemu:///session", "dumpxml", "--inactive", "capped"],
                                    capture_output=True, text=True, check=True).stdout
        assert "<global_quota>25000</global_quota>" in persistent and "<shares>256</shares>" in persistent

        # the I/O weight needs a weight-aware cgroup (v2 io.weight, or BFQ's): said in one line where missing
        weight = vm("update", "capped", "--io-weight", "300", check=False)
        if cg.io_weight_supported():
            assert weight.returncode == 0, weight.stderr
        else:
            assert weight.returncode != 0 and weight.stderr.startswith("vmctl: error: ")
            assert len(weight.stderr.strip().splitlines()) == 1

        # memory through the balloon, vCPUs hot-plugged up to --max-cpus
        total = lambda: int(_out(vm, "exec", "capped", "--", "awk", "/MemTotal/ {print $2}", "/proc/meminfo"))
        before = total()
        vm("update", "capped", "--memory", "160M")
        for _ in range(60):
            if total() < before - 64 * 1024:
                break
            time.sleep(1)
        assert total() < before - 64 * 1024
        vm("update", "capped", "--cpus", "2")
        for _ in range(60):
            present = _out(vm, "exec", "capped", "--", "cat", "/sys/devices/system/cpu/present")
            if present == "0-1":
                break
            time.sleep(1)
        assert present == "0-1"

        # beyond what the VM was made with, or nonsense: one line, nothing changed
        for args, message in ((["--cpus", "3"], "at most 2"), (["--memory", "1G"], "up to the 256 MiB"),
                              (["--memory-limit", "200M"], "at least the guest's memory"),
                              (["--cpu-quota", "0"], "invalid --cpu-quota"), ([], "nothing to update")):
            bad = vm("update", "capped", *args, check=False)
            assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
        assert cg.quota() == (25_000, 100_000)

        # a new QEMU process gets them all again (the memory limit is set by vmctl at each start)
        vm("restart", "capped", "-t", "60", timeout=300)
        again = VmCgroup(_qemu_pid("capped"))
        assert again.quota() == (25_000, 100_000) and again.memory_limit() == 800 << 20
    finally:
        vm("rm", "-f", "capped", timeout=300)
