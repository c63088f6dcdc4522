"""The machine line every benchmark prints first, so figures are always read with their host."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

# The tools BENCHMARKS.md names with their versions: (label, argv)
TOOLS = (
    ("qemu-system-x86_64", ["qemu-system-x86_64", "--version"]),
    ("qemu-img", ["qemu-img", "--version"]),
    ("libvirtd", ["libvirtd", "--version"]),
    ("virt-install", ["virt-install", "--version"]),
    ("skopeo", ["skopeo", "--version"]),
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def describe(*extras: str) -> str:
    """``node arch N cpus, CPU model; load average L`` plus tool versions the caller adds."""
    parts = [f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, {cpu_model()}",
             f"load average {os.getloadavg()[0]:.2f}", *extras]
    return "; ".join(p for p in parts if p)


def make_disk(path: Path, size: int, data_mib: int) -> None:
    """Sparse raw disk of `size` bytes with `data_mib` MiB of incompressible data spread in 8 chunks."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        chunk = (data_mib << 20) // 8
        for i in range(8):
            fh.seek(i * (size // 8))
            fh.write(os.urandom(chunk))


def memory_total() -> str:
    """MemTotal of /proc/meminfo in GiB, or "?"."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "?"


def kvm() -> str:
    """/dev/kvm, and whether vmctl's probe (a guest really booted under KVM) lets vmctl use it:
    every figure is TCG's where it does not, and KVM figures cannot be reported."""
    if not os.path.exists("/dev/kvm"):
        return "absent (TCG only)"
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    text = "present" + ("" if usable else " (not read-write for this user)")
    try:
        from vmctl.backend.kvm_probe import probe_kvm   # lazy: only the runner asks (a guest boot)

        verdict = probe_kvm()
        return f"{text}; vmctl's probe: {'KVM usable' if verdict.usable else 'not usable, TCG'} ({verdict.reason})"
    except Exception as e:  # noqa: BLE001 - a fact for the report, never a reason to stop it
        return f"{text}; vmctl's probe failed: {e}"


def machine_facts() -> dict[str, str]:
    """The host as BENCHMARKS.md describes it: CPU, cores, memory, kernel, /dev/kvm, load."""
    return {
        "host": platform.node(),
        "CPU": f"{cpu_model()} ({platform.machine()})",
        "cores": f"{os.cpu_count()} (usable by this process: {len(os.sched_getaffinity(0))})",
        "memory": memory_total(),
        "kernel": f"{platform.system()} {platform.release()}",
        "/dev/kvm": kvm(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def tool_version(argv: list[str], timeout: float = 5) -> str:
    """First line of `argv`'s output; "not installed" when the program is not found."""
    # daemons (libvirtd) live in sbin, which an ordinary user's PATH may lack
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    exe = shutil.which(argv[0], path=path)
    if exe is None:
        return "not installed"
    try:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"unknown (no answer in {timeout:g} s)"
    except OSError as e:
        return f"unknown ({e.strerror})"
    lines = [ln.strip() for ln in (proc.stdout or proc.stderr).splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        return f"unknown (exit {proc.returncode}{': ' + lines[0] if lines else ''})"
    return lines[0]


def tool_versions(timeout: float = 5) -> dict[str, str]:
    """Python's version and each of TOOLS' (see ``tool_version``)."""
    return {"python": platform.python_version(), **{label: tool_version(argv, timeout) for label, argv in TOOLS}}


def timed_vmctl(env: dict, cwd=None):
    """A function running ``vmctl -q ARGS...`` as its own process (in `cwd`, with `env`) that
    returns its wall-clock seconds, and exits the benchmark with vmctl's error if it fails."""
    import subprocess
    import sys
    import time

    def vmctl(*a: str) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "vmctl", "-q", *a], env=env, capture_output=True, text=True,
                              cwd=cwd)
        if proc.returncode != 0:
            raise SystemExit(f"vmctl {' '.join(a[:3])}: {proc.stderr.strip()[-400:]}")
        return time.perf_counter() - t0
    return vmctl
