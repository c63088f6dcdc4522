"""Snapshots and commit end to end: real libvirtd + QEMU/TCG guests from the tiny image.

One VM is shared by the tests of this module (each boot costs ~12 s); every test brings it into the
state it needs first (running or stopped), so the tests do not depend on each other's order. After
every test ``qemu-img check`` must be clean on every store layer and every instance disk (running
VMs are paused for the check: pausing flushes QEMU's qcow2 caches).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from vmctl import errors

from .conftest import vmctl_with_tiny

pytestmark = pytest.mark.e2e

VM = f"snap-{os.urandom(3).hex()}"


def _state(vmctl, name: str) -> str:
    rows = json.loads(vmctl("ls", "-a", "--json").stdout)
    return next(r["state"] for r in rows if r["name"] == name)


def _ensure(vmctl, name: str, state: str) -> None:
    now = _state(vmctl, name)
    if state == "running" and now != "running":
        vmctl("start", name)
        vmctl("wait", name, "--timeout", "240")
    elif state == "stopped" and now != "stopped":
        vmctl("stop", name, "--timeout", "60")


def _sh(vmctl, name: str, script: str) -> str:
    return vmctl("exec", name, "--", "sh", "-c", script).stdout


def _qemu_img(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=check)


def _check_clean(path: Path) -> None:
    proc = _qemu_img("check", "-U", "-f", "qcow2", "--output", "json", str(path), check=False)
    assert proc.returncode == 0, f"qemu-img check {path}: {proc.stdout} {proc.stderr}"
    report = json.loads(proc.stdout)
    assert not report.get("corruptions") and not report.get("leaks") and not report.get("check-errors"), report


def _check_everything(vmctl) -> None:
    from vmctl.config import load_settings
    from vmctl.storage import ImageStore

    for layer in sorted((vmctl.root / "images" / "layers").glob("*.qcow2")):
        _check_clean(layer)
    store = ImageStore.from_settings(load_settings(root=vmctl.root))
    for image_id in {r["id"] for r in json.loads(vmctl("image", "ls", "--json").stdout)}:
        # digests, qemu-img check, owner and read-only modes: libvirt relabels nothing (the
        # domain's seclabel is none), so even a running VM's kernel and initrd stay root's
        assert store.verify(image_id) == []
    rows = json.loads(vmctl("ls", "-a", "--json").stdout)
    for row in rows:
        disk = vmctl.root / "instances" / row["name"] / "disk.qcow2"
        if row["state"] == "running":
            vmctl("pause", row["name"])
            try:
                _check_clean(disk)
            finally:
                vmctl("resume", row["name"])
        else:
            _check_clean(disk)


def _snaps(vmctl, name: str) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(vmctl("snapshot", "ls", name, "--json").stdout)}


@pytest.fixture(scope="module")
def vm(e2e_vmctl):
    e2e_vmctl("run", VM, "--image", "tiny", "--restrict-network", "--timeout", "240")
    try:
        yield e2e_vmctl, VM
    finally:
        e2e_vmctl("rm", "-f", VM, check=False)


@pytest.fixture(autouse=True)
def _qemu_img_check_after(request):
    yield
    if "vm" in request.fixturenames:
        _check_everything(request.getfixturevalue("vm")[0])


def test_disk_snapshot_revert_restores_the_disk_exactly(vm, tmp_path):
    vmctl, name = vm
    _ensure(vmctl, name, "running")
    _sh(vmctl, name, "mkdir -p /root/data && dd if=/dev/urandom of=/root/data/keep bs=64k count=16 2>/dev/null"
                     " && echo bye > /root/data/gone && sync")
    _ensure(vmctl, name, "stopped")
    disk = vmctl.root / "instances" / name / "disk.qcow2"
    reference = tmp_path / "reference.qcow2"
    _qemu_img("convert", "-f", "qcow2", "-O", "qcow2", str(disk), str(reference))
    vmctl("snapshot", "create", name, "cold", "--description", "before <changes> & more")
    row = _snaps(vmctl, name)["cold"]
    assert (row["kind"], row["vm_state"], row["current"]) == ("disk", "stopped", True)
    assert row["description"] == "before <changes> & more"
    assert vmctl("snapshot", "create", name, "cold", check=False).returncode == errors.ConflictError.exit_code

    _ensure(vmctl, name, "running")
    _sh(vmctl, name, "echo changed >> /root/data/keep; rm /root/data/gone; echo new > /root/data/new;"
                     " dd if=/dev/urandom of=/root/big bs=64k count=64 2>/dev/null; sync")
    out = vmctl("snapshot", "revert", name, "cold").stdout
    assert "stopped" in out and _state(vmctl, name) == "stopped"
    cmp = _qemu_img("compare", "-f", "qcow2", "-F", "qcow2", str(reference), str(disk), check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert vmctl("snapshot", "create", name, "hot", "--memory", check=False).returncode == errors.UsageError.exit_code


def test_memory_snapshot_resumes_a_counting_process(vm):
    vmctl, name = vm
    _ensure(vmctl, name, "running")
    pid = _sh(vmctl, name, "(i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done)"
                           " </dev/null >/dev/null 2>&1 & echo $!").strip()
    time.sleep(2)
    before = int(_sh(vmctl, name, "cat /tmp/count"))
    vmctl("snapshot", "create", name, "counting")
    row = _snaps(vmctl, name)["counting"]
    assert (row["kind"], row["vm_state"]) == ("memory", "running") and row["size"] > 1 << 20
    time.sleep(4)
    later = int(_sh(vmctl, name, "cat /tmp/count"))
    assert later > before + 10
    assert "running" in vmctl("snapshot", "revert", name, "counting").stdout
    now = int(_sh(vmctl, name, f"kill -0 {pid} && cat /tmp/count"))
    assert before <= now < later, (before, now, later)
    time.sleep(1.5)
    assert int(_sh(vmctl, name, f"kill -0 {pid} && cat /tmp/count")) > now


def test_snapshot_tree_with_branches_and_a_deleted_middle_node(vm):
    vmctl, name = vm
    _ensure(vmctl, name, "running")

    def mark(value):
        _sh(vmctl, name, f"echo {value} > /root/node; sync")

    def node():
        return _sh(vmctl, name, "cat /root/node").strip()

    def revert(snap, expected):
        vmctl("snapshot", "revert", name, snap)
        if _snaps(vmctl, name)[snap]["kind"] == "disk-only":
            vmctl("wait", name, "--timeout", "240")  # disks only: the VM boots again
        assert _state(vmctl, name) == "running"
        assert node() == expected, f"after revert to {snap}"

    mark("A")
    vmctl("snapshot", "create", name, "tA")
    mark("B")
    vmctl("snapshot", "create", name, "tB")
    mark("D")
    vmctl("snapshot", "create", name, "tD", "--description", "leaf under B")
    revert("tA", "A")
    mark("C")
    vmctl("snapshot", "create", name, "tC", "--disk-only")
    snaps = _snaps(vmctl, name)
    assert {n: snaps[n]["parent"] for n in ("tB", "tC", "tD")} == {"tB": "tA", "tC": "tA", "tD": "tB"}
    assert snaps["tC"]["kind"] == "disk-only" and snaps["tC"]["current"]
    tree = vmctl("snapshot", "ls", name, "--tree").stdout
    assert tree.index("tA") < tree.index("tB") < tree.index("tD") < tree.index("tC")

    for snap, expected in (("tB", "B"), ("tD", "D"), ("tC", "C"), ("tA", "A")):
        revert(snap, expected)

    vmctl("snapshot", "rm", name, "tB")
    snaps = _snaps(vmctl, name)
    assert "tB" not in snaps and snaps["tD"]["parent"] == "tA"
    for snap, expected in (("tD", "D"), ("tC", "C"), ("tA", "A")):
        revert(snap, expected)
    inspect = json.loads(vmctl("snapshot", "inspect", name, "tA").stdout)[0]
    assert set(inspect["children"]) >= {"tC", "tD"} and inspect["location"] == "internal"
    missing = vmctl("snapshot", "revert", name, "tB", check=False)
    assert missing.returncode == errors.NotFoundError.exit_code and "tB" in missing.stderr


def test_commit_layered_snapshot_and_squash_and_a_vm_from_the_new_image(vm):
    vmctl, name = vm
    _ensure(vmctl, name, "running")
    marker = os.urandom(8).hex()
    _sh(vmctl, name, f"echo {marker} > /root/marker; sync")
    vmctl("snapshot", "create", name, "withmarker")
    app = vmctl("commit", name, "app:1", "--message", "marker added").stdout.strip()
    assert app.startswith("sha256:")
    assert _sh(vmctl, name, "cat /root/marker").strip() == marker  # the instance keeps working

    history = json.loads(vmctl("image", "history", "app:1", "--json").stdout)
    assert len(history) == 2
    top, base = history
    assert top["comment"] == "marker added" and top["created_by"] == f"vmctl commit {name}"
    assert top["image"] == app and "tiny:latest" in base["image_tags"]
    assert top["size"] * 4 < base["size"], history
    text = vmctl("image", "history", "app:1").stdout
    assert "marker added" in text and len(text.strip().splitlines()) == 3
    info = json.loads(vmctl("image", "inspect", "app:1").stdout)[0]
    tiny = json.loads(vmctl("image", "inspect", "tiny").stdout)[0]
    assert info["parent"] == tiny["id"] and info["labels"]["vmctl.commit.instance"] == name
    assert info["layers"][0]["digest"] == tiny["layers"][0]["digest"]

    refused = vmctl("rmi", "tiny", check=False)
    assert refused.returncode == errors.InUseError.exit_code
    assert f"snapshot:{name}/withmarker" in refused.stderr

    other = f"{name}-b"
    vmctl("run", other, "--image", "app:1", "--restrict-network", "--timeout", "240")
    try:
        assert _sh(vmctl, other, "cat /root/marker").strip() == marker
        # QEMU names the top of a chain of two layers or more with a json: pseudo-filename: the
        # live snapshot and commit of a VM of a committed image still find its disk's block node
        vmctl("snapshot", "create", "--disk-only", other, "deeper")
        deeper = json.loads(vmctl("image", "inspect", vmctl("commit", other, "app:2").stdout.strip()).stdout)[0]
        assert len(deeper["layers"]) == 3 and deeper["parent"] == app
    finally:
        vmctl("rm", "-f", other)

    from_snap = json.loads(vmctl("image", "inspect", vmctl("commit", name, "--snapshot", "withmarker",
                                                           "app:snap").stdout.strip()).stdout)[0]
    assert len(from_snap["layers"]) == 2 and from_snap["labels"]["vmctl.commit.snapshot"] == "withmarker"
    flat = json.loads(vmctl("image", "inspect", vmctl("commit", name, "app:flat", "--squash").stdout.strip()).stdout)[0]
    assert len(flat["layers"]) == 1 and flat["labels"]["vmctl.commit.parent"] == tiny["id"]
    assert flat["parent"] is None
    table = _qemu_img("snapshot", "-U", "-l", str(vmctl.root / "instances" / name / "disk.qcow2")).stdout
    assert "vmctl-tmp" not in table  # the temporary snapshot of the live commit is gone


def _broken_snapshots_are_hidden_and_removable(vmctl, name: str) -> None:
    disk = vmctl.root / "instances" / name / "disk.qcow2"
    _qemu_img("snapshot", "-c", "foreign", str(disk))  # another tool's snapshot: not vmctl's
    _qemu_img("snapshot", "-c", "dataonly", str(disk))  # data of a create killed half-way:
    (disk.parent / "snapshots.json").write_text(json.dumps(  # vmctl wrote its intent first
        {"version": 1, "snapshots": {"dataonly": {"kind": "disk", "vm_state": "stopped", "pending": True}}}))
    meta = ("<domainsnapshot><name>metaonly</name><state>shutoff</state><creationTime>1795911999</creationTime><memory snapshot='no'/>"
            "<disks><disk name='vda' snapshot='internal'/></disks>"
            + subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", "--inactive", name],
                             capture_output=True, text=True, check=True).stdout
            + "</domainsnapshot>")
    meta_file = vmctl.root / "metaonly.xml"
    meta_file.write_text(meta)
    proc = subprocess.run(["virsh", "-c", "qemu:///system", "snapshot-create", name, str(meta_file), "--redefine"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _snaps(vmctl, name) == {}
    proc = vmctl("snapshot", "revert", name, "metaonly", check=False)
    assert proc.returncode == errors.IntegrityError.exit_code and "incomplete" in proc.stderr
    vmctl("snapshot", "rm", name, "metaonly")
    vmctl("snapshot", "create", name, "sweeper")  # a create removes vmctl's half-made data
    table = _qemu_img("snapshot", "-l", "-U", str(disk)).stdout
    assert "dataonly" not in table and "foreign" in table
    assert "dataonly" not in json.loads((disk.parent / "snapshots.json").read_text())["snapshots"]
    vmctl("snapshot", "rm", name, "sweeper")
    vmctl("snapshot", "rm", name, "foreign")  # asked for by name, a broken one can be removed
    assert "foreign" not in _qemu_img("snapshot", "-l", "-U", str(disk)).stdout
    assert _snaps(vmctl, name) == {}


def _failed_create_is_rolled_back(vmctl, name: str, monkeypatch) -> None:
    """A create that fails after libvirt made the snapshot leaves nothing behind."""
    from vmctl.config import load_settings
    from vmctl.core import snapshot_records, snapshots
    from vmctl.core.session import Session
    from vmctl.storage import qemu_img

    real = snapshot_records.sidecar_set

    def boom(inst, snap, entry):
        if entry is not None and not entry.get("pending"):
            raise OSError("simulated failure while recording the snapshot")
        real(inst, snap, entry)

    monkeypatch.setattr(snapshot_records, "sidecar_set", boom)
    session = Session(settings=load_settings(root=vmctl.root))
    try:
        with pytest.raises(OSError, match="simulated"):
            snapshots.create(session, name, "halfway")
        assert not session.backend.exists(name) or snapshots.listing(session, name) == []
        assert "halfway" not in qemu_img.snapshot_table(vmctl.root / "instances" / name / "disk.qcow2")
        assert f"snapshot:{name}/halfway" not in session.store.holders("tiny")
        side = vmctl.root / "instances" / name / "snapshots.json"
        assert "halfway" not in json.loads(side.read_text())["snapshots"]
    finally:
        session.close()
        monkeypatch.undo()


def test_commit_of_a_stopped_vm_and_rm_removes_snapshots(e2e_vmctl, monkeypatch):
    vmctl = e2e_vmctl
    name = f"{VM}-c"
    vmctl("create", name, "--image", "tiny", "--restrict-network")
    try:
        vmctl("snapshot", "create", name, "s0")
        assert _snaps(vmctl, name)["s0"]["kind"] == "disk"
        image = vmctl("commit", name, "app:stopped").stdout.strip()
        assert len(json.loads(vmctl("image", "inspect", image).stdout)[0]["layers"]) == 2
        holders = json.loads(vmctl("image", "inspect", "tiny").stdout)[0]["holders"]
        assert f"snapshot:{name}/s0" in holders
        vmctl("snapshot", "rm", name, "s0")
        assert _snaps(vmctl, name) == {}
        _broken_snapshots_are_hidden_and_removable(vmctl, name)
        _failed_create_is_rolled_back(vmctl, name, monkeypatch)
        vmctl("snapshot", "create", name, "s1")
        usage = json.loads(vmctl("df", "--json").stdout)["snapshots"]
        assert usage["count"] >= 1
    finally:
        vmctl("rm", "-f", name)
    holders = json.loads(vmctl("image", "inspect", "tiny").stdout)[0]["holders"]
    assert not [h for h in holders if name in h]
    assert not (vmctl.root / "instances" / name).exists()
    domains = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                             capture_output=True, text=True).stdout.split()
    assert name not in domains
    for layer in sorted((vmctl.root / "images" / "layers").glob("*.qcow2")):
        _check_clean(layer)


@pytest.fixture
def small_root(libvirtd):
    """A data root on a 320 MiB tmpfs, to meet a really full disk."""
    mnt = Path(tempfile.mkdtemp(prefix="vmctl-e2e-full-", dir="/var/tmp"))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320m,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        with vmctl_with_tiny(mnt / "root") as vmctl:
            yield vmctl
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)


def test_full_disk_refuses_a_memory_snapshot_and_leaves_the_vm_alone(small_root):
    vmctl = small_root
    name = f"{VM}-f"
    vmctl("run", name, "--image", "tiny", "--restrict-network", "--timeout", "240")
    filler = vmctl.root.parent / "filler"
    free = shutil.disk_usage(vmctl.root).free
    with open(filler, "wb") as fh:  # leave ~100 MiB: less than the 256 MiB guest's RAM
        fh.truncate(0)
        os.posix_fallocate(fh.fileno(), 0, max(0, free - (100 << 20)))
    proc = vmctl("snapshot", "create", name, "m", check=False)
    assert proc.returncode == errors.ResourceError.exit_code, proc.stderr
    assert "not enough disk space" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert _state(vmctl, name) == "running" and _snaps(vmctl, name) == {}
    assert _sh(vmctl, name, "echo alive").strip() == "alive"
    vmctl("snapshot", "create", name, "d", "--disk-only")  # a disk snapshot still fits
    filler.unlink()
    assert list(_snaps(vmctl, name)) == ["d"]
    vmctl("rm", "-f", name)
