"""Stop and start of vmctl's tiny guest (hosted mode, TCG, 256 MiB), whole CLI processes.

Per run, with this script listening to libvirt's lifecycle events on the same daemon:

- ``vmctl stop``: the whole process, split at the guest's power-off (libvirt's "stopped" event,
  when QEMU has exited) into the guest's own shutdown (button to power-off: the guest's time, not
  vmctl's) and **power-off to vmctl returning** (the goal: how soon vmctl notices; a 100 ms poll
  would add 50 ms on average, an event adds nothing),
- ``vmctl start`` and then ``vmctl wait`` (until SSH lets vmctl in), and the guest's uptime read
  right after (its own boot to SSH ready; an upper bound, the exec's connection included),
- ``vmctl kill`` (power cut) and its power-off to return.

Medians of `--runs`. No assertions.

    python bench/lifecycle_bench.py [--runs 5] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import os
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
from figures import Figures, median  # noqa: E402

VM = f"lcbench-{os.urandom(2).hex()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    figs = Figures("lifecycle", describe("lifecycle bench"), params=vars(args))
    print(figs.machine)
    root = Path(tempfile.mkdtemp(prefix="vmctl-lcbench-", dir="/var/tmp"))
    os.environ.update(VMCTL_ROOT=str(root), VMCTL_CONFIG="/dev/null")
    env = dict(os.environ)
    from vmctl.backend.events import open_events
    from vmctl.config import load_settings
    from vmctl.core.session import Session

    def vmctl(*a: str) -> tuple[float, float]:
        """Run ``vmctl -q A...``; (its wall-clock seconds, the epoch time it returned)."""
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "vmctl", "-q", *a], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"vmctl {' '.join(a[:2])}: {proc.stderr.strip()[-400:]}")
        return time.perf_counter() - t0, time.time()

    app = Session(settings=load_settings())
    uri = app.backend.uri
    times: dict[str, list[float]] = {}

    def add(label: str, x: float) -> None:
        times.setdefault(label, []).append(x)

    def uptime() -> float:
        """The guest's /proc/uptime read by an exec right after `wait` returned: its own boot, from
        the kernel's start to SSH ready, plus the exec's connection (an upper bound)."""
        proc = subprocess.run([sys.executable, "-m", "vmctl", "exec", VM, "--", "cut", "-d", " ", "-f1",
                               "/proc/uptime"], env=env, capture_output=True, text=True)
        return float(proc.stdout.strip()) if proc.returncode == 0 else float("nan")

    def stopped_at(stream, since: float) -> float | None:
        """Epoch time of VM's "stopped" event received after `since` (already queued by now)."""
        while (ev := stream.next(timeout=2)) is not None:
            if ev.name == VM and ev.event == "stopped" and ev.time >= since:
                return ev.time
        return None

    def timed_off(verb: str) -> tuple[float, float, float, float | None]:
        """``vmctl VERB VM`` while listening: (epoch at the call, its seconds, epoch it returned,
        epoch of the VM's "stopped" event or None)."""
        with open_events(uri) as stream:
            began = time.time()
            took, returned = vmctl(verb, VM)
            return began, took, returned, stopped_at(stream, began)

    try:
        vmctl("image", "build", "tiny")
        vmctl("run", VM, "--image", "tiny", "--memory", "256M", "--restrict-network")
        for _ in range(args.runs):
            began, took, returned, off = timed_off("stop")
            add("vmctl stop, whole process", took)
            if off is not None:
                add("power button to power-off (the guest's shutdown)", off - began)
                add(names.LIFECYCLE_STOP, returned - off)
            add("vmctl start", vmctl("start", VM)[0])
            add("vmctl wait after start (SSH ready)", vmctl("wait", VM)[0])
            add(names.LIFECYCLE_UPTIME, uptime())
            began, took, returned, off = timed_off("kill")
            add("vmctl kill, whole process", took)
            if off is not None:
                add("power cut to vmctl kill returning", returned - off)
            vmctl("start", VM)
            vmctl("wait", VM)
    finally:
        subprocess.run([sys.executable, "-m", "vmctl", "rm", "-f", VM], env=env, capture_output=True)
        app.close()
        shutil.rmtree(root, ignore_errors=True)

    print(f"tiny guest, 256 MiB, {args.runs} runs; medians")
    for label, xs in times.items():
        print(f"  {label:<52} {median(xs) * 1000:8.1f} ms  ({', '.join(f'{x * 1000:.0f}' for x in xs)})")
        figs.add(label, xs)
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    main()
