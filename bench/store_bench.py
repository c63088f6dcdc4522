"""Image import vs a plain ``qemu-img convert``: what does the store's safety cost?

For a 1 GiB and a 20 GiB sparse raw disk (with some data written in), time:
- ``qemu-img convert -f raw -O qcow2`` alone (the floor: a full copy with no checks), and
- ``ImageStore.import_image`` (header probe, qemu-img info, measure, convert, qemu-img check,
  sha256 of the layer, fsync, publish, index update) into a fresh store each run.

Prints medians and the ratio, with the machine noted. No assertions.

    python bench/store_bench.py [--runs 5] [--data-mib 256] [--dir /var/tmp] [--json-out FILE]
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
from benchhost import describe, make_disk  # noqa: E402
from figures import Figures  # noqa: E402
from vmctl.storage import ImageStore  # noqa: E402
from vmctl.storage import qemu_img  # noqa: E402


def machine() -> str:
    return describe(f"qemu-img {qemu_img.version()}")


def drop_caches() -> None:
    # Fair comparison: both sides read the input from the page cache (it was just written), so no
    # dropping; we only sync so earlier writes do not land inside a timed run.
    os.sync()


def bench(size: int, runs: int, data_mib: int, base: Path) -> tuple[list[float], list[float]]:
    work = Path(tempfile.mkdtemp(prefix="store-bench-", dir=base))
    try:
        disk = work / "disk.raw"
        make_disk(disk, size, data_mib)
        plain, store_times = [], []
        for i in range(runs):
            out = work / f"plain-{i}.qcow2"
            drop_caches()
            t = time.perf_counter()
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disk), str(out)], check=True)
            plain.append(time.perf_counter() - t)
            out.unlink()
            root = work / f"root-{i}"
            drop_caches()
            t = time.perf_counter()
            ImageStore(root, None).import_image(disk, "bench:1")
            store_times.append(time.perf_counter() - t)
            shutil.rmtree(root)
        return plain, store_times
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data-mib", type=int, default=256, help="MiB of real data in each disk")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where to put disks and stores")
    ap.add_argument("--sizes-gib", default="1,20")
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    figs = Figures("store", machine(), params=vars(args))
    print(f"machine: {figs.machine}")
    print(f"runs: {args.runs}, data per disk: {args.data_mib} MiB, dir: {args.dir}")
    print(f"{'virtual size':>12}  {'qemu-img convert':>17}  {'vmctl import':>13}  {'ratio':>6}")
    for gib in [int(x) for x in args.sizes_gib.split(",")]:
        plain, store = bench(gib << 30, args.runs, args.data_mib, Path(args.dir))
        mp, ms = statistics.median(plain), statistics.median(store)
        print(f"{gib:>9} GiB  {mp:>15.3f} s  {ms:>11.3f} s  {ms / mp:>6.2f}")
        figs.add(names.store_convert(gib), plain)
        figs.add(names.store_import(gib), store, peer=names.store_convert(gib))
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    main()
