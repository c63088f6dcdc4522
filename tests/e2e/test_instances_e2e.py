"""Real VMs from the tiny image under libvirtd + QEMU/TCG, driven through the vmctl program."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from vmctl import errors

from .conftest import make_vmctl

pytestmark = pytest.mark.e2e


def _domain_exists(name: str) -> bool:
    out = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                         capture_output=True, text=True).stdout.split()
    return name in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(port: int, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                if data:
                    return data
        except OSError:
            pass
        if time.monotonic() > deadline:
            return b""
        time.sleep(0.3)


@pytest.fixture(scope="module")
def vm(e2e_vmctl):
    """One running VM shared by the read-mostly tests of this module (each boot costs ~12 s)."""
    port = _free_port()
    e2e_vmctl("run", "shared1", "--image", "tiny", "--restrict-network", "-p", f"{port}:8080",
              "--timeout", "240")
    yield e2e_vmctl, "shared1", port
    e2e_vmctl("rm", "-f", "shared1", check=False)


def test_exec_sees_the_hostname_and_passes_status_and_streams(vm):
    vmctl, name, _ = vm
    assert vmctl("exec", name, "--", "cat", "/etc/hostname").stdout.strip() == name
    proc = vmctl("exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert proc.returncode == 7
    assert proc.stdout == "out\n" and proc.stderr == "err\n"


def test_cp_in_and_out_is_byte_identical(vm, tmp_path):
    vmctl, name, _ = vm
    payload = bytes(range(256)) * 4096  # 1 MiB with every byte value
    src = tmp_path / "payload.bin"
    src.write_bytes(payload)
    vmctl("cp", str(src), f"{name}:/root/payload.bin")
    size = vmctl("exec", name, "--", "wc", "-c", "/root/payload.bin").stdout.split()[0]
    assert int(size) == len(payload)
    back = tmp_path / "back.bin"
    vmctl("cp", f"{name}:/root/payload.bin", str(back))
    assert back.read_bytes() == payload


HOSTILE_SH = """#!/bin/busybox sh
# the guest's root replaced /bin/sh: vmctl's `tar -c` gets the crafted stream, the rest runs as usual
case "$2" in
  "tar -c "*) exec /bin/busybox cat /root/crafted.tar ;;
esac
exec /bin/busybox sh "$@"
"""


def test_cp_from_a_guest_that_lies_stays_inside_dest(vm, tmp_path):
    """The real tiny guest, made hostile from inside: its /bin/sh answers vmctl's tar with streams
    that try to escape (refused, nothing written) or carry devices, setuid and outward links
    (written without them, each skip reported)."""
    from tests import tarcraft

    vmctl, name, _ = vm
    M = tarcraft.member
    escaping = tarcraft.stream(M(".", typeflag=b"5", mode=0o755), M("x", typeflag=b"2", linkname="/tmp"),
                               M("x/vmctl-guest-pwned", b"pwned"), M("../../vmctl-guest-pwned", b"pwned"))
    sanitized = tarcraft.stream(M(".", typeflag=b"5", mode=0o777), M("suid", b"#!/bin/sh\n", mode=0o4777),
                                M("zero", typeflag=b"3"), M("etc", typeflag=b"2", linkname="/etc"),
                                M("ok", typeflag=b"2", linkname="suid"))
    (tmp_path / "hsh").write_text(HOSTILE_SH)
    vmctl("cp", str(tmp_path / "hsh"), f"{name}:/root/hsh")
    vmctl("exec", name, "--", "sh", "-c", "mkdir -p /root/dir && chmod 755 /root/hsh && ln -sf /root/hsh /bin/sh")
    try:
        dest = tmp_path / "dest"
        dest.mkdir()
        for stream, code in ((escaping, 11), (sanitized, 0)):
            (tmp_path / "crafted.tar").write_bytes(stream)
            vmctl("exec", name, "--", "/bin/busybox", "rm", "-f", "/root/crafted.tar")
            # a plain cat upload: the file lands as it is (it is the guest's own data now)
            vmctl("cp", str(tmp_path / "crafted.tar"), f"{name}:/root/crafted.tar")
            proc = vmctl("cp", f"{name}:/root/dir", str(dest), check=False)
            assert proc.returncode == code, proc.stderr
            if code:
                assert proc.stderr.startswith("vmctl: error:") and proc.stderr.count("\n") == 1
                assert list(dest.iterdir()) == [] and not Path("/tmp/vmctl-guest-pwned").exists()
                assert not (tmp_path / "vmctl-guest-pwned").exists()
        got = dest / "dir"
        assert sorted(p.name for p in got.iterdir()) == ["ok", "suid"]
        assert (got / "suid").stat().st_mode & 0o7777 == 0o755
        assert "skipped 1 device nodes and FIFOs" in proc.stderr
        assert "skipped 1 symbolic links that lead outside the copy" in proc.stderr
    finally:
        vmctl("exec", name, "--", "/bin/busybox", "ln", "-sf", "busybox", "/bin/sh")
    assert vmctl("exec", name, "--", "readlink", "/bin/sh").stdout.strip() == "busybox"


def test_port_forward_reaches_a_server_in_the_guest(vm):
    vmctl, name, port = vm
    vmctl("exec", name, "--", "sh", "-c",
          "echo hello-from-guest > /tmp/page; setsid nc -ll -p 8080 -e cat /tmp/page "
          "</dev/null >/dev/null 2>&1 &")
    assert _fetch(port) == b"hello-from-guest\n"
    rows = json.loads(vmctl("ls", "--json").stdout)
    row = next(r for r in rows if r["name"] == name)
    assert {"host": "127.0.0.1", "host_port": port, "guest_port": 8080, "proto": "tcp"} in row["ports"]


def test_a_wrong_pinned_host_key_is_refused(vm):
    vmctl, name, _ = vm
    record = vmctl.root / "instances" / name / "instance.json"
    original = record.read_text()
    data = json.loads(original)
    from vmctl.seed.hostkeys import generate_host_key

    data["host_key"] = generate_host_key().public
    record.write_text(json.dumps(data))
    try:
        proc = vmctl("exec", name, "--", "true", check=False)
        assert proc.returncode == errors.HostKeyMismatch.exit_code
        assert proc.stderr.startswith("vmctl: error:") and "SHA256:" in proc.stderr
    finally:
        record.write_text(original)
    assert vmctl("exec", name, "--", "true").returncode == 0


def test_inspect_and_ip(vm):
    vmctl, name, _ = vm
    info = json.loads(vmctl("inspect", name).stdout)[0]
    assert info["state"] == "running" and info["image"]["ref"] == "tiny"
    assert info["ssh"]["address"] == "127.0.0.1"
    assert vmctl("ip", name).stdout.strip() == f"127.0.0.1:{info['ssh']['port']}"


def test_stop_is_graceful_start_keeps_data_and_rm_leaves_nothing(e2e_vmctl):
    vmctl, name = e2e_vmctl, "life1"
    vmctl("run", name, "--image", "tiny", "--restrict-network", "--timeout", "240")
    vmctl("exec", name, "--", "sh", "-c", "echo kept > /root/marker")
    stop = vmctl("stop", name, "--timeout", "120")
    assert "powered off" not in stop.stderr  # no forced power-off
    log = vmctl("logs", name).stdout
    assert "vmctl-guest: clean shutdown" in log  # the guest saw the power button and synced
    assert json.loads(vmctl("inspect", name).stdout)[0]["state"] == "stopped"

    vmctl("start", name)
    vmctl("wait", name, "--timeout", "240")
    assert vmctl("exec", name, "--", "cat", "/root/marker").stdout == "kept\n"

    directory = vmctl.root / "instances" / name
    assert directory.is_dir() and _domain_exists(name)
    vmctl("rm", "-f", name)
    assert not directory.exists()
    assert not _domain_exists(name)
    leftovers = [p.name for p in (vmctl.root / "instances").iterdir() if name in p.name or p.name.startswith(".")]
    assert leftovers == []
    image = json.loads(vmctl("image", "inspect", "tiny").stdout)[0]
    assert f"instance:{name}" not in image["holders"]


def test_rm_of_a_running_vm_needs_force(e2e_vmctl):
    vmctl = e2e_vmctl
    vmctl("create", "norun1", "--image", "tiny", "--restrict-network")
    vmctl("start", "norun1")
    proc = vmctl("rm", "norun1", check=False)
    assert proc.returncode == errors.ConflictError.exit_code and "rm -f" in proc.stderr
    vmctl("rm", "-f", "norun1")
    assert not _domain_exists("norun1")


def test_two_creates_of_one_name_exactly_one_wins(e2e_vmctl):
    vmctl = e2e_vmctl
    procs = [vmctl.popen("create", "race1", "--image", "tiny", "--restrict-network") for _ in range(2)]
    results = [(p.wait(timeout=120), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    try:
        assert codes == [0, errors.ConflictError.exit_code], results
        loser_err = next(err for code, (_out, err) in results if code != 0)
        assert loser_err.startswith("vmctl: error:") and "race1" in loser_err
        assert _domain_exists("race1")
        assert [p.name for p in (vmctl.root / "instances").iterdir() if p.name.startswith(".")] == []
    finally:
        vmctl("rm", "-f", "race1", check=False)


def test_failed_create_rolls_back_everything(e2e_vmctl, tmp_path):
    vmctl = e2e_vmctl
    profiles = tmp_path / "config" / "vmctl" / "profiles"
    profiles.mkdir(parents=True)
    # A profile libvirt's schema accepts but the QEMU driver refuses at define time.
    (profiles / "broken.toml").write_text('extends = "hosted"\n[machine]\nmachine = "pc-q35-99.99"\n')
    broken = make_vmctl(vmctl.root, XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = broken("create", "fail1", "--image", "tiny", "--profile", "broken", check=False)
    assert proc.returncode == errors.LibvirtError.exit_code, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("vmctl: error:")
    assert not _domain_exists("fail1")
    assert [p.name for p in (vmctl.root / "instances").iterdir() if "fail1" in p.name or p.name.startswith(".")] == []
    assert "instance:fail1" not in json.loads(vmctl("image", "inspect", "tiny").stdout)[0]["holders"]


def test_create_with_libvirt_unreachable_writes_nothing(tmp_path):
    root = Path("/var/tmp") / f"vmctl-unreach-{tmp_path.name}"
    vmctl = make_vmctl(root)
    proc = vmctl("--connect", "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
                 "create", "x1", "--image", "tiny", check=False)
    assert proc.returncode == errors.LibvirtUnreachable.exit_code
    assert proc.stderr.startswith("vmctl: error: cannot connect")
    assert not root.exists()
