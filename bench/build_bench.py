#!/usr/bin/env python3
"""Benchmark the ``tiny`` image build and boot; prints figures, asserts nothing.

    python3 bench/build_bench.py [--runs N] [--no-cold-download] [--json-out FILE]

Measures, on this machine, in one run:
  * build time: fully cold (empty package cache), cold image with cached packages, cached (no-op);
  * image size: qcow2 on disk, kernel blob, initrd;
  * boot under QEMU/TCG (q35, 256 MiB, 1 vCPU) with a vmctl seed: seconds to the readiness line
    and to the SSH banner on the forwarded port, and the guest's own uptime at readiness;
  * the floor: a bare ``qemu-system-x86_64`` boot of the same kernel (no initrd, no disk) to its
    first serial line, for both the shipped bzImage and the PVH ELF the recipe uses.
Medians over ``--runs`` boots. Figures vary with the host's load: note it next to them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from figures import Figures  # noqa: E402
from vmctl.build import build
from vmctl.guest import contract as guest_contract  # noqa: E402
from vmctl.build.testing import DirectBoot, test_cache_dir  # noqa: E402
from vmctl.seed import generate_host_key, write_seed  # noqa: E402


def timed(fn):
    t0 = time.monotonic()
    result = fn()
    return time.monotonic() - t0, result


def bare_boot(kernel: Path, timeout: float = 60) -> float:
    """Seconds from QEMU start to the kernel's first line on the serial console."""
    with tempfile.TemporaryDirectory() as tmp:
        console = Path(tmp) / "console.log"
        args = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "256", "-nodefaults",
                "-no-user-config", "-display", "none", "-no-reboot", "-kernel", str(kernel),
                "-append", "console=ttyS0 panic=-1", "-serial", f"file:{console}"]
        t0 = time.monotonic()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.monotonic() - t0 < timeout:
                if console.exists() and b"\n" in console.read_bytes():
                    return time.monotonic() - t0
                time.sleep(0.01)
            return float("nan")
        finally:
            proc.kill()
            proc.wait()


def boot_once(result, work: Path) -> tuple[float, float, float]:
    seed = work / "seed.iso"
    write_seed(seed, instance_id=f"bench-{time.time_ns()}", hostname="bench", authorized_keys=[],
               host_keys=[generate_host_key()], extra_runcmd=["true"])
    with DirectBoot(result, seed, work) as boot:
        ready = banner = None
        deadline = time.monotonic() + 120
        while (ready is None or banner is None) and time.monotonic() < deadline:
            if ready is None and guest_contract.is_ready(boot.text()):
                ready = time.monotonic() - boot.started
            if banner is None:
                try:
                    banner = boot.wait_for_banner(0.2)
                except TimeoutError:
                    pass
            time.sleep(0.02)
        uptime = next((float(m.group("seconds")) for line in boot.text().splitlines()
                       if (m := guest_contract.UPTIME_RE.match(line.strip()))), float("nan"))
        boot.qmp("quit")
        boot.wait_exit(20)
    return ready, banner, uptime


def bzimage_of(result) -> Path | None:
    """The bzImage of the build's kernel package (from the package cache), for the floor."""
    for p in (test_cache_dir() / "extract").glob("linux-image-*/boot/vmlinuz-*"):
        return p
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-cold-download", action="store_true", help="skip the empty-package-cache build")
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    figs = Figures("build", f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, qemu TCG, q35, 256 MiB, 1 vCPU",
                   params=vars(args))
    print(f"machine: {figs.machine}")
    with tempfile.TemporaryDirectory(prefix="vmctl-bench-") as tmp:
        tmp = Path(tmp)
        if not args.no_cold_download:
            t, _ = timed(lambda: build("tiny", tmp / "c0", tmp / "w", packages_cache=tmp / "pkgs"))
            print(f"build, empty package cache (apt-get download + build): {t:6.2f} s")
            figs.value("build, empty package cache (apt-get download + build)", t, "s")
        t, result = timed(lambda: build("tiny", tmp / "c1", tmp / "w", packages_cache=test_cache_dir()))
        print(f"build, packages cached:                                {t:6.2f} s")
        figs.value("build, packages cached", t, "s")
        t, again = timed(lambda: build("tiny", tmp / "c1", tmp / "w", packages_cache=test_cache_dir()))
        print(f"build, cached (no-op, cached={again.cached}):                 {t:6.3f} s")
        figs.value("build, cached (no-op)", t, "s")
        disk_on_disk = result.disk.stat().st_blocks * 512
        print(f"image: disk {disk_on_disk / 2**20:.1f} MiB on disk ({result.defaults['disk_bytes'] / 2**20:.0f} MiB virtual), "
              f"kernel {result.kernel.stat().st_size / 2**20:.1f} MiB ({result.kernel.name}), "
              f"initrd {result.initrd.stat().st_size / 2**20:.2f} MiB")
        print(f"cmdline: {result.cmdline}")
        figs.value("image disk, on disk", disk_on_disk / 2**20, "MiB")
        figs.value("image disk, virtual", result.defaults["disk_bytes"] / 2**20, "MiB")
        figs.value(f"kernel ({result.kernel.name})", result.kernel.stat().st_size / 2**20, "MiB")
        figs.value("initrd", result.initrd.stat().st_size / 2**20, "MiB")

        runs = [boot_once(result, tmp) for _ in range(args.runs)]
        ready = statistics.median(r[0] for r in runs)
        banner = statistics.median(r[1] for r in runs)
        uptime = statistics.median(r[2] for r in runs)
        pvh_runs = [bare_boot(result.kernel) for _ in range(args.runs)]
        floor_pvh = statistics.median(pvh_runs)
        bz = bzimage_of(result)
        bz_runs = [bare_boot(bz) for _ in range(args.runs)] if bz else []
        floor_bz = statistics.median(bz_runs) if bz else float("nan")
        print(f"boot to '{guest_contract.READY_LINE}': median {ready:5.2f} s  (runs: {', '.join(f'{r[0]:.2f}' for r in runs)})")
        print(f"boot to SSH banner:             median {banner:5.2f} s")
        print(f"guest uptime at ready:          median {uptime:5.2f} s")
        print(f"floor, bare kernel to first serial line: PVH ELF {floor_pvh:5.2f} s, bzImage {floor_bz:5.2f} s")
        print(f"ratio ready / floor(PVH):       {ready / floor_pvh:5.2f}x")
        print(f"load after: {os.getloadavg()[0]:.2f}")
        floor = "floor: bare PVH ELF kernel to first serial line"
        figs.add(f"boot to '{guest_contract.READY_LINE}'", [r[0] for r in runs], peer=floor)
        figs.add("boot to SSH banner", [r[1] for r in runs])
        figs.add("guest uptime at ready", [r[2] for r in runs])
        figs.add(floor, pvh_runs)
        figs.add("floor: bare bzImage kernel to first serial line", bz_runs)
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    if shutil.which("qemu-system-x86_64") is None:
        sys.exit("qemu-system-x86_64 not installed")
    main()
