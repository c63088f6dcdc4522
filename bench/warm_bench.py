"""Warm starts: `vmctl run` of a checkpoint image against a boot, libvirt's plain restore and plain
QEMU, the checkpoint's size, and idle density of warm clones (hosted mode, TCG, tiny, 256 MiB).

Per run, whole CLI processes, each VM removed after its run:

- **warm**: ``vmctl run --image tiny-warm`` until SSH lets vmctl in (restore, new identity, SSH);
- **cold**: the same image with ``--cold`` (a boot of the checkpoint's disk);
- peers, same host and guest: libvirt's own restore of a save of the same VM (``virsh restore``,
  no new identity) until the SSH banner on its forwarded port, and plain QEMU booting the tiny
  image's kernel, initrd and disk until its SSH banner (instances_bench's peer);
- once: ``vmctl commit --checkpoint`` of a booted VM; the checkpoint's memory on disk (the store's
  chunks) and in a registry (zstd, after ``vmctl push`` to Debian's docker-registry on 127.0.0.1);
- density: QEMU's PSS per idle warm clone at `--counts` clones (the ``dense`` profile, as
  density_bench; KSM as the host has it).

Medians of `--runs`. No assertions.

    python bench/warm_bench.py [--runs 5] [--counts 1,10,50] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import figure_names as names  # noqa: E402
from benchhost import describe  # noqa: E402
from density_bench import qemu_pss_mib  # noqa: E402
from figures import Figures, median  # noqa: E402

TAG = os.urandom(2).hex()


def wait_banner(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"no SSH banner on 127.0.0.1:{port}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--counts", default="1,10,50", help="warm clones at once for the density phase")
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    figs = Figures("warm", describe("warm bench"), params=vars(args))
    print(figs.machine)
    root = Path(tempfile.mkdtemp(prefix="vmctl-warmbench-", dir="/var/tmp"))
    env = {**os.environ, "VMCTL_ROOT": str(root), "VMCTL_CONFIG": "/dev/null"}
    virsh = ["virsh", "-q", "-c", "qemu:///session"]

    def vmctl(*a: str, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "vmctl", "-q", *a], env=env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise SystemExit(f"vmctl {' '.join(a[:2])}: {proc.stderr.strip()[-400:]}")
        return time.perf_counter() - t0, proc

    times: dict[str, list[float]] = {}

    def add(label: str, x: float) -> None:
        times.setdefault(label, []).append(x)

    made: list[str] = []
    src, plain = f"wsrc-{TAG}", f"wplain-{TAG}"
    save_file = root / "plain.save"
    try:
        vmctl("image", "build", "tiny")
        for name, image in ((src, "tiny"), (plain, "tiny")):
            vmctl("run", name, "--image", image, "--memory", "256M", "--restrict-network")
            made.append(name)
        took, _ = vmctl("commit", "--checkpoint", src, "tiny-warm")
        figs.add(names.WARM_CHECKPOINT, [took])
        info = json.loads(vmctl("image", "inspect", "tiny-warm")[1].stdout)[0]
        on_disk = sum(m["size"] for m in info["memory"])
        figs.value(names.WARM_SIZE_DISK, on_disk / 2**20, "MiB")
        # libvirt's own restore of the same machine (the floor vmctl builds on)
        port = json.loads(vmctl("inspect", plain)[1].stdout)[0]["ssh"]["port"]
        subprocess.run([*virsh, "save", plain, str(save_file)], check=True, capture_output=True)
        for i in range(args.runs):
            name = f"warm-{TAG}-{i}"
            took, _ = vmctl("run", name, "--image", "tiny-warm", "--restrict-network")
            add(names.WARM_RUN, took)
            vmctl("rm", "-f", name)
            took, _ = vmctl("run", name, "--image", "tiny-warm", "--cold", "--restrict-network")
            add(names.WARM_COLD_RUN, took)
            vmctl("rm", "-f", name)
            t0 = time.perf_counter()
            subprocess.run([*virsh, "restore", str(save_file)], check=True, capture_output=True)
            wait_banner(port)
            add(names.WARM_LIBVIRT_RESTORE, time.perf_counter() - t0)
            subprocess.run([*virsh, "destroy", plain], check=True, capture_output=True)
        plain_banner(figs, root, args.runs)
        registry_size(figs, root, vmctl)
        density(figs, vmctl, args.counts, made)
    finally:
        for name in made:
            vmctl("rm", "-f", name, check=False)
        shutil.rmtree(root, ignore_errors=True)

    print(f"tiny guest, 256 MiB, {args.runs} runs; medians")
    for label, xs in times.items():
        print(f"  {label:<60} {median(xs):7.2f} s  ({', '.join(f'{x:.2f}' for x in xs)})")
        figs.add(label, xs, peer=names.WARM_PLAIN_BANNER if label == names.WARM_RUN else None)
    if args.json_out:
        figs.save(args.json_out)


def plain_banner(figs: Figures, root: Path, runs: int) -> None:
    """Plain QEMU booting the tiny image to its SSH banner (the instances bench's peer)."""
    from vmctl.build.builder import build
    from vmctl.build.recipe import load_recipe
    from vmctl.build.testing import DirectBoot
    from vmctl.config import build_cache_dir
    from vmctl.guest.keys import new_ed25519_keypair
    from vmctl.seed import generate_host_key, write_seed

    cache = build_cache_dir()
    with tempfile.TemporaryDirectory(prefix="vmctl-build-", dir=cache) as tmp:
        result = build(load_recipe("tiny").path, cache, Path(tmp))
    out = []
    for i in range(runs):
        seed = root / f"seed-{i}.iso"
        write_seed(seed, instance_id=f"iid-warm-{i}", hostname=f"plain{i}", authorized_keys=[new_ed25519_keypair()[1]],
                   host_keys=[generate_host_key()])
        with DirectBoot(result, seed, root) as boot:
            out.append(boot.wait_for_banner(300))
        seed.unlink()
    print(f"  plain QEMU boot to SSH banner: {median(out):.2f} s")
    figs.add(names.WARM_PLAIN_BANNER, out)


def registry_size(figs: Figures, root: Path, vmctl) -> None:
    """The checkpoint's memory in a registry: zstd blobs after a push (and the push's time)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "registry"))
    import regserver

    server = regserver.start_registry(root / "registry", auth=False)
    try:
        ref = f"{server.host}/bench/tiny-warm:1"
        took, _ = vmctl("push", "tiny-warm", ref, "--insecure")
        manifest = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                                  capture_output=True, text=True, check=True).stdout
        memory = [d for d in json.loads(manifest)["layers"] if d["mediaType"].startswith("application/vnd.vmctl.memory")]
        figs.value(names.WARM_SIZE_REGISTRY, sum(d["size"] for d in memory) / 2**20, "MiB")
        figs.add("vmctl push of the checkpoint image (first push)", [took])
        print(f"  checkpoint memory in the registry: {sum(d['size'] for d in memory) / 2**20:.1f} MiB "
              f"in {len(memory)} chunks; push {took:.2f} s")
    finally:
        server.stop()


def density(figs: Figures, vmctl, counts: str, made: list[str]) -> None:
    """Idle warm clones of a checkpoint made with the dense profile: QEMU PSS per clone."""
    src = f"wdsrc-{TAG}"
    vmctl("run", src, "--image", "tiny", "--memory", "256M", "--profile", "dense", "--restrict-network")
    made.append(src)
    vmctl("commit", "--checkpoint", src, "tiny-warm-dense")
    vmctl("rm", "-f", src)
    made.remove(src)
    clones: list[str] = []
    for count in sorted({int(x) for x in counts.split(",") if x.strip()}):
        while len(clones) < count:
            name = f"wd-{TAG}-{len(clones)}"
            vmctl("run", name, "--image", "tiny-warm-dense", "--profile", "dense", "--restrict-network")
            clones.append(name)
            made.append(name)
        time.sleep(20)
        pss = qemu_pss_mib(f"wd-{TAG}-")
        per = sum(pss.values()) / max(len(pss), 1)
        figs.value(names.warm_density(count), per, "MiB")
        print(f"  {count} warm clones: QEMU PSS {per:.1f} MiB per clone")


if __name__ == "__main__":
    main()
