"""Hosts: a VM created on another libvirt host, a live migration between two, and ``ls --all-hosts``
(tiny guest, TCG, 256 MiB, on a bridge).

The hosts are the tests' lab (tests/e2e/fleet_lab.py): two libvirtds, each in its own network and
mount namespace, over ``qemu+tcp://`` from a client namespace on one segment. Per run, whole CLI
processes:

- **run, layers sent**: ``vmctl --host h1 run`` of an image h1 has never seen (the layers, kernel
  and initrd go over libvirt's storage streams), until SSH lets vmctl in; **run, layers there**: the
  next VM of the same image on the same host;
- **migrate --live**: ``vmctl --host hA migrate VM --to hB --live`` of a running VM, back and forth;
  its peer, on the same VM and hosts in the same run: what a user does by hand with libvirt's own
  client for the same move -- ``virsh vol-create-as`` of the overlay on its layer, ``virsh
  vol-upload`` of the seed, then ``virsh migrate --live --copy-storage-inc --persistent
  --undefinesource`` (both hosts use the same data root, so no XML needs changing);
- ``vmctl ls --all-hosts`` with the VMs of both hosts;
- **exec**: ``vmctl --host h1 exec VM -- true`` on the guest's own address, and through h1's own
  sshd (``host add --jump``; a real OpenSSH server in h1's namespace) -- its peer is OpenSSH's
  ``ssh -J`` through the same server, the command line ``vmctl ssh --print-command`` prints;
- **snapshot**: ``vmctl --host h1 snapshot create`` of the running VM (memory and disk, internal,
  its table read back from h1) and ``snapshot rm``; its peer ``virsh snapshot-create-as`` +
  ``snapshot-delete`` on the same VM.

Medians of `--runs`. No assertions.

    python bench/fleet_bench.py [--runs 3] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import figure_names as names  # noqa: E402
from benchhost import describe  # noqa: E402
from figures import Figures, median  # noqa: E402
from tests.e2e.fleet_lab import FleetLab  # noqa: E402

DATA_ROOT = "/mnt/vmctl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json-out", help="also write the figures as JSON here (for python -m bench)")
    args = ap.parse_args()
    figs = Figures("fleet", describe("fleet bench"), params=vars(args))
    print(figs.machine)
    base = Path(tempfile.mkdtemp(prefix="vmctl-fleetbench-", dir="/var/tmp"))
    env = {**os.environ, "VMCTL_CONFIG": "/dev/null", "VMCTL_HOSTS": str(base / "hosts.json"),
           "XDG_CONFIG_HOME": str(base / "config"), "HOME": str(base / "home"),   # ~/.ssh for the jump
           "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")}
    for var in ("VMCTL_ROOT", "VMCTL_HOST", "VMCTL_CONNECT", "VMCTL_MODE"):
        env.pop(var, None)
    times: dict[str, list[float]] = {}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)   # after the lab stopped
        lab = cleanup.enter_context(FleetLab(2, roots=[DATA_ROOT, DATA_ROOT]))

        def in_client(*argv: str, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
            t0 = time.perf_counter()
            proc = subprocess.run(lab.client_cmd(*argv), env=env, capture_output=True, text=True)
            if check and proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv[:6])}: {proc.stderr.strip()[-600:]}")
            return time.perf_counter() - t0, proc

        def vmctl(*a: str, check: bool = True):
            return in_client(sys.executable, "-m", "vmctl", "-q", "--root", str(base / "client"), *a, check=check)

        def add(label: str, x: float) -> None:
            times.setdefault(label, []).append(x)

        try:
            vmctl("image", "build", "tiny")
            for h in lab.hosts:
                vmctl("host", "add", h.name, h.uri, "--root", h.root, "--accelerator", "tcg")
            image = json.loads(vmctl("image", "inspect", "tiny")[1].stdout)[0]
            figs.value(names.FLEET_IMAGE_BYTES, image["size"] / 2**20, "MiB")
            ip = iter(range(110, 200))

            def run(host: str, name: str) -> float:
                took, _ = vmctl("--host", host, "run", name, "--image", "tiny", "--bridge", "br0",
                                "--ip", f"10.77.0.{next(ip)}/24", "--timeout", "300")
                return took

            for i in range(args.runs):   # a host that has never seen the image, each run
                add(names.FLEET_RUN_SENT, run("h1", f"first{i}"))
                vmctl("--host", "h1", "rm", "-f", f"first{i}")
                vmctl("host", "prune", "h1")
            run("h1", "keep")
            for i in range(args.runs):
                add(names.FLEET_RUN_THERE, run("h1", f"next{i}"))
            for _ in range(args.runs):
                add(names.FLEET_LS_ALL, vmctl("ls", "--all-hosts", "-a")[0])
            jump_host(lab, base, vmctl)
            by_hand = hand_jump(shlex.split(vmctl("--host", "h1j", "ssh", "--print-command", "keep")[1].stdout), base)
            for _ in range(args.runs):
                add(names.FLEET_EXEC_DIRECT, vmctl("--host", "h1", "exec", "keep", "--", "true")[0])
                add(names.FLEET_EXEC_JUMP, vmctl("--host", "h1j", "exec", "keep", "--", "true")[0])
                add(names.FLEET_SSH_JUMP, in_client(*by_hand)[0])
            for i in range(args.runs):
                t0 = time.perf_counter()
                vmctl("--host", "h1", "snapshot", "create", "keep", f"s{i}")
                vmctl("--host", "h1", "snapshot", "rm", "keep", f"s{i}")
                add(names.FLEET_SNAPSHOT, time.perf_counter() - t0)
                t0 = time.perf_counter()
                in_client("virsh", "-c", lab.hosts[0].uri, "snapshot-create-as", "keep", f"v{i}")
                in_client("virsh", "-c", lab.hosts[0].uri, "snapshot-delete", "keep", f"v{i}")
                add(names.FLEET_VIRSH_SNAPSHOT, time.perf_counter() - t0)
            vmctl("--host", "h1", "migrate", "keep", "--to", "h2", "--live")   # h2 gets the layers once
            where = "h2"
            for i in range(args.runs):
                other = "h1" if where == "h2" else "h2"
                add(names.FLEET_MIGRATE, vmctl("--host", where, "migrate", "keep", "--to", other, "--live")[0])
                where = other
                add(names.FLEET_VIRSH_MIGRATE, virsh_migrate(lab, in_client, where, "keep"))
                where = "h1" if where == "h2" else "h2"
        finally:
            for h in lab.hosts:
                h.destroy_domains()

    print(f"tiny guest, 256 MiB, {args.runs} runs; medians")
    for label, xs in times.items():
        print(f"  {label:<78} {median(xs):7.2f} s  ({', '.join(f'{x:.2f}' for x in xs)})")
        figs.add(label, xs, peer=PEERS.get(label))
    if args.json_out:
        figs.save(args.json_out)


PEERS = {names.FLEET_MIGRATE: names.FLEET_VIRSH_MIGRATE, names.FLEET_EXEC_JUMP: names.FLEET_SSH_JUMP,
         names.FLEET_SNAPSHOT: names.FLEET_VIRSH_SNAPSHOT}


def jump_host(lab: FleetLab, base: Path, vmctl) -> None:
    """h1's own sshd (the client's key authorized, its key in the client's known_hosts) and host
    h1j: h1 reached through it."""
    ssh = base / "home" / ".ssh"
    ssh.mkdir(mode=0o700, parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id_ed25519")], check=True)
    h1 = lab.hosts[0]
    key = h1.start_sshd((ssh / "id_ed25519.pub").read_text())
    (ssh / "known_hosts").write_text(f"{h1.address} {key}\n")
    vmctl("host", "add", "h1j", h1.uri, "--root", h1.root, "--accelerator", "tcg", "--jump", f"root@{h1.address}")


def hand_jump(argv: list[str], base: Path) -> list[str]:
    """vmctl's printed ``ssh ... -J root@h1 ... -- GUEST`` with the jump spelled as the ProxyCommand
    ``-J`` stands for, the hop given this bench's known_hosts and key: OpenSSH reads ~/.ssh from
    the passwd entry, not $HOME, so the bench's own files must be named. Runs ``true``."""
    i = argv.index("-J")
    ssh = base / "home" / ".ssh"
    user, host = argv[i + 1].split("@")
    hop = (f"ssh -F /dev/null -o UserKnownHostsFile={ssh / 'known_hosts'} -o StrictHostKeyChecking=yes "
           f"-i {ssh / 'id_ed25519'} -o IdentitiesOnly=yes -l {user} -W %h:%p {host}")
    return [*argv[:i], "-o", f"ProxyCommand={hop}", *argv[i + 2:], "true"]


def virsh_migrate(lab: FleetLab, in_client, src_name: str, vm: str) -> float:
    """The same live move by hand with virsh (peer): overlay made on the target on the same
    layer, the seed uploaded, then libvirt's migration with the top layer copied. Returns seconds."""
    src, dst = lab.host(src_name), lab.host("h1" if src_name == "h2" else "h2")
    pool = next(p for p in lab.remote_virsh(dst, "pool-list", "--name").stdout.split() if p.startswith("vmctl-instances"))
    disk = f"{DATA_ROOT}/instances/{vm}.qcow2"
    vol = etree.fromstring(in_client("virsh", "-c", src.uri, "vol-dumpxml", disk)[1].stdout.encode())
    # vmctl's overlays name their layer relatively; virsh wants the layer volume's own path
    top = f"{DATA_ROOT}/images/layers/{Path(vol.findtext('backingStore/path')).name}"
    capacity = vol.findtext("capacity")
    seed = Path(tempfile.mkdtemp(prefix="vmctl-fleetbench-seed-", dir="/var/tmp")) / "seed.iso"
    try:
        return _by_hand(in_client, src, dst, pool, vm, top, capacity, seed)
    finally:
        shutil.rmtree(seed.parent, ignore_errors=True)


def _by_hand(in_client, src, dst, pool: str, vm: str, top: str, capacity: str, seed: Path) -> float:
    t0 = time.perf_counter()
    in_client("virsh", "-c", src.uri, "vol-download", f"{DATA_ROOT}/instances/{vm}.seed.iso", str(seed))
    # the volumes as vmctl makes them: QEMU's user owns them (its domains are not relabelled)
    uid, gid = os.stat(f"/proc/{os.getpid()}").st_uid, 0
    qemu = subprocess.run(["id", "-u", "libvirt-qemu"], capture_output=True, text=True)
    if qemu.returncode == 0:
        uid = gid = int(qemu.stdout)
    for name, size, fmt, backing in ((f"{vm}.seed.iso", seed.stat().st_size, "raw", None),
                                     (f"{vm}.qcow2", int(capacity), "qcow2", top)):
        xml = seed.parent / f"{name}.xml"
        xml.write_text(volume_xml(name, size, fmt, uid, gid, backing))
        in_client("virsh", "-c", dst.uri, "vol-create", pool, str(xml))
    in_client("virsh", "-c", dst.uri, "vol-upload", f"{DATA_ROOT}/instances/{vm}.seed.iso", str(seed))
    in_client("virsh", "-c", src.uri, "migrate", "--live", "--copy-storage-inc", "--persistent",
              "--undefinesource", vm, dst.uri, f"tcp://{dst.address}")
    took = time.perf_counter() - t0
    for name in (f"{vm}.qcow2", f"{vm}.seed.iso", f"{vm}.serial.log"):
        in_client("virsh", "-c", src.uri, "vol-delete", f"{DATA_ROOT}/instances/{name}", check=False)
    # (the record in the domain still names the source host; vmctl's next migrate rewrites it)
    return took


def volume_xml(name: str, size: int, fmt: str, uid: int, gid: int, backing: str | None) -> str:
    vol = etree.Element("volume")
    etree.SubElement(vol, "name").text = name
    etree.SubElement(vol, "capacity", unit="bytes").text = str(size)
    target = etree.SubElement(vol, "target")
    etree.SubElement(target, "format", type=fmt)
    perms = etree.SubElement(target, "permissions")
    for tag, value in (("mode", "0600"), ("owner", str(uid)), ("group", str(gid))):
        etree.SubElement(perms, tag).text = value
    if backing:
        bs = etree.SubElement(vol, "backingStore")
        etree.SubElement(bs, "path").text = backing
        etree.SubElement(bs, "format", type="qcow2")
    return etree.tostring(vol, encoding="unicode")


if __name__ == "__main__":
    main()
