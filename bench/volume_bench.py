"""Volumes: large-file and many-small-file I/O through a shared directory against the guest's own
disk and the host itself, on vmctl's tiny guest under this machine's accelerator.

Two VMs (256 MiB RAM) in private data roots under /var/tmp, each with one writable volume of a
fresh host directory: one by virtio-fs (vmctl's default where the daemon runs virtiofsd), one by
9p (``volume_transport = "9p"``). In each guest, for the volume and for the guest's own disk
(ext4 on the qcow2 overlay, virtio-blk), and once on the host for the same directory:

- sequential write of a `--mib` MiB file (``dd bs=1M``, then ``sync``),
- sequential read of it after dropping the guest's page cache (``dd`` to /dev/null),
- a many-small-files workload: unpack a tar of `--files` small files (a source tree's shape:
  directories of 1-16 KiB files), then ``stat`` every file (``find -exec stat``).

Times are wall-clock around ``vmctl exec`` minus the median cost of ``vmctl exec true`` (so the SSH
round trip is not counted). Prints medians of `--runs` and each transport's ratio to the guest's
own disk (goal: large files >= 50 % of the guest disk's throughput). No assertions.

    python bench/volume_bench.py [--runs 3] [--mib 64] [--files 2000] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import figure_names as names  # noqa: E402
from benchhost import describe  # noqa: E402
from figures import Figures  # noqa: E402

VMCTL = [sys.executable, "-m", "vmctl"]


class Vm:
    def __init__(self, name: str, transport: str, share: Path):
        self.name, self.transport, self.share = name, transport, share
        self.root = Path(tempfile.mkdtemp(prefix=f"vmctl-volbench-{transport}-", dir="/var/tmp"))
        config = self.root / "config.toml"
        config.write_text(f'volume_transport = "{transport}"\n')
        self.env = {**os.environ, "VMCTL_ROOT": str(self.root), "VMCTL_CONFIG": str(config)}

    def __call__(self, *args: str, timeout: float = 900) -> str:
        proc = subprocess.run([*VMCTL, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise SystemExit(f"vmctl {' '.join(args[:3])}: {proc.stderr.strip()}")
        return proc.stdout

    def sh(self, script: str) -> float:
        t0 = time.perf_counter()
        self("exec", self.name, "--", "sh", "-c", script)
        return time.perf_counter() - t0

    def start(self) -> None:
        self("image", "build", "tiny", timeout=3600)
        self("run", self.name, "--image", "tiny", "--memory", "256M", "-v", f"{self.share}:/vol", timeout=900)

    def stop(self) -> None:
        subprocess.run([*VMCTL, "rm", "-f", self.name], env=self.env, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def small_tree_tar(path: Path, files: int) -> None:
    rng = random.Random(7)
    with tarfile.open(path, "w") as tar:
        for i in range(files):
            data = rng.randbytes(rng.randint(1024, 16384))
            info = tarfile.TarInfo(f"tree/d{i // 50:03d}/f{i:05d}.c")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def guest_rounds(vm: Vm, where: str, mib: int, overhead: float) -> dict[str, float]:
    drop = "sync; echo 3 > /proc/sys/vm/drop_caches"
    out = {}
    vm.sh(f"rm -rf {where}/b && mkdir -p {where}/b")
    out["write"] = vm.sh(f"dd if=/dev/zero of={where}/b/big bs=1M count={mib} 2>/dev/null && sync") - overhead
    vm.sh(drop)
    out["read"] = vm.sh(f"dd if={where}/b/big of=/dev/null bs=1M 2>/dev/null") - overhead
    vm.sh(f"rm -f {where}/b/big; {drop}")
    out["small"] = vm.sh(f"cd {where}/b && tar -xf /root/tree.tar && find tree -type f -exec stat {{}} + >/dev/null") \
        - overhead
    vm.sh(f"rm -rf {where}/b")
    return out


def host_rounds(directory: Path, tar: Path, mib: int) -> dict[str, float]:
    work = directory / "hostb"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    out = {}
    t0 = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={work}/big", "bs=1M", f"count={mib}"], check=True, capture_output=True)
    os.sync()
    out["write"] = time.perf_counter() - t0
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={work}/big", "of=/dev/null", "bs=1M"], check=True, capture_output=True)
    out["read"] = time.perf_counter() - t0
    (work / "big").unlink()
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xf", str(tar), "-C", str(work)], check=True)
    subprocess.run(f"find {work}/tree -type f -exec stat {{}} + >/dev/null", shell=True, check=True)
    out["small"] = time.perf_counter() - t0
    shutil.rmtree(work)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    figs = Figures("volume", describe("volume bench"), params=vars(args))
    print(figs.machine)
    scratch = Path(tempfile.mkdtemp(prefix="vmctl-volbench-", dir="/var/tmp"))
    # 9p is served by QEMU as its own user: let it through the scratch directory
    subprocess.run(["setfacl", "-m", "u:libvirt-qemu:x", str(scratch)], capture_output=True)
    tar = scratch / "tree.tar"
    small_tree_tar(tar, args.files)
    results: dict[str, dict[str, list[float]]] = {}
    vms = []
    try:
        for transport in ("virtiofs", "9p"):
            share = scratch / transport
            share.mkdir()
            subprocess.run(["setfacl", "-m", "u:libvirt-qemu:rwx", str(share)], capture_output=True)
            vm = Vm(f"volbench-{transport.replace('9p', 'ninep')}", transport, share)
            vms.append(vm)
            vm.start()
            vm("cp", str(tar), f"{vm.name}:/root/tree.tar")
            overhead = statistics.median(vm.sh("true") for _ in range(5))
            for where, label in (("/vol", transport), ("/root", f"guest disk ({transport} VM)")):
                for _ in range(args.runs):
                    for k, v in guest_rounds(vm, where, args.mib, overhead).items():
                        results.setdefault(label, {}).setdefault(k, []).append(v)
        for _ in range(args.runs):
            for k, v in host_rounds(scratch, tar, args.mib).items():
                results.setdefault("host", {}).setdefault(k, []).append(v)
    finally:
        for vm in vms:
            vm.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    med = {label: {k: statistics.median(v) for k, v in r.items()} for label, r in results.items()}
    print(f"\n{'where':<28}{'write MiB/s':>12}{'read MiB/s':>12}{f'{args.files} files s':>16}")
    for label, r in med.items():
        print(f"{label:<28}{args.mib / r['write']:>12.1f}{args.mib / r['read']:>12.1f}{r['small']:>16.2f}")
        # a volume against the guest disk of its VM, a guest disk against the host's
        peer = {"virtiofs": "guest disk (virtiofs VM)", "9p": "guest disk (9p VM)",
                "guest disk (virtiofs VM)": "host", "guest disk (9p VM)": "host"}.get(label)
        for k, xs in results[label].items():
            throughput = k in ("write", "read")
            figs.add(names.volume(label, k), [args.mib / x if x > 0 else float("nan") for x in xs] if throughput else xs,
                     "MiB/s" if throughput else "s", peer=names.volume(peer, k) if peer else None,
                     lower_is_better=not throughput)
    for transport in ("virtiofs", "9p"):
        disk = med[f"guest disk ({transport} VM)"]
        vol = med[transport]
        print(f"{transport}: large write {disk['write'] / vol['write']:.0%} / read {disk['read'] / vol['read']:.0%} "
              f"of the guest disk's throughput; small files {vol['small'] / disk['small']:.1f}x its time")
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    main()
