"""End to end, bare-metal mode: ``--mode system`` against a real system libvirtd with a NAT network.

Everything runs inside a network namespace this test creates (see `tests/e2e/netns.py`): a second
libvirtd with its own state, a libvirt NAT network ``vmctl-e2e`` (bridge, dnsmasq, iptables rules all
in the namespace) and vmctl itself (``ip netns exec NS vmctl --mode system --connect ...``), so vmctl
reaches the guest at the address its DHCP lease gives. Nothing appears in the machine's namespace;
the machine's own libvirtd, VMs and networks are never touched.

The flow: ``image build tiny``; ``run s1 --network vmctl-e2e`` (ready = the lease's address answers
SSH with the pinned host key and takes vmctl's key); ``ip`` prints the lease address; ``exec``;
``stop``; ``rm`` leaves nothing in libvirt or in the data root.

The memory hard limit. The ``kvm`` profile sets ``<memtune><hard_limit>``, and libvirt then raises
QEMU's RLIMIT_MEMLOCK to it, which needs CAP_SYS_RESOURCE. Where the daemon lacks it (these CI
machines drop it from every process's bounding set and cap RLIMIT_MEMLOCK at 8 MiB), the test
checks that vmctl refuses the start with its one-line explanation, then runs the VM on a user
profile that extends ``kvm`` without the hard limit -- the remedy that message names. Where the
daemon has it, the ``kvm`` profile is used as it is.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from .netns import PrivateLibvirt

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network and mount namespaces)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "virsh", "ip", "nsenter", "unshare")),
                       reason="needs libvirt-daemon-system, libvirt-clients and util-linux/iproute2"),
    pytest.mark.skipif(not (shutil.which("dnsmasq") or Path("/usr/sbin/dnsmasq").exists()),
                       reason="libvirt's NAT network needs dnsmasq (Debian dnsmasq-base)"),
]

NETWORK = "vmctl-e2e"
BRIDGE = "vmctle2e0"
CAP_SYS_RESOURCE = 24
NO_HARD_LIMIT_PROFILE = """\
# The kvm profile without <memtune><hard_limit>, for a libvirtd that lacks CAP_SYS_RESOURCE.
extends = "kvm"
description = "kvm without a memory hard limit"

[tuning]
memory_headroom_mib = ""
tcg_memory_headroom_mib = ""
"""


def _qemu_pids(lv: PrivateLibvirt) -> set[int]:
    """QEMU processes inside the private daemon's network namespace (only its guests)."""
    pids = subprocess.run(["ip", "netns", "pids", lv.ns], capture_output=True, text=True).stdout.split()
    out = set()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("qemu"):
                out.add(int(pid))
        except OSError:
            continue
    return out


def _has_capability(pid: int, cap: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return False


class NsVmctl:
    """`vmctl --mode system --connect <private daemon> --root <root>` run inside the namespace."""

    def __init__(self, lv: PrivateLibvirt, root: Path, config_home: Path):
        self.lv, self.root = lv, root
        self.env = dict(os.environ)
        self.env.update({"VMCTL_CONFIG": "/dev/null", "XDG_CONFIG_HOME": str(config_home),
                         "PYTHONUNBUFFERED": "1"})
        for var in ("VMCTL_ROOT", "VMCTL_MODE", "VMCTL_CONNECT"):
            self.env.pop(var, None)

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        argv = self.lv.ns_cmd(sys.executable, "-m", "vmctl", "--mode", "system", "--connect", self.lv.uri,
                              "--root", str(self.root), *args)
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"vmctl {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\n"
                                 f"stderr: {proc.stderr}\n{self.lv.log_tail()}")
        return proc


@pytest.fixture(scope="module")
def private_libvirt():
    """A second libvirtd in a fresh network namespace, with the NAT network `vmctl-e2e` started."""
    octet = random.randint(200, 249)
    with PrivateLibvirt() as lv:
        lv.add_nat_network(NETWORK, BRIDGE, octet)
        lv.octet = octet
        yield lv


@pytest.fixture(scope="module")
def ns_vmctl(private_libvirt):
    """vmctl against the private daemon, with a data root QEMU (libvirt-qemu) can reach."""
    root = Path(tempfile.mkdtemp(prefix="vmctl-e2e-system-", dir="/var/tmp"))
    root.chmod(0o711)  # the data root's parent is not vmctl's: QEMU must be let through
    config_home = root.with_name(root.name + "-config")
    (config_home / "vmctl" / "profiles").mkdir(parents=True)
    (config_home / "vmctl" / "profiles" / "kvm-no-hard-limit.toml").write_text(NO_HARD_LIMIT_PROFILE)
    try:
        yield NsVmctl(private_libvirt, root / "data", config_home)
    finally:
        private_libvirt.destroy_domains()  # before the files go: QEMU must not hold them
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(config_home, ignore_errors=True)


def test_system_mode_run_reach_stop_rm(ns_vmctl, private_libvirt):
    vm, lv = ns_vmctl, private_libvirt
    t0 = time.monotonic()
    vm("image", "build", "tiny", timeout=1800)

    profile = "kvm"
    if not _has_capability(lv.libvirtd.pid, CAP_SYS_RESOURCE):
        failed = vm("run", "s1", "--image", "tiny", "--network", NETWORK, "--no-wait", check=False)
        assert failed.returncode == 7, failed.stderr
        message = failed.stderr.strip()
        assert len(message.splitlines()) == 1
        assert "<memtune><hard_limit>" in message and "memory_headroom_mib" in message, message
        # run is one transaction: a VM that cannot start is not left behind
        assert vm("ls", "-a", "-q").stdout.split() == [] and lv.virsh("list", "--all", "--name").stdout.split() == []
        profile = "kvm-no-hard-limit"

    t_run = time.monotonic()
    out = vm("run", "s1", "--image", "tiny", "--network", NETWORK, "--profile", profile,
             "--timeout", "300").stdout
    run_seconds = time.monotonic() - t_run
    assert out.strip().splitlines()[-1] == "s1"

    # The domain is what system mode promises: on the libvirt network, defined on the system daemon.
    xml = lv.virsh("dumpxml", "s1").stdout
    assert f"<source network='{NETWORK}'" in xml and "type='network'" in xml
    assert ("<hard_limit" in xml) == (profile == "kvm")

    # The address comes from the DHCP lease dnsmasq gave the guest, in the network's range.
    ip = vm("ip", "s1").stdout.strip()
    addr = IPv4Address(ip)
    assert IPv4Address(f"192.168.{lv.octet}.100") <= addr <= IPv4Address(f"192.168.{lv.octet}.199"), ip
    leases = lv.virsh("net-dhcp-leases", NETWORK).stdout
    assert ip in leases, leases
    assert ip in lv.virsh("domifaddr", "s1", "--source", "lease").stdout
    # The tiny guest has no guest agent, so readiness can only have used the lease.
    assert lv.virsh("domifaddr", "s1", "--source", "agent", check=False).returncode != 0

    assert vm("exec", "s1", "--", "cat", "/etc/hostname").stdout.strip() == "s1"
    # on a libvirt network the VM has a tap libvirt counts: stats has its network traffic
    (row,) = json.loads(vm("stats", "--no-stream", "--json", "s1").stdout)
    assert row["net_rx_bytes"] > 0 and row["net_tx_bytes"] > 0, row
    (info,) = json.loads(vm("inspect", "s1").stdout)
    assert info["mode"] == "system" and info["uri"] == lv.uri and info["profile"] == profile
    assert info["ssh"]["address"] == ip and info["ssh"]["port"] == 22

    # Nothing of the network leaked into the machine's own namespace.
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0

    # libvirtd restarted while the VM runs loses nothing: the domain is persistent, QEMU kept
    # running (same pid), vmctl sees it running, reaches it and its data are still there.
    vm("exec", "s1", "--", "sh", "-c", "echo before-restart > /root/mark && sync")
    pids_before = _qemu_pids(lv)
    lv.restart_libvirtd()
    assert lv.virsh("domstate", "s1").stdout.strip() == "running"
    assert "Persistent:     yes" in lv.virsh("dominfo", "s1").stdout
    assert _qemu_pids(lv) == pids_before != set()
    assert vm("ls", "--json").stdout and json.loads(vm("ls", "--json").stdout)[0]["state"] == "running"
    assert vm("exec", "s1", "--", "cat", "/root/mark").stdout.strip() == "before-restart"

    vm("stop", "s1", timeout=120)
    assert lv.virsh("domstate", "s1").stdout.strip() == "shut off"
    vm("rm", "s1")
    assert lv.virsh("list", "--all", "--name").stdout.split() == []
    assert vm("ls", "-a", "-q").stdout.split() == []
    assert not (vm.root / "instances" / "s1").exists()
    print(f"\nsystem mode e2e: run-to-ready {run_seconds:.1f} s, whole flow {time.monotonic() - t0:.1f} s")


def test_system_mode_cloud_guest_with_a_static_address(ns_vmctl, private_libvirt, cloud_guest):
    """A cloud image on the libvirt network with ``--ip``: the seed's network-config gives the guest
    its address (no DHCP), SSH is reached there, and its qemu-guest-agent reports it too."""
    vm, lv = ns_vmctl, private_libvirt
    vm("image", "import", str(cloud_guest.bios), "cloud:sys", timeout=900)
    ip = f"192.168.{lv.octet}.50"
    vm("run", "c1", "--image", "cloud:sys", "--network", NETWORK, "--profile", "kvm-no-hard-limit",
       "--memory", "1G", "--ip", f"{ip}/24", "--gateway", f"192.168.{lv.octet}.1", "--timeout", "900", timeout=1000)
    assert vm("ip", "c1").stdout.strip() == ip
    assert f"inet {ip}/24" in vm("exec", "c1", "--", "ip", "-4", "addr").stdout
    assert ip not in lv.virsh("net-dhcp-leases", NETWORK).stdout   # not from the DHCP server
    deadline = time.monotonic() + 120
    while True:  # the agent starts with the guest's systemd; give it a moment after SSH is up
        agent = lv.virsh("domifaddr", "c1", "--source", "agent", check=False)
        if ip in agent.stdout or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert ip in agent.stdout, agent.stdout + agent.stderr
    refused = vm("create", "c2", "--image", "cloud:sys", "--ip", "10.0.0.5", "--network", NETWORK, check=False)
    assert refused.returncode == 2 and "needs a prefix" in refused.stderr
    vm("rm", "-f", "c1", timeout=300)
    vm("image", "rm", "cloud:sys")
    assert lv.virsh("list", "--all", "--name").stdout.split() == []


def test_system_mode_stack_on_its_own_libvirt_network(ns_vmctl, private_libvirt):
    """The README's stack in system mode: its network "back" becomes a libvirt network (bridge,
    dnsmasq and NAT inside the namespace) with a DHCP reservation per VM; web reaches db by name
    there; a second ``up`` changes nothing; ``down`` leaves no VM, network, disk or seed."""
    from tests.stack.test_stack_file import readme_stack

    vm, lv = ns_vmctl, private_libvirt
    vm("image", "build", "tiny", timeout=1800)
    cap = _has_capability(lv.libvirtd.pid, CAP_SYS_RESOURCE)
    # no forwarded ports in system mode (the VMs have their own addresses); the profile without
    # the hard limit where the daemon cannot raise RLIMIT_MEMLOCK (see the module doc)
    # named "shopsys": the hosted stack test may run "shop" on the machine's daemon at the same
    # time, and QEMU's cgroups are named after the domain
    text = readme_stack().replace('    ports: ["18080:80"]\n', "").replace("name: shop\n", "name: shopsys\n")
    if not cap:
        text = text.replace("    image: tiny\n", "    image: tiny\n    profile: kvm-no-hard-limit\n")
    stack = vm.root.parent / "stack"
    stack.mkdir()
    stack.chmod(0o755)
    (stack / "vmctl.yaml").write_text(text)
    f = str(stack / "vmctl.yaml")
    report = json.loads(vm("up", "-d", "-f", f, "--json", timeout=900).stdout)
    assert report["vms"] == {"db": "created", "web": "created"} and report["networks_created"] == ["vmctl-shopsys-back"]
    net = lv.virsh("net-dumpxml", "vmctl-shopsys-back").stdout
    assert "<forward mode='nat'" in net and "ip='10.213.0.10'" in net and "name='shopsys-db'" in net
    assert "type='network'" in lv.virsh("dumpxml", "shopsys-web").stdout
    assert vm("exec", "shopsys-web", "--", "cat", "/srv/www/index.html").stdout.strip() == "hello from db"
    assert vm("exec", "shopsys-web", "--", "wget", "-qO-", "http://db:8080/").stdout.strip() == "hello from db"
    assert vm("ip", "shopsys-db").stdout.strip() == "10.213.0.10"   # the lease is the reservation
    # the bridge is the namespace's, not the machine's
    bridge = next(line.split("'")[1] for line in net.splitlines() if "<bridge name=" in line)
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
    assert json.loads(vm("up", "-d", "-f", f, "--json").stdout)["vms"] == {"db": "unchanged", "web": "unchanged"}
    down = json.loads(vm("down", "-f", f, "--json", timeout=300).stdout)
    assert sorted(down["vms_removed"]) == ["shopsys-db", "shopsys-web"]
    assert down["networks_removed"] == ["vmctl-shopsys-back"]
    assert lv.virsh("list", "--all", "--name").stdout.split() == []
    assert lv.virsh("net-list", "--all", "--name").stdout.split() == [NETWORK]
    assert not list((vm.root / "instances").iterdir())


def test_system_mode_warm_clones_lease_their_own_addresses(ns_vmctl, private_libvirt):
    """A checkpoint on the system daemon, two clones restored on its libvirt network: each renews
    its DHCP lease with its own MAC and is reached at its own address with its own key."""
    vm, lv = ns_vmctl, private_libvirt
    vm("image", "build", "tiny", timeout=1800)
    profile = "kvm" if _has_capability(lv.libvirtd.pid, CAP_SYS_RESOURCE) else "kvm-no-hard-limit"
    net = ["--network", NETWORK, "--profile", profile]
    try:
        vm("run", "wsrc", "--image", "tiny", *net, "--timeout", "300")
        vm("commit", "--checkpoint", "wsrc", "tiny-warm")
        source_ip = vm("ip", "wsrc").stdout.strip()
        addresses, keys = {source_ip}, set()
        for name in ("wc1", "wc2"):
            vm("run", name, "--image", "tiny-warm", *net, "--timeout", "300")
            (info,) = json.loads(vm("inspect", name).stdout)
            assert info["warm"]["started"] == "warm", info["warm"]
            ip = info["ssh"]["address"]
            mac = vm("exec", name, "--", "cat", "/sys/class/net/eth0/address").stdout.strip()
            assert f"<mac address='{mac}'/>" in lv.virsh("dumpxml", name).stdout
            assert ip in lv.virsh("net-dhcp-leases", NETWORK).stdout and mac in lv.virsh("net-dhcp-leases", NETWORK).stdout
            assert vm("exec", name, "--", "hostname").stdout.strip() == name
            addresses.add(ip)
            keys.add(info["ssh"]["host_key"])
        assert len(addresses) == 3 and len(keys) == 2
        assert vm("exec", "wsrc", "--", "hostname").stdout.strip() == "wsrc"   # the source goes on
    finally:
        vm("rm", "-f", "wsrc", "wc1", "wc2", check=False)
    assert lv.virsh("list", "--all", "--name").stdout.split() == []
