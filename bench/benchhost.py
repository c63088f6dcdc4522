"""The machine line every benchmark prints first, so figures are always read with their host."""

from __future__ import annotations

import os
import platform
from pathlib import Path


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
