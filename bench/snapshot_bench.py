"""Snapshot create/revert and commit on a 256 MiB tiny guest under this machine's accelerator.

One VM (``tiny``, 256 MiB RAM) in a private data root under /var/tmp, with `--data-mib` MiB of
random data written into its disk first. Per run, timed through vmctl's core API (no CLI start-up):

- ``snapshot create --disk-only`` of the running VM (QMP internal snapshot + libvirt redefine),
- ``snapshot create`` with memory (libvirt savevm),
- ``snapshot revert`` to the memory snapshot (running -> running, loadvm in place),
- ``snapshot revert`` to the disk-only snapshot (QEMU restarted on the reverted disk; the boot that
  follows is not included, it is reported separately as "ready after disk revert"),

then, against the same disk:

- ``commit`` (layered, VM running: temporary internal snapshot + ``convert -B``) — time and new
  layer size — versus a full ``qemu-img convert -O qcow2`` of the disk (``-U``; what copying the
  whole disk into a standalone image costs) — time and size.

Prints medians, ratios and the machine. No assertions.

    python bench/snapshot_bench.py [--runs 3] [--data-mib 32] [--json-out FILE]
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
from benchhost import describe  # noqa: E402
from figures import Figures  # noqa: E402
from vmctl.storage import qemu_img  # noqa: E402

VM = f"snapbench-{os.urandom(2).hex()}"


def machine() -> str:
    return describe(f"qemu-img {qemu_img.version()}")


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data-mib", type=int, default=32)
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="vmctl-snapbench-", dir="/var/tmp"))
    os.environ["VMCTL_ROOT"] = str(root)
    os.environ["VMCTL_CONFIG"] = "/dev/null"
    from vmctl.config import load_settings
    from vmctl.core import commit, create, images, reach, snapshots
    from vmctl.core.instance import instance_dir
    from vmctl.core.session import Session

    app = Session(settings=load_settings())
    results: dict[str, list[float]] = {k: [] for k in (
        names.SNAPSHOT_CREATE_DISK, "create memory", names.SNAPSHOT_REVERT_MEMORY, names.SNAPSHOT_REVERT_DISK,
        "ready after disk revert", names.SNAPSHOT_COMMIT, names.SNAPSHOT_CONVERT)}
    sizes = {"layer": 0, "full": 0, "base": 0}
    try:
        images.build(app, "tiny", None)
        rec = create.run(app, create.CreateRequest(name=VM, image="tiny", memory_bytes=256 << 20, restrict=True),
                         timeout=240)
        reach.exec_(app, VM, ["sh", "-c", f"dd if=/dev/urandom of=/root/data bs=1M count={args.data_mib} 2>/dev/null; sync"],
                    stdout=sys.stdout.buffer, stderr=sys.stderr.buffer)
        for i in range(args.runs):
            results[names.SNAPSHOT_CREATE_DISK].append(timed(snapshots.create, app, VM, f"d{i}", mode="disk-only"))
            results["create memory"].append(timed(snapshots.create, app, VM, f"m{i}"))
            results[names.SNAPSHOT_REVERT_MEMORY].append(timed(snapshots.revert, app, VM, f"m{i}"))
            results[names.SNAPSHOT_REVERT_DISK].append(timed(snapshots.revert, app, VM, f"d{i}"))
            results["ready after disk revert"].append(timed(reach.wait, app, VM, 240))
        disk = instance_dir(app, VM) / "disk.qcow2"
        for i in range(args.runs):
            t = timed(commit.commit, app, VM, f"bench:{i}")
            results[names.SNAPSHOT_COMMIT].append(t)
            image = app.store.resolve(f"bench:{i}")
            sizes["layer"] = image.manifest["layers"][len(image.layer_digests) - 1]["size"]
            sizes["base"] = image.manifest["layers"][0]["size"]
            full = root / f"full-{i}.qcow2"
            results[names.SNAPSHOT_CONVERT].append(timed(
                qemu_img.run, ["convert", "-U", "-f", "qcow2", "-O", "qcow2", str(disk), str(full)]))
            sizes["full"] = full.stat().st_blocks * 512
            full.unlink()
        del rec
    finally:
        subprocess.run([sys.executable, "-m", "vmctl", "rm", "-f", VM], capture_output=True)
        app.close()
        shutil.rmtree(root, ignore_errors=True)

    figs = Figures("snapshot", machine(), params=vars(args))
    print(f"machine: {figs.machine}")
    print(f"guest: tiny, 256 MiB RAM, {args.data_mib} MiB written to its disk; {args.runs} runs; medians")
    for key, values in results.items():
        print(f"  {key:<26} {median(values):7.3f} s   ({', '.join(f'{v:.3f}' for v in values)})")
        figs.add(key, values, peer=names.SNAPSHOT_CONVERT if key == names.SNAPSHOT_COMMIT else None)
    c, f = median(results[names.SNAPSHOT_COMMIT]), median(results[names.SNAPSHOT_CONVERT])
    print(f"  commit / full convert time: {c / f:.2f}x")
    print(f"  new layer {sizes['layer'] / 2**20:.1f} MiB vs full convert {sizes['full'] / 2**20:.1f} MiB "
          f"({sizes['layer'] / max(sizes['full'], 1):.3f}x); base layer {sizes['base'] / 2**20:.1f} MiB")
    figs.value("new layer of commit", sizes["layer"] / 2**20, "MiB", peer="full convert of the disk")
    figs.value("full convert of the disk", sizes["full"] / 2**20, "MiB")
    figs.value("base layer", sizes["base"] / 2**20, "MiB")
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    main()
