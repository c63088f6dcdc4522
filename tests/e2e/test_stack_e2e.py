"""Stacks end to end in hosted mode, with the README's file: two tiny guests on a private segment
(a multicast group on 127.0.0.1 that their QEMUs join), the second reaching the first by name.

One flow, each step something only real guests on a real daemon show: an ``up`` killed after its
first VM resumes (and the made VM is kept); db becomes healthy by its healthcheck before web is
made; web fetched db's page by name over the stack network at its first boot and serves it on its
forwarded port; a second ``up`` changes nothing (same domains); a changed memory is reported, and
``up --recreate`` -- killed after removing web, then resumed -- replaces only web; web taken out
of the file is an orphan (db's /etc/hosts loses it at once, and after a reboot too), removed by
``up --remove-orphans``; ``down --volumes`` leaves no VM, disk, seed, state, volume or socket. The system-mode run of a stack is in
test_system_mode_e2e.py; the cloud guest in a stack (built from a Vmfile) in test_cloud_e2e.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import make_vmctl
from tests.stack.test_stack_file import readme_stack
from vmctl import faults
from vmctl.core.hostports import port_free

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack_dir():
    d = Path(tempfile.mkdtemp(prefix="vmctl-stack-", dir="/var/tmp"))
    d.chmod(0o755)   # QEMU (libvirt-qemu) reaches the named volume under it
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _uuid(name: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///session", "domuuid", name], capture_output=True,
                          text=True).stdout.strip()


def _get(url: str, tries: int = 60) -> str:
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read().decode()
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} never answered")


def _killed_at(vm, point: str, *args: str) -> subprocess.CompletedProcess:
    """vmctl `args` in the stack's directory, SIGKILLed by itself at fault point `point`."""
    env = dict(vm.env, VMCTL_TEST_FAULT=point)
    return subprocess.run([sys.executable, "-m", "vmctl", *args], env=env, cwd=vm.cwd, capture_output=True,
                          text=True, timeout=600)


def _sockets(port: int) -> str:
    return subprocess.run(["ss", "-ulpnH", f"sport = :{port}"], capture_output=True, text=True).stdout


def test_stack_up_resumes_reaches_by_name_is_idempotent_recreates_one_and_down_leaves_nothing(e2e_vmctl, stack_dir):
    assert set(faults.STACK_POINTS) == {"stack.after-create", "stack.after-remove"}   # both killed below
    text = readme_stack()
    port = 18080
    if not port_free(port):
        port = 18081 if port_free(18081) else 18082
        text = text.replace('"18080:80"', f'"{port}:80"')
    (stack_dir / "vmctl.yaml").write_text(text)
    vm = make_vmctl(e2e_vmctl.root)
    vm.cwd = stack_dir

    # a schema error names the file and its line, and nothing is made
    (stack_dir / "bad.yaml").write_text(text.replace("memory: 256M", "memory: [256]", 1))
    bad = vm("up", "-d", "-f", "bad.yaml", check=False)
    line = text.splitlines().index("    memory: 256M") + 1
    assert bad.returncode == 2 and f"bad.yaml:{line}: vms.db.memory: [256] is not a size" in bad.stderr, bad.stderr
    assert vm("ls", "-a", "-q").stdout.split() == []

    # killed right after db was made: db is there (and running), web is not; up resumes
    proc = _killed_at(vm, "stack.after-create", "up", "-d")
    assert proc.returncode == -9, proc.stderr
    states = {r["vm"]: r["state"] for r in json.loads(vm("ps", "--json").stdout)}
    assert states == {"db": "running", "web": "missing"}, states
    db_uuid = _uuid("shop-db")
    t0 = time.monotonic()
    report = json.loads(vm("up", "-d", "--json", timeout=900).stdout)
    up_seconds = time.monotonic() - t0
    assert report["vms"] == {"db": "unchanged", "web": "created"} and report["health"] == {"db": "healthy"}
    assert _uuid("shop-db") == db_uuid
    health = {r["vm"]: r["health"] for r in json.loads(vm("ps", "--json").stdout)}
    assert health == {"db": "healthy", "web": None}
    assert "running (healthy)" in vm("ps").stdout

    # web fetched db's page by name over "back" at its first boot, and serves it on the forward
    assert _get(f"http://127.0.0.1:{port}/").strip() == "hello from db"
    assert vm("exec", "web", "--", "wget", "-qO-", "http://db:8080/").stdout.strip() == "hello from db"
    hosts = vm("exec", "web", "--", "cat", "/etc/hosts").stdout
    assert "10.213.0.10 db shop-db" in hosts or " db shop-db" in hosts, hosts
    assert (stack_dir / ".vmctl" / "volumes" / "data" / "index.html").read_text().strip() == "hello from db"
    # the segment: both QEMUs joined the network's group on 127.0.0.1, nothing else
    st = json.loads((e2e_vmctl.root / "stacks" / "shop.json").read_text())
    back = st["networks"]["back"]
    assert _sockets(back["port"]).count(back["group"]) == 2
    assert vm("logs", "web").stdout.strip()   # the short name, inside the stack's directory

    # a second up changes nothing
    again = json.loads(vm("up", "-d", "--json").stdout)
    assert again["vms"] == {"db": "unchanged", "web": "unchanged"}
    web_uuid = _uuid("shop-web")

    # web's memory changed: reported, then replaced alone by --recreate (killed after the removal: resumed)
    (stack_dir / "vmctl.yaml").write_text(text.replace("    memory: 256M\n    networks: [back]\n    ports",
                                                       "    memory: 288M\n    networks: [back]\n    ports"))
    kept = vm("up", "-d", "--json")
    assert json.loads(kept.stdout)["vms"]["web"] == "changed" and "--recreate" in kept.stderr
    proc = _killed_at(vm, "stack.after-remove", "up", "-d", "--recreate")
    assert proc.returncode == -9, proc.stderr
    resumed = json.loads(vm("up", "-d", "--json", timeout=900).stdout)
    assert resumed["vms"] == {"db": "unchanged", "web": "created"}
    assert _uuid("shop-db") == db_uuid and _uuid("shop-web") not in ("", web_uuid)
    assert json.loads(vm("inspect", "web").stdout)[0]["memory_mib"] == 288
    assert _get(f"http://127.0.0.1:{port}/").strip() == "hello from db"

    # web leaves the file: reported, then removed by --remove-orphans, and db's /etc/hosts loses it
    # (pushed over SSH, and kept for db's next boots instead of its seed's list)
    (stack_dir / "vmctl.yaml").write_text(text[:text.index("  web:\n")])
    kept = json.loads(vm("up", "-d", "--json").stdout)
    assert kept["orphans"] == ["shop-web"] and kept["hosts_updated"] == ["db"], kept
    assert " web " not in vm("exec", "db", "--", "cat", "/etc/hosts").stdout
    pruned = json.loads(vm("up", "-d", "--remove-orphans", "--json").stdout)
    assert pruned["removed"] == ["shop-web"] and pruned["hosts_updated"] == [], pruned
    vm("restart", "db")
    vm("wait", "db")
    after_boot = vm("exec", "db", "--", "cat", "/etc/hosts").stdout
    assert " db shop-db" in after_boot and " web " not in after_boot, after_boot

    down = json.loads(vm("down", "--volumes", "--json").stdout)
    assert down["vms_removed"] == ["shop-db"]
    assert vm("ls", "-a", "-q").stdout.split() == []
    assert not [p for p in (e2e_vmctl.root / "instances").iterdir()]
    assert not (e2e_vmctl.root / "stacks" / "shop.json").exists()
    assert not (stack_dir / ".vmctl" / "volumes" / "data").exists()
    assert back["group"] not in _sockets(back["port"])
    print(f"\nstack e2e: up of web after db healthy {up_seconds:.1f} s")
