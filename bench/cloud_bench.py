#!/usr/bin/env python3
"""Run-to-ready of a real cloud guest: ``vmctl run`` against plain QEMU with a ``cloud-localds`` seed.

    python bench/cloud_bench.py [--runs 3] [--firmware bios|uefi] [--json-out FILE]

The guest is the Debian 12 cloud-style disk of ``tests/cloudguest`` (systemd, cloud-init 22.4,
OpenSSH, GRUB; built once and cached), booted by its firmware under TCG with 1 vCPU and 1 GiB:

- ``vmctl run NAME --image IMG`` (hosted mode, user-mode networking ``restrict=on``): create, start
  and wait until SSH accepts vmctl's key with the pinned host key, as a user runs it;
- ``vmctl run`` of a checkpoint of that guest (``commit --checkpoint``; a warm start, the clone's
  identity given through its qemu-guest-agent);
- ``qemu-system-x86_64`` of the same disk (a qcow2 overlay of the same file), SeaBIOS or OVMF, a
  seed made by Debian's ``cloud-localds`` with the same kind of user-data (an authorized key for
  the image's default user and a host key, so both sides are judged by the same test: vmctl's
  ``wait_ready`` with the pinned key), the seed on a read-only virtio disk, hostfwd on 127.0.0.1.

Medians of ``--runs``, in one run, with the machine noted. Prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import figure_names as names  # noqa: E402
from figures import Figures  # noqa: E402
from instances_bench import fmt, machine, ratio, run, vmctl, vmctl_env  # noqa: E402
from tests.cloudguest.build import DEFAULT_USER, build_cloud_guest  # noqa: E402

BASE = Path("/var/tmp")
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


def plain_qemu(disk: Path, work: Path, firmware: str, i: int) -> float:
    """Seconds from starting QEMU until SSH lets the default user in (pinned host key)."""
    from vmctl.core.hostports import pick_free_port
    from vmctl.guest.keys import ensure_client_key
    from vmctl.guest.ready import wait_ready
    from vmctl.seed.cloudconfig import cloud_config
    from vmctl.seed.hostkeys import generate_host_key

    key = ensure_client_key(work / "keys")
    host_key = generate_host_key()
    overlay = work / f"plain-{i}.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk), str(overlay)])
    user_data = work / f"user-data-{i}"
    user_data.write_text(cloud_config({
        "hostname": f"plain{i}", "ssh_authorized_keys": [key.public_line],
        "ssh_keys": {f"{host_key.cloud_init_name}_private": host_key.private_openssh,
                     f"{host_key.cloud_init_name}_public": " ".join(host_key.public.split()[:2])}}))
    meta = work / f"meta-data-{i}"
    meta.write_text(json.dumps({"instance-id": f"iid-plain-{i}", "local-hostname": f"plain{i}"}))
    seed = work / f"seed-{i}.iso"
    run(["cloud-localds", str(seed), str(user_data), str(meta)])
    port = pick_free_port(set())
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "1024", "-smp", "1",
            "-nodefaults", "-display", "none", "-serial", f"file:{work / f'plain-{i}.log'}",
            "-drive", f"file={overlay},format=qcow2,if=virtio",
            "-drive", f"file={seed},format=raw,if=virtio,readonly=on",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci"]
    if firmware == "uefi":
        vars_copy = work / f"vars-{i}.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(lambda: ("127.0.0.1", port), user=DEFAULT_USER, client_key=key,
                   host_key_line=host_key.public, timeout=900)
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()
        overlay.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--firmware", choices=("bios", "uefi"), default="bios")
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    from vmctl.build.testing import test_cache_dir

    guest = build_cloud_guest(test_cache_dir() / "cloudguest")
    disk = guest.bios if args.firmware == "bios" else guest.uefi
    figs = Figures("cloud", machine(), params=vars(args))
    print(f"cloud_bench on {figs.machine}")
    print(f"{run(['qemu-system-x86_64', '--version']).stdout.splitlines()[0]}; guest: Debian 12 cloud-style "
          f"({args.firmware}, recipe {guest.recipe_hash}), TCG, 1 vCPU, 1 GiB")
    work = Path(tempfile.mkdtemp(prefix="vmctl-cloud-bench-", dir=BASE))
    os.chmod(work, 0o755)
    env = vmctl_env()
    root = ["--root", str(work / "root")]
    try:
        run(vmctl(*root, "image", "import", str(disk), "cloud:bench"), env=env, timeout=900)
        vm_t, plain_t = [], []
        for i in range(args.runs):
            name = f"cloud-bench-{i}"
            t0 = time.perf_counter()
            try:
                run(vmctl(*root, "run", name, "--image", "cloud:bench", "--memory", "1G", "--cpus", "1",
                          "--restrict-network", "--timeout", "900"), env=env, timeout=1000)
                vm_t.append(time.perf_counter() - t0)
            finally:
                subprocess.run(vmctl(*root, "rm", "-f", name), env=env, capture_output=True)
            plain_t.append(plain_qemu(disk, work, args.firmware, i))
        print(f"  vmctl run (until SSH accepts the key)           {fmt(vm_t)}")
        print(f"  plain qemu + cloud-localds (same test of SSH)   {fmt(plain_t)}   vmctl/plain = {ratio(vm_t, plain_t)}")
        figs.add(names.CLOUD_RUN, vm_t, peer=names.CLOUD_PLAIN)
        figs.add(names.CLOUD_PLAIN, plain_t)
        warm_t = warm_starts(root, env, args.runs)
        print(f"  vmctl run of a checkpoint of it (warm start)   {fmt(warm_t)}   warm/plain = {ratio(warm_t, plain_t)}")
        figs.add(names.CLOUD_WARM_RUN, warm_t, peer=names.CLOUD_PLAIN)
        if args.json_out:
            figs.save(args.json_out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def warm_starts(root: list[str], env: dict, runs: int) -> list[float]:
    """Clones of a checkpoint of the booted guest (its qemu-guest-agent gives each its identity):
    ``vmctl run`` until SSH accepts the key, each clone removed after its run."""
    src = "cloud-bench-src"
    try:
        run(vmctl(*root, "run", src, "--image", "cloud:bench", "--memory", "1G", "--cpus", "1",
                  "--restrict-network", "--timeout", "900"), env=env, timeout=1000)
        run(vmctl(*root, "commit", "--checkpoint", src, "cloud-warm:bench"), env=env, timeout=900)
    finally:
        subprocess.run(vmctl(*root, "rm", "-f", src), env=env, capture_output=True)
    out = []
    for i in range(runs):
        name = f"cloud-warm-{i}"
        t0 = time.perf_counter()
        try:
            run(vmctl(*root, "run", name, "--image", "cloud-warm:bench", "--restrict-network", "--timeout", "300"),
                env=env, timeout=400)
            out.append(time.perf_counter() - t0)
        finally:
            subprocess.run(vmctl(*root, "rm", "-f", name), env=env, capture_output=True)
    return out


if __name__ == "__main__":
    main()
