#!/usr/bin/env python3
"""What do vmctl's instances cost next to the tools people would otherwise use? Prints, asserts nothing.

    python bench/instances_bench.py [--runs 3] [--domains 1000] [--data-mib 256] [--skip create,boot,ls] [--json-out FILE]

1. Create latency (define, no start) for an image of 1 GiB and of 20 GiB (sparse raw with
   ``--data-mib`` of random data in 8 chunks, imported into the store as qcow2):
   - ``vmctl create`` (CLI process: plan, overlay on the store's layer, NoCloud seed, ACLs, two
     validated defines);
   - ``virt-install --import --noreboot`` (CLI process; defines and does not start) on a disk the user
     made first: a qcow2 overlay of the same layer (``qemu-img create -b``), timed with and without
     that step;
   - a full ``qemu-img convert`` copy of the image, what Multipass and Lima do per instance (the copy
     alone, before any define).
   Both defines go to a private libvirtd (``tests/e2e/netns.py``: its own namespace and state), so
   the machine's daemon and its users see none of these domains.
2. Run-to-ready of the ``tiny`` image under TCG: ``vmctl run --restrict-network`` (hosted mode on the
   machine's libvirtd, until SSH accepts vmctl's key with the pinned host key) against a plain
   ``qemu-system-x86_64`` of the same kernel, initrd, disk and seed (``vmctl.build.testing.DirectBoot``):
   seconds to the guest's ``vmctl-guest: ready`` serial line and to an SSH banner on its hostfwd port.
3. ``vmctl ls -a`` with ``--domains`` VMs defined (vmctl's own create path, in-process, never
   started) on the private libvirtd, against ``virsh list --all`` on the same daemon; the VMs are
   undefined at the end, and the private daemon's whole state is deleted with it in any case.

Medians of ``--runs`` (create, boot) or 5 (ls) runs, measured in one run, with the machine noted.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import figure_names as names  # noqa: E402
from benchhost import make_disk  # noqa: E402
from figures import Figures  # noqa: E402
from tests.e2e.netns import PrivateLibvirt  # noqa: E402

GIB = 1 << 30
BASE = Path("/var/tmp")  # QEMU (libvirt-qemu) must traverse to the files; pytest-style /tmp dirs are 0700


def machine() -> str:
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    return f"{platform.node()}: {os.cpu_count()} cpus (nproc), {cpu}; load average {load:.2f} at start"


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt(xs: list[float]) -> str:
    return f"{med(xs):8.3f} s  (runs: {', '.join(f'{x:.3f}' for x in xs)})"


def ratio(a: list[float], b: list[float]) -> str:
    return f"{med(a) / med(b):.2f}x" if xs_ok(a, b) else "n/a"


def xs_ok(*lists: list[float]) -> bool:
    return all(lists) and all(med(x) > 0 for x in lists)


def run(argv: list[str], *, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def timed(argv: list[str], **kw) -> float:
    t = time.perf_counter()
    run(argv, **kw)
    return time.perf_counter() - t


PYCACHE: Path | None = None


def vmctl_env() -> dict:
    """vmctl's environment: no machine config, and a bytecode cache of its own.

    virt-install runs from Debian's byte-compiled modules; vmctl from a source checkout would
    recompile every module at each start where PYTHONDONTWRITEBYTECODE is set (as in some CI
    shells), so its bytecode goes to a private PYTHONPYCACHEPREFIX, warmed by the first call.
    """
    env = dict(os.environ, VMCTL_CONFIG="/dev/null", PYTHONUNBUFFERED="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if PYCACHE is not None:
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    for var in ("VMCTL_ROOT", "VMCTL_MODE", "VMCTL_CONNECT"):
        env.pop(var, None)
    return env


def vmctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "vmctl", *args]


def image_layer(root: Path, uri: str, image_id: str) -> Path:
    """The qcow2 layer file of an image in the store under `root` (opened as vmctl opens it)."""
    from vmctl.config import load_settings
    from vmctl.storage.store import ImageStore

    os.environ["VMCTL_CONFIG"] = "/dev/null"
    return Path(ImageStore.from_settings(load_settings(mode="system", uri=uri, root=root)).resolve(image_id).top_layer)


# --- 1. create latency ----------------------------------------------------------------------------

def bench_create(lv: PrivateLibvirt, work: Path, runs: int, data_mib: int, figs: Figures) -> None:
    root = work / "create-root"
    sysargs = ["--mode", "system", "--connect", lv.uri, "--root", str(root)]
    env = vmctl_env()
    print("\n1. create latency (define only, no start)")
    for size in (1 * GIB, 20 * GIB):
        label = f"{size // GIB}g"
        raw = work / f"disk-{label}.raw"
        make_disk(raw, size, data_mib)
        image_id = run(vmctl(*sysargs, "image", "import", str(raw), f"bench{label}:1"), env=env).stdout.split()[-1]
        raw.unlink()
        layer = image_layer(root, lv.uri, image_id)
        vm_t, vi_t, vi_only, conv_t = [], [], [], []
        for i in range(runs):
            name = f"bench-c{label}-{i}"
            os.sync()
            vm_t.append(timed(vmctl(*sysargs, "create", name, "--image", image_id), env=env))
            run(vmctl(*sysargs, "rm", name), env=env)

            vi_dir = work / f"vi-{label}-{i}"
            vi_dir.mkdir()
            os.chmod(vi_dir, 0o755)
            overlay = vi_dir / "disk.qcow2"
            os.sync()
            t = time.perf_counter()
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(layer), str(overlay)])
            t_def = time.perf_counter()
            run(["virt-install", "--connect", lv.uri, "--name", f"vi-{label}-{i}", "--memory", "256",
                 "--vcpus", "1", "--import", "--disk", f"path={overlay},format=qcow2,bus=virtio",
                 "--network", "none", "--graphics", "none", "--osinfo", "detect=on,require=off",
                 "--noautoconsole", "--noreboot"])
            end = time.perf_counter()
            vi_t.append(end - t)
            vi_only.append(end - t_def)
            lv.virsh("undefine", f"vi-{label}-{i}", check=False)
            shutil.rmtree(vi_dir)

            copy = work / f"copy-{label}-{i}.qcow2"
            os.sync()
            conv_t.append(timed(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(layer), str(copy)]))
            copy.unlink()
        print(f"  image {label} ({data_mib} MiB of data, layer {layer.stat().st_blocks * 512 >> 20} MiB on disk)")
        print(f"    vmctl create                    {fmt(vm_t)}")
        print(f"    overlay + virt-install --import {fmt(vi_t)}   vmctl/this = {ratio(vm_t, vi_t)}")
        print(f"      virt-install alone            {fmt(vi_only)}")
        print(f"    qemu-img convert (full copy)    {fmt(conv_t)}   vmctl/this = {ratio(vm_t, conv_t)}")
        gib = size // GIB
        figs.value(f"layer on disk, {gib} GiB image", layer.stat().st_blocks * 512 / 2**20, "MiB")
        figs.add(names.vmctl_create(gib), vm_t, peer=names.virt_install_create(gib))
        figs.add(names.virt_install_create(gib), vi_t)
        figs.add(f"virt-install --import alone, {gib} GiB image", vi_only)
        # the copy is the figure here, vmctl create its peer: the ratio says how many creates one copy costs
        figs.add(f"qemu-img convert (full copy), {gib} GiB image", conv_t, peer=names.vmctl_create(gib))
    floor = [timed(vmctl("--version"), env=env) for _ in range(runs)]
    print(f"  vmctl --version (Python start-up and imports, the CLI floor)  {fmt(floor)}")
    figs.add("vmctl --version (the CLI floor)", floor)
    run(vmctl(*sysargs, "image", "prune"), env=env)
    shutil.rmtree(root, ignore_errors=True)


# --- 2. run to ready ------------------------------------------------------------------------------

def bench_boot(work: Path, runs: int, figs: Figures) -> None:
    from vmctl.build.builder import build
    from vmctl.build.recipe import load_recipe
    from vmctl.build.testing import DirectBoot
    from vmctl.config import build_cache_dir
    from vmctl.guest.keys import new_ed25519_keypair
    from vmctl.guest.contract import READY_LINE
    from vmctl.seed import generate_host_key, write_seed

    print("\n2. run to ready (tiny image, TCG, 1 vCPU, 256 MiB)")
    root = work / "boot-root"
    env = vmctl_env()
    hosted = ["--root", str(root)]
    run(vmctl(*hosted, "image", "build", "tiny"), env=env, timeout=1800)
    cache = build_cache_dir()
    with tempfile.TemporaryDirectory(prefix="vmctl-build-", dir=cache) as tmp:
        result = build(load_recipe("tiny").path, cache, Path(tmp))  # the cached build vmctl imported
    vm_t, ready_t, banner_t = [], [], []
    for i in range(runs):
        name = f"bench-r{i}-{os.getpid()}"
        try:
            vm_t.append(timed(vmctl(*hosted, "run", name, "--image", "tiny", "--restrict-network",
                                    "--timeout", "300"), env=env, timeout=400))
        finally:
            subprocess.run(vmctl(*hosted, "rm", "-f", name), env=env, capture_output=True)
        seed = work / f"seed-{i}.iso"
        write_seed(seed, instance_id=f"iid-bench-{i}", hostname=f"plain{i}", authorized_keys=[new_ed25519_keypair()[1]],
                   host_keys=[generate_host_key()])
        with DirectBoot(result, seed, work) as boot:
            ready_t.append(boot.wait_for(re.escape(READY_LINE), 300))
            banner_t.append(boot.wait_for_banner(60))
        seed.unlink()
    print(f"  vmctl run (until SSH accepts the key)      {fmt(vm_t)}")
    print(f"  plain qemu: '{READY_LINE}' on serial  {fmt(ready_t)}   vmctl/this = {ratio(vm_t, ready_t)}")
    print(f"  plain qemu: SSH banner on hostfwd port     {fmt(banner_t)}   vmctl/this = {ratio(vm_t, banner_t)}")
    figs.add(names.INSTANCES_RUN, vm_t, peer=names.INSTANCES_PLAIN_BANNER)
    figs.add(f"plain qemu, tiny: '{READY_LINE}' on serial", ready_t)
    figs.add(names.INSTANCES_PLAIN_BANNER, banner_t)
    shutil.rmtree(root, ignore_errors=True)


# --- 3. ls with many domains ----------------------------------------------------------------------

def bench_ls(lv: PrivateLibvirt, work: Path, count: int, figs: Figures) -> None:
    from vmctl.config import load_settings
    from vmctl.core.session import Session
    from vmctl.core.create import CreateRequest, create

    print(f"\n3. vmctl ls -a with {count} defined (never started) VMs on one libvirtd")
    root = work / "ls-root"
    sysargs = ["--mode", "system", "--connect", lv.uri, "--root", str(root)]
    env = vmctl_env()
    raw = work / "small.raw"
    make_disk(raw, 64 << 20, 1)
    image_id = run(vmctl(*sysargs, "image", "import", str(raw), "small:1"), env=env).stdout.split()[-1]

    def ls_times(n: int = 5) -> tuple[list[float], list[float]]:
        ours = [timed(vmctl(*sysargs, "ls", "-a"), env=env) for _ in range(n)]
        virsh = [timed(["virsh", "-c", lv.uri, "list", "--all"]) for _ in range(n)]
        return ours, virsh

    empty_ours, empty_virsh = ls_times()
    os.environ["VMCTL_CONFIG"] = "/dev/null"
    app = Session(load_settings(mode="system", uri=lv.uri, root=root))
    t = time.perf_counter()
    try:
        for i in range(count):
            create(app, CreateRequest(name=f"many-{i:04d}", image=image_id))
        create_s = time.perf_counter() - t
        rows = run(vmctl(*sysargs, "ls", "-a", "-q"), env=env).stdout.split()
        ours, virsh = ls_times()
        print(f"  created {count} VMs through vmctl's create path in {create_s:.1f} s "
              f"({create_s / count * 1000:.0f} ms each, in-process); ls lists {len(rows)}")
        print(f"  vmctl ls -a, 0 VMs          {fmt(empty_ours)}")
        print(f"  virsh list --all, 0 VMs     {fmt(empty_virsh)}")
        print(f"  vmctl ls -a, {count} VMs       {fmt(ours)}   vmctl/virsh = {ratio(ours, virsh)}")
        print(f"  virsh list --all, {count} VMs  {fmt(virsh)}")
        figs.value(f"create through vmctl's create path, per VM (in-process, {count} VMs)", create_s / count, "s")
        figs.value(f"VMs listed by vmctl ls -a -q, of {count}", len(rows), "VMs", lower_is_better=False)
        figs.add(names.vmctl_ls(0), empty_ours, peer=names.virsh_list(0))
        figs.add(names.virsh_list(0), empty_virsh)
        figs.add(names.vmctl_ls(count), ours, peer=names.virsh_list(count))
        figs.add(names.virsh_list(count), virsh)
    finally:
        undefine_all(lv)
        app.close()
        shutil.rmtree(root, ignore_errors=True)


def undefine_all(lv: PrivateLibvirt) -> None:
    """Undefine every domain of the private daemon with one connection (fast for thousands)."""
    import libvirt

    conn = libvirt.open(lv.uri)
    try:
        for dom in conn.listAllDomains():
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--domains", type=int, default=1000)
    ap.add_argument("--data-mib", type=int, default=256)
    ap.add_argument("--skip", default="", help="comma-separated: create, boot, ls")
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if os.geteuid() != 0:
        sys.exit("instances_bench needs root (it starts a private libvirtd in its own namespaces)")
    figs = Figures("instances", machine(), params=vars(args))
    print(f"instances_bench on {figs.machine}")
    print(f"libvirt {run(['virsh', '--version']).stdout.strip()}, "
          f"{run(['qemu-system-x86_64', '--version']).stdout.splitlines()[0]}, "
          f"virt-install {run(['virt-install', '--version']).stdout.strip()}; "
          "the CLI figures include Python start-up for vmctl and virt-install alike")
    global PYCACHE
    work = Path(tempfile.mkdtemp(prefix="vmctl-instances-bench-", dir=BASE))
    os.chmod(work, 0o755)
    PYCACHE = work / "pycache"
    run(vmctl("--version"), env=vmctl_env())  # warm the bytecode cache
    try:
        if "boot" not in skip:
            bench_boot(work, args.runs, figs)
        if not {"create", "ls"} <= skip:
            with PrivateLibvirt(BASE) as lv:
                if "create" not in skip:
                    bench_create(lv, work, args.runs, args.data_mib, figs)
                if "ls" not in skip:
                    bench_ls(lv, work, args.domains, figs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json_out:
        figs.save(args.json_out)


if __name__ == "__main__":
    main()
