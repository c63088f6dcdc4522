"""The CLI's floor: whole ``vmctl --help`` and ``vmctl --version`` processes against the Python
interpreter doing nothing and ``virsh --help`` (libvirt's own CLI), medians of `--runs` x 10
(each is tens of milliseconds: more samples steady the median). No assertions.

    python bench/cli_bench.py [--runs 3] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import figure_names as names  # noqa: E402
from benchhost import describe  # noqa: E402
from figures import Figures  # noqa: E402

REPEAT = 10


def _time(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    figs = Figures("cli", describe("cli bench"), params=vars(args))
    print(figs.machine)
    vmctl = [sys.executable, "-m", "vmctl"]
    cases = {
        names.CLI_HELP: (vmctl + ["--help"], "virsh --help"),
        "vmctl --version": (vmctl + ["--version"], "python -c pass (the interpreter's floor)"),
        "python -c pass (the interpreter's floor)": ([sys.executable, "-c", "pass"], None),
    }
    if shutil.which("virsh"):
        cases["virsh --help"] = (["virsh", "--help"], None)
    times = {label: [] for label in cases}
    for _ in range(args.runs * REPEAT):
        for label, (argv, _peer) in cases.items():
            times[label].append(_time(argv))
    for label, (_argv, peer) in cases.items():
        xs = times[label]
        print(f"{label:<44}{statistics.median(xs) * 1000:8.1f} ms  (best {min(xs) * 1000:.1f}, worst {max(xs) * 1000:.1f})")
        figs.add(label, xs, peer=peer if peer in cases else None)
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    main()
