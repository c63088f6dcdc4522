"""The fleet lab itself (tests/e2e/fleet_lab.py): two libvirt hosts, each in its own network and
mount namespace, reached over qemu+tcp:// from the client namespace and from each other; each
host's data root is visible only inside it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .fleet_lab import FleetLab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network and mount namespaces)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "virsh", "ip", "nsenter", "unshare")),
                       reason="needs libvirt-daemon-system, libvirt-clients and util-linux/iproute2"),
]


@pytest.fixture(scope="module")
def lab():
    with FleetLab(2, roots=["/mnt/vmctl", "/mnt/vmctl2"]) as lab:
        yield lab


def test_hosts_answer_over_tcp_from_the_client_namespace_only(lab):
    h1, h2 = lab.hosts
    assert (h1.name, h1.address, h1.uri) == ("h1", "10.77.0.2", "qemu+tcp://10.77.0.2/system")
    assert (h2.name, h2.address, h2.uri) == ("h2", "10.77.0.3", "qemu+tcp://10.77.0.3/system")
    for host in lab.hosts:
        assert lab.remote_virsh(host, "uri").stdout.strip() == host.uri
        assert "QEMU" in lab.client_run("virsh", "-c", host.uri, "version").stdout
        assert host.virsh("uri").stdout.strip().startswith("qemu+unix:///system?socket=")  # the unix socket too
    # host to host on the segment (migration's path)
    assert subprocess.run(h1.ns_cmd("virsh", "-c", h2.uri, "uri"), capture_output=True, text=True,
                          timeout=30).stdout.strip() == h2.uri
    # (never probed from the machine's namespace: traffic to the lab's addresses stays in the lab)


def test_data_roots_are_visible_only_inside_each_host(lab):
    h1, h2 = lab.hosts
    assert (h1.root, h2.root) == ("/mnt/vmctl", "/mnt/vmctl2")
    assert h1.outside_root != h2.outside_root and h1.outside_root.name == "vmctl"
    for host in lab.hosts:  # a pool and a volume in the data root, made by the host's daemon
        pool = f"probe-{host.name}"
        lab.remote_virsh(host, "pool-define-as", pool, "dir", "--target", f"{host.root}/probe")
        try:
            lab.remote_virsh(host, "pool-build", pool)
            lab.remote_virsh(host, "pool-start", pool)
            lab.remote_virsh(host, "vol-create-as", pool, "v.qcow2", "1M", "--format", "qcow2")
            assert (host.outside_root / "probe" / "v.qcow2").is_file()
        finally:
            lab.remote_virsh(host, "pool-destroy", pool, check=False)
            lab.remote_virsh(host, "pool-undefine", pool, check=False)
        assert not Path(host.root).exists()  # not in the machine's mount namespace
    assert not (h1.outside(h2.root)).exists() and not (h2.outside(h1.root)).exists()
