"""Density: how much host memory idle tiny VMs take, at 1, 10, 50 and 100 VMs at once.

vmctl's tiny guest (hosted mode, TCG, 256 MiB each, the ``dense`` profile: TCG's translation cache
capped at 64 MiB; ``--profile hosted`` for the default one), booted two at a time
(one per core) with ``vmctl run`` until the count is reached. At each count, once every VM is up,
each one is reached over SSH (``vmctl exec VM true``), the VMs sit idle for `--settle` seconds,
and then the script sums the PSS of every QEMU process (``/proc/PID/smaps_rollup``: what each
process takes with shared pages divided among their users -- all it takes) and divides by the
count. It also reports the drop of the host's MemAvailable per VM.

KSM (the kernel merging identical pages; QEMU marks guest RAM mergeable) is off unless the host
turns it on. Where ``/sys/kernel/mm/ksm/run`` is writable, counts from `--ksm-from` on are also
measured with ksmd running (1,000 pages per 20 ms wake-up, until its sharing settles) -- the
script turns it on for the run and restores the host's settings at the end. Below that count
KSM stays as the host has it, so both are seen.

The script stops adding VMs if MemAvailable would fall under `--reserve-mib`, and says so: the
curve then ends where the host's memory did. One pass (``--runs`` is accepted for the runner
and ignored: each count is measured once). No assertions.

    python bench/density_bench.py [--counts 1,10,50,100] [--profile dense] [--ksm-from 10] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import figure_names as names  # noqa: E402
from benchhost import describe  # noqa: E402
from figures import Figures  # noqa: E402

KSM = Path("/sys/kernel/mm/ksm")
KSM_KNOBS = ("run", "pages_to_scan", "sleep_millisecs")
PREFIX = f"dens{os.urandom(2).hex()}-"
GUEST_MIB = 256


def mem_available_mib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def qemu_pss_mib(prefix: str = PREFIX) -> dict[str, float]:
    """PSS in MiB of every QEMU process running a VM named `prefix` + a number, by VM name."""
    found = {}
    pattern = re.compile(rb"guest=(" + re.escape(prefix.encode()) + rb"[0-9]+)")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            m = pattern.search(cmdline)
            if not m:
                continue
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    found[m.group(1).decode()] = int(line.split()[1]) / 1024
        except OSError:
            continue   # a process that ended while being read
    return found


def ksm_writable() -> bool:
    return (KSM / "run").exists() and os.access(KSM / "run", os.W_OK)


def ksm_read(knob: str) -> int:
    return int((KSM / knob).read_text())


def ksm_settle(limit: float = 240) -> dict[str, float]:
    """Wait until ksmd's sharing stops growing (two full scans, then < 1 % in 10 s) or `limit` s."""
    t0 = time.monotonic()
    scans = ksm_read("full_scans")
    last = -1
    while time.monotonic() - t0 < limit:
        time.sleep(10)
        sharing = ksm_read("pages_sharing")
        if ksm_read("full_scans") >= scans + 2 and last >= 0 and sharing - last <= 0.01 * max(last, 1):
            break
        last = sharing
    return {"seconds": time.monotonic() - t0, "pages_sharing": ksm_read("pages_sharing"),
            "pages_shared": ksm_read("pages_shared")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1, help="ignored: each count is measured once")
    ap.add_argument("--counts", default="1,10,50,100")
    ap.add_argument("--profile", default="dense", help="the VMs' machine profile")
    ap.add_argument("--ksm-from", type=int, default=10, help="measure with ksmd running from this count on")
    ap.add_argument("--settle", type=float, default=20, help="idle seconds before each measurement")
    ap.add_argument("--reserve-mib", type=int, default=2048, help="never let MemAvailable fall under this")
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    counts = sorted({int(x) for x in args.counts.split(",") if x.strip()})
    figs = Figures("density", describe("density bench"), params=vars(args))
    print(figs.machine)
    root = Path(tempfile.mkdtemp(prefix="vmctl-densbench-", dir="/var/tmp"))
    env = {**os.environ, "VMCTL_ROOT": str(root), "VMCTL_CONFIG": "/dev/null"}

    def vmctl(*a: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "vmctl", "-q", *a], env=env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"vmctl {' '.join(a[:2])}: {proc.stderr.strip()[-300:]}")
        return proc

    ksm_saved = {k: (KSM / k).read_text().strip() for k in KSM_KNOBS} if ksm_writable() else None
    made: list[str] = []
    rows: list[tuple[int, str, float, float, int]] = []   # count, ksm, PSS/VM, MemAvailable drop/VM, reached
    stopped_early = ""
    try:
        vmctl("image", "build", "tiny")
        vmctl("--version")
        base_avail = mem_available_mib()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)))
        for count in counts:
            while len(made) < count and not stopped_early:
                batch = []
                while len(made) + len(batch) < count and len(batch) < 2:
                    # what a new VM may take at worst: its RAM and QEMU's translation cache
                    if mem_available_mib() - (len(batch) + 1) * (GUEST_MIB + 96) < args.reserve_mib:
                        stopped_early = (f"stopped at {len(made) + len(batch)} VMs: MemAvailable "
                                         f"{mem_available_mib():.0f} MiB, reserve {args.reserve_mib} MiB")
                        break
                    batch.append(f"{PREFIX}{len(made) + len(batch)}")
                futures = [pool.submit(vmctl, "run", name, "--image", "tiny", "--memory", f"{GUEST_MIB}M",
                                       "--profile", args.profile, "--restrict-network") for name in batch]
                for name, fut in zip(batch, futures):
                    fut.result()
                    made.append(name)
                print(f"  {len(made)} VMs up", flush=True)
            if stopped_early:
                print(f"  {stopped_early}")
            n = len(made)
            if not n or (rows and rows[-1][0] == n):
                break
            reached = sum(vmctl("exec", name, "true", check=False).returncode == 0 for name in made)
            phases = [("off" if ksm_saved is None or ksm_saved["run"] != "1" else "on", None)]
            if ksm_saved is not None and n >= args.ksm_from and ksm_saved["run"] != "1":
                phases.append(("on", "1"))
            for ksm, turn_on in phases:
                if turn_on:
                    (KSM / "pages_to_scan").write_text("1000")
                    (KSM / "sleep_millisecs").write_text("20")
                    (KSM / "run").write_text("1")
                    settled = ksm_settle()
                    print(f"  KSM settled in {settled['seconds']:.0f} s: {settled['pages_sharing']} pages sharing "
                          f"{settled['pages_shared']}")
                time.sleep(args.settle)
                pss = qemu_pss_mib()
                per_vm = sum(pss.values()) / max(len(pss), 1)
                drop = (base_avail - mem_available_mib()) / n
                rows.append((n, ksm, per_vm, drop, reached))
                print(f"  {n:>4} VMs, KSM {ksm:<3}: QEMU PSS {per_vm:6.1f} MiB per VM "
                      f"(total {sum(pss.values()) / 1024:.2f} GiB of {len(pss)} processes); "
                      f"MemAvailable down {drop:6.1f} MiB per VM; SSH reached {reached} of {n}", flush=True)
                if turn_on:   # back off for the next count's ramp, as the host had it
                    (KSM / "run").write_text(ksm_saved["run"])
            if stopped_early:
                break
        pool.shutdown()
    finally:
        for name in made:
            vmctl("rm", "-f", name, check=False)
        if ksm_saved is not None:
            for knob in KSM_KNOBS:
                (KSM / knob).write_text(ksm_saved[knob])
        shutil.rmtree(root, ignore_errors=True)

    reached_at: dict[int, int] = {}
    for n, ksm, per_vm, drop, reached in rows:
        figs.value(f"QEMU PSS per idle VM, {n} VMs, KSM {ksm}", per_vm, "MiB")
        figs.value(f"MemAvailable drop per idle VM, {n} VMs, KSM {ksm}", drop, "MiB")
        reached_at[n] = reached
    for n, reached in reached_at.items():
        figs.value(f"VMs reached over SSH, {n} VMs", reached, "VMs", lower_is_better=False)
    if rows:
        # the goal's figure: the most VMs measured, with KSM where this host can have it
        most = max(r[0] for r in rows)
        best = min((r for r in rows if r[0] == most), key=lambda r: r[2])
        figs.value(names.DENSITY_PSS, best[2], "MiB")
        figs.value("VMs at once (most measured)", most, "VMs", lower_is_better=False)
        print(f"{names.DENSITY_PSS}: {best[2]:.1f} MiB at {most} VMs (KSM {best[1]})"
              + (f"; {stopped_early}" if stopped_early else ""))
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    main()
