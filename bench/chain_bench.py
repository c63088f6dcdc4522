"""Chain depth: reads in a guest whose image is 10 layers deep against one whose image is 1 layer.

The 10-layer image is made the way users make one: nine times, a VM is run from the last image,
`--layer-mib` MiB of random data is written to a file of its own and the VM is committed
(``vmctl commit``: one new layer on its parent each time) -- on top of the tiny image's single
layer. Then one VM is run from the tiny image (1 layer) and one from the last commit (10
layers), both with the same `--disk` size, and inside each the whole virtio disk is read with
O_DIRECT (no guest page cache): every cluster no layer holds is looked up through the whole
chain before it reads as zeros, which is where a chain's depth costs. Throughput in MiB/s from
the guest's own clock, medians of `--runs` reads per VM, the host's page cache warm for both
(the first read of each is not counted). No assertions.

    python bench/chain_bench.py [--runs 3] [--disk 4G] [--layer-mib 8] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import figure_names as names  # noqa: E402
from benchhost import describe  # noqa: E402
from figures import Figures, median  # noqa: E402

TAG = f"chainbench{os.urandom(2).hex()}"
# /proc/uptime before and after, then the bytes read: the guest's own clock, 10 ms resolution
READ = ("n=$(($(cat /sys/block/vda/size) * 512)); a=$(cut -d' ' -f1 /proc/uptime); "
        "dd if=/dev/vda of=/dev/null bs=4M iflag=direct 2>/dev/null || exit 1; "
        "b=$(cut -d' ' -f1 /proc/uptime); echo $a $b $n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--disk", default="4G")
    ap.add_argument("--layer-mib", type=int, default=8)
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    figs = Figures("chain", describe("chain bench"), params=vars(args))
    print(figs.machine)
    root = Path(tempfile.mkdtemp(prefix="vmctl-chainbench-", dir="/var/tmp"))
    env = {**os.environ, "VMCTL_ROOT": str(root), "VMCTL_CONFIG": "/dev/null"}

    def vmctl(*a: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "vmctl", "-q", *a], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"vmctl {' '.join(a[:2])}: {proc.stderr.strip()[-400:]}")
        return proc.stdout

    def run(name: str, image: str) -> None:
        vmctl("run", name, "--image", image, "--memory", "256M", "--disk", args.disk, "--restrict-network")

    def layers(ref: str) -> int:
        (info,) = json.loads(vmctl("image", "inspect", ref))
        return len(info["layers"])

    results: dict[int, list[float]] = {}
    vms: list[str] = []
    try:
        vmctl("image", "build", "tiny")
        parent = "tiny"
        for i in range(1, 10):
            name = f"{TAG}-w{i}"
            run(name, parent)
            vms.append(name)
            vmctl("exec", name, "--", "sh", "-c",
                  f"dd if=/dev/urandom of=/root/layer{i} bs=1M count={args.layer_mib} 2>/dev/null && sync")
            vmctl("commit", name, f"{TAG}:l{i}")
            vmctl("rm", "-f", name)
            vms.remove(name)
            parent = f"{TAG}:l{i}"
        for image in ("tiny", parent):
            depth = layers(image)
            name = f"{TAG}-r{depth}"
            run(name, image)
            vms.append(name)
            speeds = []
            for attempt in range(args.runs + 1):
                a, b, n = vmctl("exec", name, "--", "sh", "-c", READ).split()
                if attempt:   # the first read warms the host's page cache for the layer files
                    speeds.append(int(n) / 2**20 / max(float(b) - float(a), 0.01))
            results[depth] = speeds
            vmctl("rm", "-f", name)
            vms.remove(name)
    finally:
        for name in vms:
            subprocess.run([sys.executable, "-m", "vmctl", "rm", "-f", name], env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    (deep,) = [d for d in results if d != 1] or [10]
    label = {1: names.CHAIN_READ_1, deep: names.CHAIN_READ_10 if deep == 10 else f"read through {deep} layers"}
    print(f"whole {args.disk} disk read in the guest with O_DIRECT, {args.runs} runs; medians")
    for depth, speeds in sorted(results.items()):
        print(f"  {label[depth]:<26} {median(speeds):8.1f} MiB/s  ({', '.join(f'{x:.0f}' for x in speeds)})")
        figs.add(label[depth], speeds, "MiB/s", peer=names.CHAIN_READ_1 if depth != 1 else None,
                 lower_is_better=False)
    if 1 in results and deep in results:
        print(f"  {deep} layers / 1 layer: {median(results[deep]) / median(results[1]):.2f}")
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    main()
