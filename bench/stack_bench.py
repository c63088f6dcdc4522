"""Stacks on vmctl's tiny guest: ``vmctl up -d`` of a two-VM stack (both on one private network,
each waited for until SSH lets vmctl in) against the same two VMs made by two sequential
``vmctl run``s, a no-op ``up`` (nothing changed), ``up --recreate`` of one changed VM, and
``down``. Whole CLI processes, wall clock, medians of `--runs`. No assertions.

    python bench/stack_bench.py [--runs 3] [--json-out FILE]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import figure_names as names  # noqa: E402
from benchhost import describe, timed_vmctl  # noqa: E402
from figures import Figures  # noqa: E402

STACK = """name: bench
vms:
  a:
    image: tiny
    memory: {memory}
  b:
    image: tiny
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    figs = Figures("stack", describe("stack bench"), params=vars(args))
    print(figs.machine)
    root = Path(tempfile.mkdtemp(prefix="vmctl-stackbench-", dir="/var/tmp"))
    stack = Path(tempfile.mkdtemp(prefix="vmctl-stackbench-dir-", dir="/var/tmp"))
    env = {**os.environ, "VMCTL_ROOT": str(root), "VMCTL_CONFIG": "/dev/null"}

    vmctl = timed_vmctl(env, cwd=stack)

    times: dict[str, list[float]] = {}
    try:
        vmctl("image", "build", "tiny")
        for _ in range(args.runs):
            (stack / "vmctl.yaml").write_text(STACK.format(memory="256M"))
            times.setdefault(names.STACK_UP, []).append(vmctl("up", "-d"))
            times.setdefault("up -d again (nothing to do)", []).append(vmctl("up", "-d"))
            (stack / "vmctl.yaml").write_text(STACK.format(memory="288M"))
            times.setdefault("up -d --recreate (one VM changed)", []).append(vmctl("up", "-d", "--recreate"))
            times.setdefault("down", []).append(vmctl("down"))
            t0 = time.perf_counter()
            vmctl("run", "seq-a", "--image", "tiny")
            vmctl("run", "seq-b", "--image", "tiny")
            times.setdefault(names.STACK_SEQUENTIAL, []).append(time.perf_counter() - t0)
            vmctl("rm", "-f", "seq-a", "seq-b")
    finally:
        subprocess.run([sys.executable, "-m", "vmctl", "down"], env=env, cwd=stack, capture_output=True)
        subprocess.run([sys.executable, "-m", "vmctl", "rm", "-f", "seq-a", "seq-b"], env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(stack, ignore_errors=True)
    for label, xs in times.items():
        print(f"{label:<40}{statistics.median(xs):8.2f} s  (runs: {', '.join(f'{x:.2f}' for x in xs)})")
        figs.add(label, xs, peer=names.STACK_SEQUENTIAL if label == names.STACK_UP else None)
    up, seq = statistics.median(times[names.STACK_UP]), statistics.median(times[names.STACK_SEQUENTIAL])
    print(f"up of two VMs / two sequential runs: {up / seq:.2f}")
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    main()
