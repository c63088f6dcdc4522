"""End to end, several hosts: vmctl against two real libvirt daemons over ``qemu+tcp://``.

The lab (tests/e2e/fleet_lab.py): hosts h1 and h2, each a libvirtd with its own state in its own
network and mount namespace, on one segment 10.77.0.0/24 with a client namespace where vmctl runs;
each host's data root (/mnt/vmctl on h1, /mnt/vmctl2 on h2) exists only in its own mount
namespace, so whatever vmctl makes there it made through libvirt. Guests sit on each host's bridge
``br0`` with a static address on the segment (no user-mode networking, nothing routed anywhere
else), so they keep their address when they move.

What only real daemons and guests can show: a VM created on a host from an image only the client
had (layers sent once, skipped the second time), exec/cp/logs/ls/inspect on it, nothing of it on
the client; a live migration of a running guest whose process keeps counting and whose disk,
record and pinned key go along; refusals that leave it running where it was (too little memory
on the target; libvirt refusing the move); an offline migration; a drain; placement; a commit of a
running VM on a host, booted on the other; rm and prune leaving nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from .fleet_lab import FleetLab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network and mount namespaces)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "virsh", "ip", "nsenter", "unshare")),
                       reason="needs libvirt-daemon-system, libvirt-clients and util-linux/iproute2"),
]

COUNTER = ("setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i >/tmp/counter; sleep 0.2; done' "
           "</dev/null >/dev/null 2>&1 & echo $! >/tmp/counter.pid")


class LabVmctl:
    """`vmctl` run in the lab's client namespace, with its own data root and host table."""

    def __init__(self, lab: FleetLab, base: Path):
        self.lab, self.root = lab, base / "client"
        self.env = dict(os.environ)
        self.env.update({"VMCTL_CONFIG": "/dev/null", "VMCTL_HOSTS": str(base / "hosts.json"),
                         "XDG_CONFIG_HOME": str(base / "config"), "PYTHONUNBUFFERED": "1",
                         # ~/.ssh: the user's keys and known_hosts for a jump; the build cache stays
                         # the machine's (the tiny image is built once per run)
                         "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"),
                         "HOME": str(base / "home")})
        for var in ("VMCTL_ROOT", "VMCTL_MODE", "VMCTL_CONNECT", "VMCTL_HOST"):
            self.env.pop(var, None)

    def __call__(self, *args: str, check: bool = True, timeout: float = 300,
                 fault: str | None = None) -> subprocess.CompletedProcess:
        """vmctl ARGS; with `fault`, killed by SIGKILL at that fault point (vmctl.faults)."""
        argv = self.lab.client_cmd(sys.executable, "-m", "vmctl", "--root", str(self.root), *args)
        env = self.env if fault is None else {**self.env, "VMCTL_TEST_FAULT": fault}
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            tails = "\n".join(h.log_tail(10) for h in self.lab.hosts)
            raise AssertionError(f"vmctl {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\n"
                                 f"stderr: {proc.stderr}\n{self.lab.network_report()}\n{tails}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen:
        argv = self.lab.client_cmd(sys.executable, "-m", "vmctl", "--root", str(self.root), *args)
        return subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sh(self, host: str, name: str, script: str) -> str:
        return self("--host", host, "exec", name, "--", "sh", "-c", script).stdout.strip()

    def run(self, host: str, name: str, address: str, *extra: str) -> None:
        self("--host", host, "run", name, "--image", "tiny", "--bridge", "br0", "--ip", f"{address}/24",
             "--timeout", "240", *extra)


@pytest.fixture(scope="module")
def lab():
    # h3 shares h1's storage (its /mnt is h1's): the last test's
    with FleetLab(3, roots=["/mnt/vmctl", "/mnt/vmctl2", "/mnt/vmctl"], shares={3: 1}) as lab:
        yield lab


@pytest.fixture(scope="module")
def vm(lab):
    base = Path(tempfile.mkdtemp(prefix="vmctl-e2e-fleet-", dir="/var/tmp"))
    v = LabVmctl(lab, base)
    try:
        v("image", "build", "tiny", timeout=1800)
        h1, h2 = lab.hosts[:2]
        v("host", "add", "h1", h1.uri, "--root", h1.root, "--accelerator", "tcg")
        v("host", "add", "h2", h2.uri, "--root", h2.root, "--accelerator", "tcg")
        # the same daemon as h2, with room for 128 MiB of VMs: a target that lacks memory
        v("host", "add", "h2-small", h2.uri, "--root", h2.root, "--accelerator", "tcg", "--memory", "128M")
        yield v
    finally:
        for host in lab.hosts:
            host.destroy_domains()
        shutil.rmtree(base, ignore_errors=True)


def _files(host, sub: str) -> list[str]:
    d = host.outside(f"{host.root}/{sub}")
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _seen(lines: list[dict], name: str, event: str, detail: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any((e["vm"], e["event"], e["detail"]) == (name, event, detail) for e in list(lines)):
            return True
        time.sleep(0.1)
    return False


def _cp_both_ways(vm, host: str, name: str, file: str, text: str) -> None:
    """`vmctl --host HOST cp` of a file into VM `name` and back: the bytes come back the same."""
    src, back = vm.root.parent / file, vm.root.parent / f"back-{file}"
    src.write_text(text)
    vm("--host", host, "cp", str(src), f"{name}:/root/{file}")
    vm("--host", host, "cp", f"{name}:/root/{file}", str(back))
    assert back.read_text() == src.read_text()


def _row(vm, host: str, name: str) -> dict:
    rows = json.loads(vm("--host", host, "ls", "-a", "--json").stdout)
    return next((r for r in rows if r["name"] == name), None)


def test_hosts_listed_with_their_libvirt_facts(vm):
    rows = {r["name"]: r for r in json.loads(vm("host", "ls", "--json").stdout)}
    assert set(rows) == {"h1", "h2", "h2-small"}
    assert all(r["reachable"] for r in rows.values()), rows
    assert rows["h2-small"]["memory_mib"] == 128 and rows["h1"]["memory_mib"] > 1024
    assert rows["h1"]["address"] == "10.77.0.2" and rows["h1"]["root"] == "/mnt/vmctl"
    # a bad host is one line, and nothing is recorded
    bad = vm("host", "add", "h9", "qemu+tcp://10.77.0.9/system", check=False, timeout=120)
    assert bad.returncode == 6 and bad.stderr.startswith("vmctl: error: cannot connect") and bad.stderr.count("\n") == 1
    bad = vm("host", "add", "x", "http://h/system", check=False)
    assert bad.returncode == 2 and "invalid libvirt URI" in bad.stderr
    assert "h9" not in vm("host", "ls", "-q").stdout.split()


def test_remote_create_reach_and_remove(vm, lab):
    h1, h2 = lab.hosts[:2]
    vm.run("h1", "r1", "10.77.0.101")
    layers = {p.name: p.stat().st_ino for p in h1.outside(f"{h1.root}/images/layers").iterdir()}
    assert sum(n.endswith(".qcow2") for n in layers) >= 1 and sum(n.endswith(".blob") for n in layers) == 2
    assert _files(h1, "instances") == ["r1.qcow2", "r1.seed.iso", "r1.serial.log"]
    assert _files(h2, "instances") == []
    # the client keeps nothing of the VM: no instance directory, no local domain
    assert not (vm.root / "instances").exists() or list((vm.root / "instances").iterdir()) == []

    assert vm.sh("h1", "r1", "hostname; ip -4 -o addr show eth0 | grep -o '10.77.0.101'") == "r1\n10.77.0.101"
    _cp_both_ways(vm, "h1", "r1", "payload.txt", "sent to a VM on another host\n")

    info = json.loads(vm("--host", "h1", "inspect", "r1").stdout)[0]
    assert (info["host"], info["state"], info["ssh"]["address"]) == ("h1", "running", "10.77.0.101")
    assert info["disk"]["path"] == "/mnt/vmctl/instances/r1.qcow2" and info["disk"]["allocated_bytes"] > 0
    # the serial log, read back from h1 (vmctl's guest writes its last boot lines there once its
    # DHCP wait ends: no DHCP server on the segment, so up to ~30 s under TCG)
    deadline = time.monotonic() + 120
    while "vmctl-guest: ready" not in (log := vm("--host", "h1", "logs", "r1").stdout):
        assert time.monotonic() < deadline, f"no 'ready' in the serial log read from h1: {log!r}"
        time.sleep(2)
    assert vm("--host", "h1", "logs", "-n", "1", "r1").stdout == "vmctl-guest: ready\n"
    assert vm("ls", "--all-hosts", "-q").stdout.split() == ["r1"]

    # a second VM of the image: the layers are on h1 already and are not sent again
    vm.run("h1", "r2", "10.77.0.102")
    assert {p.name: p.stat().st_ino for p in h1.outside(f"{h1.root}/images/layers").iterdir()} == layers
    assert vm("--host", "h1", "ls", "-q").stdout.split() == ["r1", "r2"]
    taken = vm("--host", "h1", "run", "r2", "--image", "tiny", "--bridge", "br0", check=False)
    assert taken.returncode == 4 and "already exists on h1" in taken.stderr
    vm("--host", "h1", "rm", "-f", "r2")
    assert _files(h1, "instances") == ["r1.qcow2", "r1.seed.iso", "r1.serial.log"]
    assert "r2" not in h1.virsh("list", "--all", "--name").stdout.split()


def _snaps(vm, host: str, name: str) -> dict:
    return {r["name"]: r for r in json.loads(vm("--host", host, "snapshot", "ls", name, "--json").stdout)}


def test_snapshots_and_commit_of_a_snapshot_on_a_host(vm, lab):
    h1 = lab.hosts[0]
    if _row(vm, "h1", "r1") is None:
        vm.run("h1", "r1", "10.77.0.101")
    vm.sh("h1", "r1", "echo one >/root/state; echo snapshot-marker-5c1e >/root/kept; sync")
    # running: memory and disks, the saved state's size read from the disk's table on h1
    made = json.loads(vm("--host", "h1", "snapshot", "create", "r1", "s-mem", "--json").stdout)
    assert (made["kind"], made["vm_state"]) == ("memory", "running") and made["size"] > 0
    vm.sh("h1", "r1", "echo two >/root/state; sync")
    vm("--host", "h1", "snapshot", "create", "r1", "s-disk", "--disk-only")
    vm.sh("h1", "r1", "echo after-snapshot-9d2f >/root/later; sync")
    snaps = _snaps(vm, "h1", "r1")
    assert set(snaps) == {"s-mem", "s-disk"} and snaps["s-disk"]["kind"] == "disk-only"
    assert snaps["s-disk"]["parent"] == "s-mem" and snaps["s-disk"]["current"]
    assert "r1.snapshots.json" in _files(h1, "instances")        # vmctl's record of them: on h1

    # a snapshot becomes an image here: the overlay comes over whole, the snapshot read from it
    vm("--host", "h1", "commit", "r1", "snapped:1", "--snapshot", "s-disk")
    img = json.loads(vm("image", "inspect", "snapped:1").stdout)[0]
    assert img["labels"]["vmctl.commit.snapshot"] == "s-disk"
    assert len(img["layers"]) == len(json.loads(vm("image", "inspect", "tiny").stdout)[0]["layers"]) + 1
    raw = vm.root.parent / "snapped.raw"    # the new layer alone (no backing), as a sparse raw file
    spec = {"driver": "qcow2", "backing": None, "file": {"driver": "file", "filename": img["layers"][-1]["path"]}}
    subprocess.run(["qemu-img", "convert", "-O", "raw", "json:" + json.dumps(spec), str(raw)], check=True)
    try:
        def holds(text: str) -> bool:
            return subprocess.run(["grep", "-a", "-q", text, str(raw)]).returncode == 0
        assert holds("snapshot-marker-5c1e") and not holds("after-snapshot-9d2f")
    finally:
        raw.unlink()

    # revert: memory and disk as they were, running
    vm("--host", "h1", "snapshot", "revert", "r1", "s-mem")
    assert vm.sh("h1", "r1", "cat /root/state; test -e /root/later && echo later || echo no-later") == "one\nno-later"
    # a VM with snapshots does not migrate (libvirt moves none): said first, in one line
    refused = vm("--host", "h1", "migrate", "r1", "--to", "h2", "--live", check=False)
    assert refused.returncode == 4 and refused.stderr.count("\n") == 1 and "2 snapshot(s)" in refused.stderr
    # vmctl's record of them damaged on the host: one line, nothing else touched
    side = h1.outside(f"{h1.root}/instances/r1.snapshots.json")
    kept = side.read_bytes()
    side.write_bytes(b"{not json" + b" " * 100)
    bad = vm("--host", "h1", "snapshot", "ls", "r1", check=False)
    assert bad.returncode == 11 and bad.stderr.count("\n") == 1 and "r1.snapshots.json is damaged" in bad.stderr
    side.write_bytes(kept)
    vm("--host", "h1", "snapshot", "rm", "r1", "s-disk")
    vm("--host", "h1", "snapshot", "rm", "r1", "s-mem")
    assert _snaps(vm, "h1", "r1") == {}
    assert h1.virsh("snapshot-list", "r1", "--name").stdout.split() == []


def test_live_migration_keeps_the_guest_running(vm, lab):
    h1, h2 = lab.hosts[:2]
    if _row(vm, "h1", "r1") is None:
        vm.run("h1", "r1", "10.77.0.101")
    before = json.loads(vm("--host", "h1", "inspect", "r1").stdout)[0]
    vm.sh("h1", "r1", "echo on-disk >/root/marker; sync; " + COUNTER)
    pid = vm.sh("h1", "r1", "sleep 1; cat /tmp/counter.pid")
    first = int(vm.sh("h1", "r1", "cat /tmp/counter"))

    # too little memory on the target: refused before anything moves
    small = vm("--host", "h1", "migrate", "r1", "--to", "h2-small", "--live", check=False)
    assert small.returncode == 14 and small.stderr.count("\n") == 1, small.stderr
    assert "needs 256 MiB" in small.stderr and "h2-small has" in small.stderr
    # libvirt refuses the move (the target holds another domain with this VM's UUID): it stays
    stale = h2.tmp / "stale.xml"
    stale.write_text(f"<domain type='qemu'><name>stale</name><uuid>{before['uuid']}</uuid><memory>65536</memory>"
                     "<os><type arch='x86_64'>hvm</type></os></domain>")
    h2.virsh("define", str(stale))
    try:
        refused = vm("--host", "h1", "migrate", "r1", "--to", "h2", "--live", check=False)
    finally:
        h2.virsh("undefine", "stale")
    assert refused.returncode == 7 and refused.stderr.count("\n") == 1, refused.stderr
    assert "cannot migrate r1 to h2" in refused.stderr and "it stays on h1" in refused.stderr
    assert _row(vm, "h1", "r1")["state"] == "running" and _row(vm, "h2", "r1") is None
    assert _files(h2, "instances") == []

    # h1's events, as `vmctl --host h1 events` streams them: listening once a pause/resume shows
    events = vm.popen("--host", "h1", "events", "--json", "--timeout", "300")
    lines: list[dict] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(x) for x in events.stdout), daemon=True)
    reader.start()
    try:
        for _ in range(30):
            vm("--host", "h1", "pause", "r1")
            vm("--host", "h1", "resume", "r1")
            if _seen(lines, "r1", "resumed", "unpaused", 3):
                break
        else:
            raise AssertionError(f"vmctl --host h1 events showed nothing: {lines}")
        moved = json.loads(vm("--host", "h1", "migrate", "r1", "--to", "h2", "--live", "--json").stdout)
        assert _seen(lines, "r1", "stopped", "migrated", 60), lines
    finally:
        events.terminate()
        events.wait(timeout=30)
    assert (moved["source"], moved["destination"], moved["live"], moved["shared_storage"]) == ("h1", "h2", True, False)
    # the same process, still counting; the disk came along (its top layer over NBD)
    out = vm.sh("h2", "r1", "cat /tmp/counter.pid /root/marker /root/payload.txt; cat /tmp/counter").split("\n")
    assert out[:2] == [pid, "on-disk"] and int(out[-1]) > first
    after = json.loads(vm("--host", "h2", "inspect", "r1").stdout)[0]
    assert (after["host"], after["uuid"], after["ssh"]["host_key"]) == ("h2", before["uuid"], before["ssh"]["host_key"])
    assert after["disk"]["path"] == "/mnt/vmctl2/instances/r1.qcow2"
    assert _row(vm, "h1", "r1") is None and _files(h1, "instances") == []
    assert _files(h2, "instances") == ["r1.qcow2", "r1.seed.iso", "r1.serial.log"]
    # the layers only h1 had are on h2 now
    assert {n for n in _files(h1, "images/layers")} <= set(_files(h2, "images/layers"))
    rows = {r["name"]: r["host"] for r in json.loads(vm("ls", "--all-hosts", "--json").stdout)}
    assert rows == {"r1": "h2"}


def test_offline_migration_drain_placement_and_cleanup(vm, lab):
    h1, h2 = lab.hosts[:2]
    if _row(vm, "h2", "r1") is None:
        pytest.fail("needs r1 on h2 from the live-migration test")
    vm.run("h1", "r3", "10.77.0.103")
    vm.sh("h1", "r3", "echo stopped-move >/root/marker; sync")
    vm("--host", "h1", "stop", "r3")
    moved = json.loads(vm("--host", "h1", "migrate", "r3", "--to", "h2", "--json").stdout)
    assert (moved["state"], moved["live"]) == ("stopped", False)
    assert _row(vm, "h2", "r3")["state"] == "stopped" and _files(h1, "instances") == []

    # drain h2: the running r1 (live) and the stopped r3 go where there is room: h1 (not h2-small)
    counted = int(vm.sh("h2", "r1", "cat /tmp/counter"))
    drained = json.loads(vm("host", "drain", "h2", "--json").stdout)
    assert {(m["name"], m["destination"]) for m in drained} == {("r1", "h1"), ("r3", "h1")}
    assert vm("--host", "h2", "ls", "-a", "-q").stdout.split() == [] and _files(h2, "instances") == []
    assert int(vm.sh("h1", "r1", "cat /tmp/counter")) > counted
    vm("--host", "h1", "start", "r3")
    vm("--host", "h1", "wait", "r3", "--timeout", "240")
    assert vm.sh("h1", "r3", "cat /root/marker") == "stopped-move"

    # placement: h2 now has nothing running, h1 two VMs; both hold the layers
    placed = vm("--host", "auto", "run", "r4", "--image", "tiny", "--bridge", "br0", "--ip", "10.77.0.104/24",
                "--timeout", "240")
    assert "r4: placed on h2" in placed.stderr, placed.stderr
    assert _row(vm, "h2", "r4")["state"] == "running"

    # commit of a running VM on h2: its disk comes to the client as one new layer on the image;
    # a VM of the new image on h1 has what was written (the layer is sent there first)
    vm.sh("h2", "r4", "echo committed-on-h2 >/root/made-here")   # no sync: commit flushes the guest
    image_id = vm("--host", "h2", "commit", "r4", "fleet:1", "-m", "on a host").stdout.strip().splitlines()[-1]
    history = json.loads(vm("image", "history", "fleet:1", "--json").stdout)
    assert history[0]["comment"] == "on a host" and len(history) == 2 and image_id.startswith("sha256:")
    assert _row(vm, "h2", "r4")["state"] == "running"   # paused while read, running again
    vm("--host", "h1", "run", "r5", "--image", "fleet:1", "--bridge", "br0", "--ip", "10.77.0.105/24",
       "--timeout", "240")
    assert vm.sh("h1", "r5", "cat /root/made-here") == "committed-on-h2"
    refused = vm("--host", "h2", "commit", "--checkpoint", "r4", "fleet:2", check=False)
    assert refused.returncode == 2 and "not on host h2" in refused.stderr

    busy = vm("host", "rm", "h1", check=False)
    assert busy.returncode == 5 and "r1, r3, r5" in busy.stderr
    for host, name in (("h1", "r1"), ("h1", "r3"), ("h1", "r5"), ("h2", "r4")):
        vm("--host", host, "rm", "-f", name)
    assert _files(h1, "instances") == [] and _files(h2, "instances") == []
    pruned = vm("host", "prune", "h1").stdout.split()
    assert pruned and [n for n in _files(h1, "images/layers")] == []
    vm("host", "rm", "h1")
    assert "h1" not in vm("host", "ls", "-q").stdout.split()


def _doctor(vm, host: str, *fix: str) -> dict:
    return {(f["kind"], f["subject"]): f for f in json.loads(vm("--host", host, "doctor", *fix, "--json").stdout)}


def _age(host, name: str, seconds: float) -> None:
    """Make a file of the host's instances directory look `seconds` old."""
    path = host.outside(f"{host.root}/instances/{name}")
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_doctor_on_a_host_mends_what_killed_creates_snapshots_and_migrations_left(vm, lab):
    from vmctl import faults

    h1, h2 = lab.hosts[:2]
    assert set(faults.HOST_POINTS) == {"host.create.after-overlay", "host.create.after-define",
                                       "migrate.after-stage"}   # each killed below
    if "h1" not in vm("host", "ls", "-q").stdout.split():
        vm("host", "add", "h1", h1.uri, "--root", h1.root, "--accelerator", "tcg")
    create = ("create", "--image", "tiny", "--bridge", "br0")
    killed = vm("--host", "h2", create[0], "g1", *create[1:], check=False, fault="host.create.after-overlay")
    assert killed.returncode == -9
    assert vm("--host", "h2", create[0], "g2", *create[1:], check=False, fault="host.create.after-define").returncode == -9
    vm("--host", "h2", create[0], "g3", *create[1:])
    snap = vm("--host", "h2", "snapshot", "create", "g3", "s1", check=False, fault="snapshot.create.after-data")
    assert snap.returncode == -9
    assert _files(h2, "instances") == ["g1.qcow2", "g2.qcow2", "g2.seed.iso", "g3.qcow2", "g3.seed.iso",
                                       "g3.snapshots.json"]

    found = _doctor(vm, "h2")
    assert found[("creating-domain", "h2:g2")]["fixable"]
    assert found[("half-made-snapshot", "g3/s1")]["fixable"]
    young = found[("orphan-host-file", "h2:/mnt/vmctl2/instances/g1.qcow2")]
    assert not young["fixable"] and "left alone" in young["detail"]    # may be another client's create
    # and the killed processes' name locks (on this machine, per host)
    locks = {("stale-lock", str(vm.root / "locks" / "hosts" / "h2" / f"vm-{n}.lock")) for n in ("g1", "g2", "g3")}
    assert set(found) == locks | {("creating-domain", "h2:g2"), ("half-made-snapshot", "g3/s1"),
                                  ("orphan-host-file", "h2:/mnt/vmctl2/instances/g1.qcow2")}, found
    _age(h2, "g1.qcow2", 20 * 60)
    fixed = _doctor(vm, "h2", "--fix")
    assert {k for k, f in fixed.items() if f["fixed"]} == locks | {
        ("creating-domain", "h2:g2"), ("half-made-snapshot", "g3/s1"),
        ("orphan-host-file", "h2:/mnt/vmctl2/instances/g1.qcow2")}
    assert _doctor(vm, "h2") == {}
    assert _files(h2, "instances") == ["g3.qcow2", "g3.seed.iso", "g3.snapshots.json"]
    assert h2.virsh("list", "--all", "--name").stdout.split() == ["g3"]
    assert h2.virsh("snapshot-list", "g3", "--name").stdout.split() == []
    table = subprocess.run(["qemu-img", "snapshot", "-l", "-U", str(h2.outside(f"{h2.root}/instances/g3.qcow2"))],
                           capture_output=True, text=True, check=True).stdout
    assert "s1" not in table

    # a migration killed once the target has the VM's files, before libvirt moved it
    moved = vm("--host", "h2", "migrate", "g3", "--to", "h1", check=False, fault="migrate.after-stage")
    assert moved.returncode == -9 and _files(h1, "instances") == ["g3.qcow2", "g3.seed.iso"]
    assert _row(vm, "h2", "g3")["state"] == "stopped"   # still where it was
    for name in ("g3.qcow2", "g3.seed.iso"):
        _age(h1, name, 20 * 60)
    # the killed migration held g3's name on both hosts: a stale lock file for each
    fixed = _doctor(vm, "h1", "--fix")
    assert {k for k, f in fixed.items() if f["fixed"]} == {
        ("orphan-host-file", "h1:/mnt/vmctl/instances/g3.qcow2"),
        ("orphan-host-file", "h1:/mnt/vmctl/instances/g3.seed.iso"),
        ("stale-lock", str(vm.root / "locks" / "hosts" / "h1" / "vm-g3.lock"))}
    assert _doctor(vm, "h2", "--fix").keys() == {
        ("stale-lock", str(vm.root / "locks" / "hosts" / "h2" / "vm-g3.lock"))}
    assert _files(h1, "instances") == []
    vm("--host", "h2", "migrate", "g3", "--to", "h1")    # and the move, done again, goes through
    vm("--host", "h1", "rm", "g3")
    assert _files(h1, "instances") == [] and _files(h2, "instances") == []


def _sshd_on_h1(vm, lab) -> str:
    """h1's own sshd, with the client's key (~/.ssh/id_ed25519 of vmctl's HOME) authorized and
    h1's key in ~/.ssh/known_hosts; h1 in the host table. Returns h1's host key line."""
    h1 = lab.hosts[0]
    if "h1" not in vm("host", "ls", "-q").stdout.split():
        vm("host", "add", "h1", h1.uri, "--root", h1.root, "--accelerator", "tcg")
    ssh = Path(vm.env["HOME"]) / ".ssh"
    if h1.sshd is None:
        ssh.mkdir(mode=0o700, parents=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id_ed25519")], check=True)
        h1.host_key_line = h1.start_sshd((ssh / "id_ed25519.pub").read_text())
    (ssh / "known_hosts").write_text(f"10.77.0.2 {h1.host_key_line}\n")
    return h1.host_key_line


def test_guests_behind_a_host_are_reached_through_its_ssh_server(vm, lab):
    h1 = lab.hosts[0]
    host_key = _sshd_on_h1(vm, lab)
    ssh = Path(vm.env["HOME"]) / ".ssh"
    known = ssh / "known_hosts"
    # a network only h1 reaches (NAT with DHCP, inside h1's namespace): no route to it from here
    h1.add_nat_network("hidden", "virhid0", 151)
    vm("host", "add", "h1j", h1.uri, "--root", h1.root, "--accelerator", "tcg", "--jump", "root@10.77.0.2")
    assert json.loads(vm("host", "ls", "--json").stdout)[0]["jump"] is None     # h1: direct
    vm("--host", "h1j", "run", "j1", "--image", "tiny", "--network", "hidden", "--timeout", "240")
    address = json.loads(vm("--host", "h1j", "inspect", "j1").stdout)[0]["ssh"]["address"]
    assert address.startswith("192.168.151.")
    assert vm.sh("h1j", "j1", "hostname; ip -4 -o addr show eth0 | grep -c 192.168.151.") == "j1\n1"
    _cp_both_ways(vm, "h1j", "j1", "jumped.txt", "through h1's sshd\n")
    line = vm("--host", "h1j", "ssh", "--print-command", "j1").stdout
    assert "-J root@10.77.0.2" in line, line
    # the same VM through the host entry without a jump: its address routes nowhere from here
    direct = vm("--host", "h1", "exec", "j1", "--", "true", check=False)
    assert direct.returncode != 0 and direct.stderr.count("\n") == 1, direct.stderr

    # the host's key is pinned: another key, or none known, and vmctl does not go through it
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "other")], check=True)
    assert other.returncode == 0
    known.write_text(f"10.77.0.2 {(ssh / 'other.pub').read_text().strip()}\n")
    bad = vm("--host", "h1j", "exec", "j1", "--", "true", check=False)
    assert bad.returncode == 9 and bad.stderr.count("\n") == 1 and "is not the one" in bad.stderr, bad.stderr
    known.write_text("")
    bad = vm("--host", "h1j", "exec", "j1", "--", "true", check=False)
    assert bad.returncode == 9 and "is not in" in bad.stderr and "never accepts" in bad.stderr, bad.stderr
    known.write_text(f"10.77.0.2 {host_key}\n")
    vm("--host", "h1j", "rm", "-f", "j1")
    assert _files(h1, "instances") == []


def test_a_stack_on_a_host_on_its_own_libvirt_network_there(vm, lab):
    """``vmctl --host H up``: the stack's network is a libvirt network on the host (made in its
    namespace), its VMs are the host's, reached through the host's sshd; a peer found by name;
    ``ps`` and ``down`` on the host; nothing of it on this machine but the stack's state file."""
    h1 = lab.hosts[0]
    _sshd_on_h1(vm, lab)
    if "h1s" not in vm("host", "ls", "-q").stdout.split():
        vm("host", "add", "h1s", h1.uri, "--root", h1.root, "--accelerator", "tcg", "--mode", "system",
           "--jump", "root@10.77.0.2")
    profile = ""
    if not _has_sys_resource(h1.libvirtd.pid):   # no memlock hard limit the daemon could not set
        profiles = vm.root.parent / "config" / "vmctl" / "profiles"
        profiles.mkdir(parents=True, exist_ok=True)
        (profiles / "kvm-no-hard-limit.toml").write_text(
            'extends = "kvm"\ndescription = "kvm without a memory hard limit"\n\n[tuning]\n'
            'memory_headroom_mib = ""\ntcg_memory_headroom_mib = ""\n')
        profile = "    profile: kvm-no-hard-limit\n"
    stack = vm.root.parent / "stack"
    stack.mkdir(exist_ok=True)
    (stack / "vmctl.yaml").write_text(
        "name: fleetshop\nnetworks:\n  back:\nvms:\n"
        f"  db:\n    image: tiny\n    memory: 192M\n    networks: [back]\n{profile}"
        "    user-data: |\n      #cloud-config\n      runcmd:\n"
        "        - [sh, -c, 'mkdir -p /srv && echo hello-from-h1-db > /srv/index.html && httpd -p 8080 -h /srv']\n"
        "    healthcheck:\n      test: wget -qO- http://127.0.0.1:8080/\n      interval: 1s\n      retries: 120\n"
        f"  web:\n    image: tiny\n    memory: 192M\n    networks: [back]\n{profile}"
        "    depends_on:\n      db: {condition: healthy}\n")
    f = str(stack / "vmctl.yaml")
    # an up killed while creating db on h1, its overlay made and no domain yet: the next up mends it
    killed = vm("--host", "h1s", "up", "-d", "-f", f, check=False, fault="host.create.after-overlay")
    assert killed.returncode == -9 and _files(h1, "instances") == ["fleetshop-db.qcow2"]
    report = json.loads(vm("--host", "h1s", "up", "-f", f, "--json", timeout=900).stdout)
    # (the killed up had made the stack's network on h1 already)
    assert report["vms"] == {"db": "created", "web": "created"} and report["networks_created"] == []
    assert report["health"] == {"db": "healthy"}
    net = h1.virsh("net-dumpxml", "vmctl-fleetshop-back").stdout
    assert "<forward mode='nat'" in net and "name='fleetshop-db'" in net
    assert vm.sh("h1s", "fleetshop-web", "wget -qO- http://db:8080/") == "hello-from-h1-db"
    rows = {r["vm"]: r for r in json.loads(vm("--host", "h1s", "ps", "-f", f, "--json").stdout)}
    assert rows["db"]["state"] == "running" and rows["db"]["health"] == "healthy" and rows["web"]["state"] == "running"
    again = json.loads(vm("--host", "h1s", "up", "-d", "-f", f, "--json").stdout)
    assert again["vms"] == {"db": "unchanged", "web": "unchanged"}
    # in the foreground: the consoles are followed on the host, Ctrl-C stops the stack
    fg = vm.popen("--host", "h1s", "up", "-f", f)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(fg.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("console-marker-7e1" in line for line in out):
            assert time.monotonic() < deadline and fg.poll() is None, (out, fg.poll())
            vm.sh("h1s", "fleetshop-db", "echo console-marker-7e1 >/dev/console")
            time.sleep(2)
        assert any(line.startswith("db  | ") and "console-marker-7e1" in line for line in out), out
    finally:
        fg.send_signal(signal.SIGINT)
        fg.wait(timeout=400)   # two graceful stops of up to 60 s each, then destroy
    rows = {r["vm"]: r["state"] for r in json.loads(vm("--host", "h1s", "ps", "-f", f, "--json").stdout)}
    assert rows == {"db": "stopped", "web": "stopped"}, rows
    assert (vm.root / "stacks" / "hosts" / "h1s" / "fleetshop.json").exists()
    assert not (vm.root / "instances").exists() or list((vm.root / "instances").iterdir()) == []
    down = json.loads(vm("--host", "h1s", "down", "-f", f, "--json", timeout=300).stdout)
    assert sorted(down["vms_removed"]) == ["fleetshop-db", "fleetshop-web"]
    assert down["networks_removed"] == ["vmctl-fleetshop-back"]
    assert "vmctl-fleetshop-back" not in h1.virsh("net-list", "--all", "--name").stdout.split()
    assert _files(h1, "instances") == [] and not (vm.root / "stacks" / "hosts" / "h1s" / "fleetshop.json").exists()


def _has_sys_resource(pid: int) -> bool:
    """Whether process `pid` holds CAP_SYS_RESOURCE (libvirt needs it to raise QEMU's memlock limit
    for a memory hard limit)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


def test_hosts_that_share_storage_copy_nothing_and_prune_nothing_of_each_other(vm, lab):
    h1, _h2, h3 = lab.hosts
    if "h1" not in vm("host", "ls", "-q").stdout.split():
        vm("host", "add", "h1", h1.uri, "--root", h1.root, "--accelerator", "tcg")
    vm("host", "add", "h3", h3.uri, "--root", h3.root, "--accelerator", "tcg")
    vm.run("h1", "s1", "10.77.0.106")
    vm.sh("h1", "s1", "echo on-shared-storage >/root/marker; sync")
    inode = h1.outside(f"{h1.root}/instances/s1.qcow2").stat().st_ino
    # running, on a file system libvirt takes for a local one: it refuses, and the VM stays
    live = vm("--host", "h1", "migrate", "s1", "--to", "h3", "--live", check=False)
    assert live.returncode == 7 and live.stderr.count("\n") == 1 and "it stays on h1" in live.stderr, live.stderr
    assert _row(vm, "h1", "s1")["state"] == "running"
    # stopped: detected as shared, moved without copying a byte; the same file, now h3's VM's
    vm("--host", "h1", "stop", "s1")
    moved = json.loads(vm("--host", "h1", "migrate", "s1", "--to", "h3", "--json").stdout)
    assert moved["shared_storage"] is True and moved["layers_sent"] == 0, moved
    assert h1.outside(f"{h1.root}/instances/s1.qcow2").stat().st_ino == inode
    # h1 has no VM now, h3's stands on the layers they share: h1's prune removes none of them, and
    # h1's doctor takes none of h3's files for orphans
    assert vm("--host", "h1", "ls", "-a", "-q").stdout.split() == []
    layers = _files(h1, "images/layers")
    assert vm("host", "prune", "h1").stdout.split() == [] and _files(h1, "images/layers") == layers
    for name in _files(h1, "instances"):
        _age(h1, name, 20 * 60)
    assert [k for k in _doctor(vm, "h1", "--fix") if k[0] == "orphan-host-file"] == []
    vm("--host", "h3", "start", "s1")
    vm("--host", "h3", "wait", "s1", "--timeout", "240")
    assert vm.sh("h3", "s1", "cat /root/marker") == "on-shared-storage"
    vm("--host", "h3", "rm", "-f", "s1")
    assert _files(h1, "instances") == []
