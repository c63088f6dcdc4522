"""vmctl push/pull against skopeo on the same local registry: what do compression and checks cost?

One image with `--data-mib` MiB of incompressible data (plus sparse space) is imported into a store.
Each run starts a fresh Debian ``docker-registry`` on 127.0.0.1 (plain HTTP, htpasswd auth, storage
in a temp dir) so nothing is deduplicated across runs, then times:

- push:   ``vmctl push`` (zstd compress + upload + manifest)       vs ``skopeo copy oci:DIR docker://``
          of the same image's blobs (upload only, nothing to compress);
- upload: vmctl's client uploading the already compressed layer  (the network part of push alone);
- pull:   ``vmctl pull`` into a fresh store (download, verify, decompress, verify, qemu-img check,
          publish)                                                  vs ``skopeo copy docker:// oci:DIR``
          (download and verify);
- re-push of the same image to the same registry (both find every blob and send none);
- derived image: a child (``--child-mib`` MiB written on top of the image, as ``vmctl commit``
  makes it) pushed after its parent: bytes sent for the parent, for the child, and downloaded when
  pulling the child where the parent is;
- save/load: ``vmctl save`` and ``vmctl load`` of an image with ``--archive-gib`` GiB of data, each
  in its own process, with their peak RSS (``ru_maxrss``) next to a process that only imports them.

Prints medians, throughput and ratios with the machine noted. No assertions.

    python bench/registry_bench.py [--runs 3] [--data-mib 256] [--archive-gib 2] [--dir /var/tmp] [--json-out FILE]
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "registry"))

import figure_names as names  # noqa: E402
import regserver  # noqa: E402
from benchhost import describe  # noqa: E402
from figures import Figures  # noqa: E402

from vmctl.registry import compress, transfer  # noqa: E402
from vmctl.registry.auth import Credentials  # noqa: E402
from vmctl.registry.client import RegistryClient  # noqa: E402
from vmctl.registry.refs import parse_registry_ref  # noqa: E402
from vmctl.storage import ImageStore  # noqa: E402


def machine() -> str:
    skopeo = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    reg = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True).stdout.strip()
    import zstandard

    return describe(skopeo, reg, f"python-zstandard {zstandard.__version__} (libzstd {zstandard.ZSTD_VERSION})")


def client_for(server) -> RegistryClient:
    return RegistryClient(server.host, insecure=True, credentials=Credentials(server.user, server.password))


def timed(fn) -> float:
    os.sync()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", *args], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data-mib", type=int, default=256)
    ap.add_argument("--disk-gib", type=int, default=2)
    ap.add_argument("--child-mib", type=int, default=16)
    ap.add_argument("--archive-gib", type=float, default=2.0, help="0 skips the save/load measurement")
    ap.add_argument("--archive-only", action="store_true", help="only the save/load measurement")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    missing = regserver.missing_tools(("skopeo", "qemu-img"))
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)}")

    work = Path(tempfile.mkdtemp(prefix="registry-bench-", dir=args.dir))
    figs = Figures("registry", params=vars(args))
    if args.archive_only:
        try:
            figs.machine = machine()
            print(f"machine: {figs.machine}")
            archive_memory(work, args.archive_gib, figs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.json_out:
            figs.save(args.json_out)
        return
    results: dict[str, list[float]] = {k: [] for k in (
        names.REGISTRY_PUSH, names.REGISTRY_SKOPEO_PUSH, "vmctl upload", names.REGISTRY_PULL,
        names.REGISTRY_SKOPEO_PULL, "vmctl re-push", "skopeo re-push")}
    servers = []
    try:
        disk = work / "disk.raw"
        with open(disk, "wb") as fh:
            fh.truncate(args.disk_gib << 30)
            chunk = (args.data_mib << 20) // 8
            for i in range(8):
                fh.seek(i * ((args.disk_gib << 30) // 8))
                fh.write(os.urandom(chunk))
        store = ImageStore(work / "root", None)
        image = store.import_image(disk, "bench:1")
        layer = store.blob_path(image.layer_digests[0], "application/vnd.vmctl.disk.layer.v1.qcow2")
        zst = work / "layer.zst"
        c = compress.compress_file(layer, zst)
        layout = None

        for i in range(args.runs):
            server = regserver.start_registry(work / f"reg-{i}", tls=False)
            servers.append(server)
            client = client_for(server)
            vm_ref = parse_registry_ref(f"{server.host}/bench/vm:1")
            results[names.REGISTRY_PUSH].append(timed(lambda: transfer.push(store, "bench:1", vm_ref, client)))
            if layout is None:
                layout = work / "oci"
                skopeo("copy", *server.skopeo_args("src"), f"docker://{server.host}/bench/vm:1", f"oci:{layout}:1")
            sk_dst = f"docker://{server.host}/bench/sk:1"
            results[names.REGISTRY_SKOPEO_PUSH].append(timed(lambda: skopeo(
                "copy", "--preserve-digests", *server.skopeo_args("dest"), f"oci:{layout}:1", sk_dst)))
            up = client_for(server)
            results["vmctl upload"].append(timed(lambda: up.upload_blob("bench/up", c.digest, zst, c.size)))
            fresh = ImageStore(work / f"pull-{i}", None)
            results[names.REGISTRY_PULL].append(timed(lambda: transfer.pull(fresh, vm_ref, client)))
            out = work / f"sk-pull-{i}"
            results[names.REGISTRY_SKOPEO_PULL].append(timed(lambda: skopeo(
                "copy", *server.skopeo_args("src"), f"docker://{server.host}/bench/vm:1", f"oci:{out}:1")))
            results["vmctl re-push"].append(timed(lambda: transfer.push(store, "bench:1", vm_ref, client)))
            results["skopeo re-push"].append(timed(lambda: skopeo(
                "copy", "--preserve-digests", *server.skopeo_args("dest"), f"oci:{layout}:1", sk_dst)))
            client.close()
            up.close()
            server.stop()
            shutil.rmtree(work / f"pull-{i}", ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work / f"reg-{i}", ignore_errors=True)

        med = {k: statistics.median(v) for k, v in results.items()}
        figs.machine = machine()
        print(f"machine: {figs.machine}")
        print(f"runs: {args.runs}; image: {args.disk_gib} GiB virtual, {args.data_mib} MiB random data; "
              f"layer {layer.stat().st_size >> 20} MiB qcow2 -> {c.size >> 20} MiB zstd")
        print(f"{'operation':<16} {'median':>9}  {'vs skopeo':>9}")
        for k, v in med.items():
            peer = {names.REGISTRY_PUSH: names.REGISTRY_SKOPEO_PUSH, "vmctl upload": names.REGISTRY_SKOPEO_PUSH,
                    names.REGISTRY_PULL: names.REGISTRY_SKOPEO_PULL, "vmctl re-push": "skopeo re-push"}.get(k)
            ratio = f"{v / med[peer]:>8.2f}x" if peer else ""
            # throughput over the bytes that travel (the compressed layer), the same for both tools
            mibs = f"{c.size / v / (1 << 20):>8.1f} MiB/s" if "re-push" not in k else ""
            print(f"{k:<16} {v:>7.3f} s  {ratio:>9}  {mibs}")
            figs.add(k, results[k], peer=peer)
            if mibs:
                figs.value(f"{k} throughput", c.size / v / (1 << 20), "MiB/s", lower_is_better=False)
        figs.value("layer, qcow2", layer.stat().st_size / 2**20, "MiB")
        figs.value("layer, zstd", c.size / 2**20, "MiB", peer="layer, qcow2")
        print()
        derived(work, store, image, args.child_mib, figs)
        if args.archive_gib > 0:
            print()
            archive_memory(work, args.archive_gib, figs)
        if args.json_out:
            figs.save(args.json_out)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


def derived(work: Path, store: ImageStore, parent, child_mib: int, figs: Figures) -> None:
    """Bytes sent for a derived image pushed after its parent, and fetched pulling it next to it."""
    overlay = work / "child-overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(parent.top_layer),
                    str(overlay)], check=True)
    data = work / "child.bin"
    with open(data, "wb") as fh:
        for _ in range(child_mib):
            fh.write(os.urandom(1 << 20))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {data} 64M {child_mib}M", str(overlay)],
                   check=True, capture_output=True)
    store.add_layer("bench:1", overlay, "bench-child:1")
    server = regserver.start_registry(work / "reg-derived", tls=False)
    try:
        client = client_for(server)
        base_ref = parse_registry_ref(f"{server.host}/bench/vm:base")
        child_ref = parse_registry_ref(f"{server.host}/bench/vm:child")
        p = transfer.push(store, "bench:1", base_ref, client)
        ch = transfer.push(store, "bench-child:1", child_ref, client)
        other = ImageStore(work / "pull-derived", None)
        transfer.pull(other, base_ref, client)
        pulled = transfer.pull(other, child_ref, client)
        client.close()
    finally:
        server.stop()
    print(f"derived image ({child_mib} MiB written on the parent; sizes as sent, zstd):")
    print(f"  push parent          {p.bytes_uploaded:>12,} bytes")
    print(f"  push child after it  {ch.bytes_uploaded:>12,} bytes  ({ch.bytes_uploaded / p.bytes_uploaded:.3f} of the parent's)")
    print(f"  pull child next to the parent: {pulled.bytes_downloaded:,} bytes downloaded "
          f"({len(pulled.downloaded)} layer(s) fetched, {len(pulled.present)} present)")
    figs.value("derived: push parent", p.bytes_uploaded, "bytes")
    figs.value("derived: push child after it", ch.bytes_uploaded, "bytes", peer="derived: push parent")
    figs.value("derived: pull child next to the parent", pulled.bytes_downloaded, "bytes")


MEASURE = """
import sys, time
from vmctl.storage import ImageStore
from vmctl.archive import save, load
op = sys.argv[1]
t = time.perf_counter()
if op == "save":
    save(ImageStore(sys.argv[2], None), ["big:1"], sys.argv[3])
elif op == "load":
    load(ImageStore(sys.argv[2], None), sys.argv[3])
# VmHWM: this process's own peak (ru_maxrss would include the parent's, kept across exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(time.perf_counter() - t, hwm)
"""


def archive_memory(work: Path, gib: float, figs: Figures) -> None:
    """Peak RSS of save and load of an image holding `gib` GiB of random data."""
    size = int(gib * (1 << 30))
    disk = work / "archive.raw"
    with open(disk, "wb") as fh:
        for _ in range(size >> 20):
            fh.write(os.urandom(1 << 20))
    src = ImageStore(work / "archive-src", None)
    src.import_image(disk, "big:1", created=1)
    disk.unlink()
    out = work / "big.tar"

    def run(*argv: str) -> tuple[float, int]:
        proc = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, check=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
        secs, kib = proc.stdout.split()
        return float(secs), int(kib)

    _, base_kib = run("none")
    save_s, save_kib = run("save", str(work / "archive-src"), str(out))
    tar_size = out.stat().st_size
    load_s, load_kib = run("load", str(work / "archive-dst"), str(out))
    print(f"save/load of a {gib:g} GiB image (archive {tar_size / (1 << 30):.2f} GiB):")
    print(f"  baseline process (imports only)  peak RSS {base_kib / 1024:7.1f} MiB")
    print(f"  vmctl save  {save_s:7.2f} s  {tar_size / save_s / (1 << 20):7.1f} MiB/s  peak RSS {save_kib / 1024:7.1f} MiB")
    print(f"  vmctl load  {load_s:7.2f} s  {tar_size / load_s / (1 << 20):7.1f} MiB/s  peak RSS {load_kib / 1024:7.1f} MiB")
    figs.value("archive size", tar_size / (1 << 30), "GiB")
    figs.value("baseline process (imports only), peak RSS", base_kib / 1024, "MiB")
    for op, secs, kib in (("save", save_s, save_kib), ("load", load_s, load_kib)):
        figs.value(f"vmctl {op}", secs, "s")
        figs.value(f"vmctl {op} throughput", tar_size / secs / (1 << 20), "MiB/s", lower_is_better=False)
        figs.value(f"vmctl {op}, peak RSS", kib / 1024, "MiB", peer="baseline process (imports only), peak RSS")
    out.unlink()


if __name__ == "__main__":
    main()
