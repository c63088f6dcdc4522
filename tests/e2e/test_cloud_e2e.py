"""Real cloud images, end to end: a Debian 12 cloud-style guest vmctl did not make (tests/cloudguest).

systemd, the distribution's cloud-init 22.4 and OpenSSH, qemu-guest-agent, GRUB on a partitioned
whole disk; its default user is ``kestrel`` (not a name vmctl could guess) and cloud-init disables
root. Every command below is what a user types, with no flag that names the user or the firmware:

- the catalog path: ``vmctl pull debian:12`` from a local HTTPS mirror serving the disk with a
  ``SHA512SUMS`` in Debian's own format, then the whole life of a VM by BIOS (SeaBIOS, the disk's
  own GRUB): run (disk grown) -> exec/exec --root -> cp both ways -> snapshot/revert -> commit of
  the running VM (frozen by the guest agent) -> run from the commit with a failing user-data and
  ``--wait cloud-init`` and two volumes (virtio-fs, 9p read-only) -> stop (through the guest agent) -> rm;
- the same life by UEFI (OVMF) for an image imported with ``vmctl image import`` alone.

Each test boots two VMs under TCG (about a minute each on 2 cores); the image is built once per
CI run and cached by its recipe's hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import ssl
import tempfile
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cloudguest.build import DEFAULT_USER
from tests.e2e.conftest import make_vmctl, shared_dir
from tests.registry import regserver

pytestmark = pytest.mark.e2e

BOOT = "900"  # seconds: a systemd guest under TCG on a busy 2-core machine


@pytest.fixture(scope="module")
def cloud_vmctl(libvirtd, cloud_guest, tmp_path_factory):
    root = Path(tempfile.mkdtemp(prefix="vmctl-cloud-", dir="/var/tmp"))
    vm = make_vmctl(root)
    try:
        yield vm
    finally:
        names = vm("ls", "-a", "-q", check=False).stdout.split()
        if names:
            vm("rm", "-f", *names, check=False)
        shutil.rmtree(root, ignore_errors=True)


class Mirror:
    """An HTTPS download site on 127.0.0.1 serving a directory, with a CA the test made."""

    def __init__(self, directory: Path, pki: Path):
        certs = regserver.make_ca(pki)
        handler = functools.partial(_Quiet, directory=str(directory))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs["cert"], certs["key"])
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.ca_file = certs["ca"]
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def _sha512(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _out(vm, *args, **kw) -> str:
    return vm(*args, **kw).stdout.strip()


def _life(vm, name: str, image: str, firmware: str, login: str, tmp: Path) -> None:
    """run -> exec -> cp -> snapshot/revert -> commit -> run from the commit -> stop -> rm, logged in
    as `login` (a user the image's cloud-init made from vmctl's seed: the image itself has none of
    that name)."""
    home = f"/home/{login}"
    vm("run", name, "--image", image, "--disk", "3G", "--memory", "1G", "--timeout", BOOT, timeout=1000)
    info = json.loads(_out(vm, "inspect", name))[0]
    assert info["ssh"]["user"] == login and info["boot"]["firmware"] == firmware

    # the login user, made by the image's cloud-init from vmctl's seed; root through sudo
    assert _out(vm, "exec", name, "--", "id", "-un") == login
    assert _out(vm, "exec", "--root", name, "--", "id", "-u") == "0"
    assert _out(vm, "exec", name, "--", "getent", "passwd", DEFAULT_USER)  # the image's own user stays
    # hostname and /etc/hosts managed: sudo does not complain that it cannot resolve the host
    sudo = vm("exec", name, "--", "sudo", "-n", "true")
    assert "unable to resolve host" not in sudo.stderr
    assert _out(vm, "exec", name, "--", "hostname") == name
    # the firmware it booted by, seen from inside
    efi = vm("exec", name, "--", "test", "-d", "/sys/firmware/efi", check=False).returncode == 0
    assert efi == (firmware == "uefi")
    # --disk 3G: cloud-init's growpart grew the root file system
    size = int(_out(vm, "exec", name, "--", "df", "-B1", "--output=size", "/").split()[-1])
    assert size > 2.6 * (1 << 30), size

    # cp both ways
    src = tmp / "hello.txt"
    src.write_text("from the host\n")
    vm("cp", str(src), f"{name}:{home}/hello.txt")
    back = tmp / "back.txt"
    vm("cp", f"{name}:{home}/hello.txt", str(back))
    assert back.read_text() == "from the host\n"

    # snapshot / revert (running VM)
    vm("snapshot", "create", name, "before")
    vm("exec", name, "--", "sh", "-c", f"echo later > {home}/later.txt && sync")
    vm("snapshot", "revert", name, "before", timeout=600)
    vm("wait", name, "--timeout", BOOT, timeout=1000)
    assert vm("exec", name, "--", "test", "-e", f"{home}/later.txt", check=False).returncode != 0
    assert _out(vm, "exec", name, "--", "cat", f"{home}/hello.txt") == "from the host"

    # commit of the running VM, then a VM from the commit whose user-data fails
    vm("exec", name, "--", "sh", "-c", f"echo committed > {home}/committed.txt")
    committed = f"{image.split(':')[0]}-committed:{firmware}"
    vm("commit", name, committed, timeout=600)
    cfg = json.loads(_out(vm, "image", "inspect", committed))[0]
    assert cfg["boot"]["firmware"] == firmware
    # the commit of the running VM froze its file systems through the agent
    agent_log = vm("exec", "--root", name, "--", "journalctl", "-u", "qemu-guest-agent", "--no-pager").stdout
    assert "guest-fsfreeze called" in agent_log, agent_log[-2000:]
    vm("stop", name, timeout=300)   # through the guest agent (it answers here)
    assert json.loads(_out(vm, "inspect", name))[0]["state"] == "stopped"

    user_data = tmp / "fails.yaml"
    user_data.write_text("#cloud-config\nruncmd:\n  - [sh, -c, 'echo vmctl-test-step-failed; exit 3']\n")
    second = f"{name}-2"
    # by UEFI the second VM also has secure boot (Debian's signed shim and GRUB) and a vTPM
    extra = ["--secure-boot", "--tpm"] if firmware == "uefi" else []
    # volumes: the image's own cloud-init mounts them (bootcmd); by virtio-fs here (root's session),
    # the read-only one over a read-only bind mount (Debian's cloud kernel has no 9p)
    shared, readonly = shared_dir("vmctl-cloud-rw-"), shared_dir("vmctl-cloud-ro-")
    try:
        (readonly / "hello.txt").write_text("read only\n")
        os.chmod(readonly, 0o755)   # uids pass through: a directory any user may read, as shared data is
        volumes = ["-v", f"{shared}:/srv/shared", "-v", f"{readonly}:/srv/ro:ro"]
        failed = vm("run", second, "--image", committed, "--user-data", str(user_data), "--wait", "cloud-init",
                    "--timeout", BOOT, *extra, *volumes, check=False, timeout=1000)
        assert failed.returncode == 8, failed.stderr
        assert "cloud-init finished with status 'error'" in failed.stderr
        assert "runcmd" in failed.stderr or "scripts-user" in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) >= 1 and "Traceback" not in failed.stderr
        # the VM itself is up (the wait reports, the run keeps the VM): the commit's content is there
        assert _out(vm, "exec", second, "--", "cat", f"{home}/committed.txt") == "committed"
        assert _out(vm, "exec", second, "--", "cat", "/srv/ro/hello.txt") == "read only"
        uid = int(_out(vm, "exec", second, "--", "id", "-u"))
        os.chown(shared, uid, uid)   # the host directory is the login user's: uids pass through
        vm("exec", second, "--", "sh", "-c", "echo by-login > /srv/shared/by-login.txt")
        assert (shared / "by-login.txt").stat().st_uid == uid
        assert vm("exec", "--root", second, "--", "sh", "-c", "echo x > /srv/ro/x", check=False).returncode != 0
        if extra:
            assert "SecureBoot enabled" in vm("exec", second, "--", "mokutil", "--sb-state").stdout
            assert vm("exec", second, "--", "test", "-c", "/dev/tpm0", check=False).returncode == 0
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(readonly, ignore_errors=True)

    vm("rm", "-f", name, second, timeout=300)
    assert name not in _out(vm, "ls", "-a", "-q").split()
    vm("image", "rm", committed)


def test_catalog_pull_then_a_bios_vm_lives_its_whole_life(cloud_vmctl, cloud_guest, tmp_path):
    vm = cloud_vmctl
    site = tmp_path / "site"
    (site / "bookworm/latest").mkdir(parents=True)
    disk = site / "bookworm/latest/debian-12-genericcloud-amd64.qcow2"
    os.link(cloud_guest.hybrid, disk) if os.stat(cloud_guest.hybrid).st_dev == os.stat(site).st_dev \
        else shutil.copyfile(cloud_guest.hybrid, disk)
    (site / "bookworm/latest/SHA512SUMS").write_text(
        f"{_sha512(disk)}  debian-12-genericcloud-amd64.qcow2\n"
        f"{'0' * 128}  debian-12-genericcloud-amd64.raw\n")
    mirror = Mirror(site, tmp_path / "pki")
    try:
        vm.env["VMCTL_CATALOG_MIRROR_DEBIAN"] = mirror.url
        vm.env["VMCTL_CATALOG_CA_FILE"] = str(mirror.ca_file)
        pulled = json.loads(_out(vm, "pull", "debian:12", "--json", timeout=900))
    finally:
        mirror.stop()
        vm.env.pop("VMCTL_CATALOG_MIRROR_DEBIAN")
        vm.env.pop("VMCTL_CATALOG_CA_FILE")
    assert pulled["source"] == "catalog" and pulled["name"] == "debian:12"
    boot = json.loads(_out(vm, "image", "inspect", "debian:12"))[0]["boot"]
    assert boot == {"kind": "firmware", "firmware": "bios", "supports": ["bios", "uefi"]}
    _life(vm, "deb-bios", "debian:12", "bios", "debian", tmp_path)   # the catalog names the user


def test_import_detects_the_firmware_and_a_uefi_vm_lives_its_whole_life(cloud_vmctl, cloud_guest, tmp_path):
    vm = cloud_vmctl
    vm("image", "import", str(cloud_guest.bios), "cloud-bios:1", timeout=600)
    vm("image", "import", str(cloud_guest.uefi), "cloud-uefi:1", timeout=600)
    bios = json.loads(_out(vm, "image", "inspect", "cloud-bios:1"))[0]["boot"]
    uefi = json.loads(_out(vm, "image", "inspect", "cloud-uefi:1"))[0]["boot"]
    assert (bios["firmware"], bios["supports"]) == ("bios", ["bios"])
    assert (uefi["firmware"], uefi["supports"]) == ("uefi", ["uefi"])
    refused = vm("create", "never", "--image", "cloud-bios:1", "--firmware", "uefi", check=False)
    assert refused.returncode == 2 and "boots only with bios" in refused.stderr
    assert "never" not in _out(vm, "ls", "-a", "-q").split()
    vm("image", "rm", "cloud-bios:1")
    _life(vm, "deb-uefi", "cloud-uefi:1", "uefi", "vmctl", tmp_path)  # an image that names none


CLOUD_VMFILE = """\
FROM cloud-build:1
COPY index.html /srv/www/
RUN --root chown -R vmctl /srv/www
RUN echo "built as $(id -un)" > /srv/www/who.txt
EXPOSE 8000
CMD ["python3", "-m", "http.server", "8000", "--directory", "/srv/www"]
"""


CLOUD_STACK = """\
name: cloudstack
vms:
  web:
    build: ctx            # the Vmfile above: cached, so up boots no build VM
    memory: 1G
    healthcheck:
      test: ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/who.txt')"]
      interval: 2s
      retries: 300
  client:
    image: tiny
    depends_on:
      web: {condition: healthy}
"""


def test_a_vmfile_builds_on_the_cloud_image_and_serves_a_stack_peer(cloud_vmctl, cloud_guest, tmp_path):
    """The build tier on a guest vmctl did not make (systemd runs the image's command at boot),
    and that guest in a stack: brought up from ``build:`` (every step cached), healthy by its
    healthcheck, reached by name from a tiny guest over the stack's segment; its cloud-init
    wrote the stack's /etc/hosts (not its own template)."""

    vm = cloud_vmctl
    vm("image", "import", str(cloud_guest.bios), "cloud-build:1", timeout=600)
    vm("image", "build", "tiny", timeout=1800)
    stack = Path(tempfile.mkdtemp(prefix="vmctl-cloud-stack-", dir="/var/tmp"))
    ctx = stack / "ctx"
    ctx.mkdir()
    (ctx / "index.html").write_text("cloud build\n")
    (ctx / "Vmfile").write_text(CLOUD_VMFILE)
    (stack / "vmctl.yaml").write_text(CLOUD_STACK)
    built = json.loads(_out(vm, "build", "-t", "cloud-web:1", "--json", str(ctx), timeout=1500))
    assert built["vm_boots"] == 1 and not any(s["cached"] for s in built["steps"] if "EXPOSE" not in s["instruction"])
    vm.cwd = stack
    try:
        report = json.loads(_out(vm, "up", "-d", "--json", "--timeout", BOOT, timeout=1800))
        assert report["vms"] == {"web": "created", "client": "created"} and report["health"] == {"web": "healthy"}
        assert _out(vm, "exec", "client", "--", "wget", "-qO-", "http://web:8000/who.txt") == "built as vmctl"
        assert "cloudstack-client" in _out(vm, "exec", "web", "--", "getent", "hosts", "client")
        # EXPOSE gave the stack VM its forward, as it does to `vmctl run`
        (forward,) = [p for p in json.loads(_out(vm, "inspect", "web"))[0]["ports"] if p["guest_port"] == 8000]
        with urllib.request.urlopen(f"http://127.0.0.1:{forward['host_port']}/who.txt", timeout=30) as r:
            assert r.read().decode() == "built as vmctl\n"
        assert _out(vm, "exec", "web", "--", "systemctl", "is-enabled", "vmctl-cmd.service") == "enabled"
        down = json.loads(_out(vm, "down", "--json", timeout=600))
        assert sorted(down["vms_removed"]) == ["cloudstack-client", "cloudstack-web"]
    finally:
        vm("down", check=False, timeout=600)
        vm.cwd = None
        shutil.rmtree(stack, ignore_errors=True)
    vm("rmi", "cloud-web:1", "cloudstack-web:latest")
    held = vm("rmi", "cloud-build:1", check=False)   # the build's cached steps are its children
    assert held.returncode == 5 and "vmctl image prune" in held.stderr, held.stderr
    vm("image", "prune")
    vm("rmi", "cloud-build:1")


def test_a_cloud_guest_checkpoint_warm_starts_clones_with_their_own_identity(cloud_vmctl, cloud_guest):
    """A guest vmctl did not make: its qemu-guest-agent gives each restored clone its identity."""
    vm = cloud_vmctl
    vm("image", "import", str(cloud_guest.bios), "cloud-warm-base:1", timeout=600)
    try:
        vm("run", "cw-src", "--image", "cloud-warm-base:1", "--memory", "1G", "--restrict-network",
           "--timeout", BOOT, timeout=1000)
        source_id = _out(vm, "exec", "cw-src", "--", "cat", "/etc/machine-id")
        vm("commit", "--checkpoint", "cw-src", "cloud-warm:1", timeout=900)
        cp = json.loads(_out(vm, "image", "inspect", "cloud-warm:1"))[0]["checkpoint"]
        assert cp["agent"] == "qga-1" and cp["memory_mib"] == 1024
        keys, ids = set(), {source_id}
        for name in ("cw-1", "cw-2"):
            out = vm("run", name, "--image", "cloud-warm:1", "--restrict-network", "--timeout", "300", timeout=600)
            assert "booting" not in out.stderr, out.stderr
            info = json.loads(_out(vm, "inspect", name))[0]
            assert info["warm"]["started"] == "warm", info["warm"]
            assert _out(vm, "exec", name, "--", "hostname") == name
            # the SSH server's key is the one vmctl pinned for this clone (exec proved the guest holds it)
            pub = _out(vm, "exec", name, "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
            assert pub.split()[:2] == info["ssh"]["host_key"].split()[:2]
            ids.add(_out(vm, "exec", name, "--", "cat", "/etc/machine-id"))
            keys.add(info["ssh"]["host_key"])
        assert len(keys) == 2 and len(ids) == 3
        assert _out(vm, "exec", "cw-src", "--", "hostname") == "cw-src"   # the source goes on as it was
    finally:
        vm("rm", "-f", "cw-src", "cw-1", "cw-2", check=False)
