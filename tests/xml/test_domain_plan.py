"""plan_domain's decisions beyond the golden files: network rendering, CPU, limits, refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vmctl.core.plan import mac_from_uuid, plan_domain, user_netdev_args
from vmctl.core.ports import parse_port
from vmctl.errors import UsageError
from vmctl.profiles import load_profile


def test_commandline_network_when_no_passt(hosted, inputs):
    d = plan_domain(hosted, replace(inputs, restrict=False))
    args = d.qemu_commandline.args
    assert args[0] == "-netdev" and args[2] == "-device"
    assert "restrict=on" not in args[1]
    assert args[1].startswith("user,id=vmctl0,hostfwd=tcp:127.0.0.1:40022-:22,")
    assert "bus=pcie.0,addr=0x1c" in args[3]
    assert f"mac={mac_from_uuid(inputs.uuid)}" in args[3]
    assert d.devices.interfaces == []


def test_restrict_wins_over_passt(hosted, inputs):
    d = plan_domain(hosted, replace(inputs, passt_supported=True, restrict=True))
    assert "restrict=on" in d.qemu_commandline.args[1]
    assert d.devices.interfaces == []


def test_passt_interface(hosted, inputs):
    d = plan_domain(hosted, replace(inputs, passt_supported=True, restrict=False))
    assert not d.qemu_commandline.exists
    (iface,) = d.devices.interfaces
    assert iface.type == "user" and iface.backend_type == "passt"
    assert all(pf.address == "127.0.0.1" for pf in iface.port_forwards)
    assert "xmlns:qemu" not in d.to_xml()


def test_i440fx_machine_uses_pci0(test_profiles, inputs):
    p = load_profile("hosted")
    p = replace(p, machine=replace(p.machine, machine="pc"))
    assert "bus=pci.0" in user_netdev_args(p, inputs, "52:54:00:00:00:01")[3]


def test_cpu_mode_follows_virt_type(hosted, inputs):
    assert plan_domain(hosted, replace(inputs, virt_type="kvm")).cpu.mode == "host-passthrough"
    assert plan_domain(hosted, replace(inputs, virt_type="qemu")).cpu.mode == "maximum"
    assert plan_domain(hosted, replace(inputs, virt_type="kvm")).type == "kvm"


def test_memory_hard_limit_headroom_depends_on_accelerator(test_profiles, inputs):
    kvm = load_profile("kvm")
    net = dict(network="network", network_name="default", ssh_host_port=None, ports=(),
               restrict=False)
    a = plan_domain(kvm, replace(inputs, virt_type="kvm", memory_mib=1024, **net))
    b = plan_domain(kvm, replace(inputs, virt_type="qemu", memory_mib=1024, **net))
    assert a.memtune_hard_limit_kib == (1024 + 512) * 1024
    assert b.memtune_hard_limit_kib == (1024 + 1536) * 1024
    assert a.cpu_quota == 100_000 and a.cpu_period == 100_000


def test_graphics_only_on_loopback(test_profiles, inputs):
    d = plan_domain(load_profile("vnc"), inputs)
    (g,) = d.devices.graphics
    assert g.listen == "127.0.0.1" and g.listen_address == "127.0.0.1"
    assert plan_domain(load_profile("hosted"), inputs).devices.graphics == []


def test_metadata(hosted, inputs):
    m = plan_domain(hosted, inputs).metadata
    assert (m.image_ref, m.mode, m.profile, m.state, m.ssh_port) == \
        ("debian:12", "hosted", "hosted", "creating", 40022)
    assert [(p.host_port, p.guest_port, p.proto) for p in m.ports] == [(8080, 80, "tcp"),
                                                                      (5353, 53, "udp")]


def test_deterministic(hosted, inputs):
    assert plan_domain(hosted, inputs).to_xml() == plan_domain(hosted, inputs).to_xml()


@pytest.mark.parametrize("change,match", [
    (dict(name="a b"), "invalid VM name"),
    (dict(name='x"><y'), "invalid VM name"),
    (dict(uuid="nope"), "invalid uuid"),
    (dict(virt_type="xen"), "domain type"),
    (dict(mode="cloud"), "invalid mode"),
    (dict(cpus=0), "CPU count"),
    (dict(memory_mib=1), "memory size"),
    (dict(disk="relative.qcow2"), "absolute"),
    (dict(boot_kind="pxe"), "boot kind"),
    (dict(boot_kind="kernel", kernel=None), "needs a kernel"),
    (dict(firmware="coreboot"), "firmware"),
    (dict(mac="00:11:22:33:44:55"), "MAC"),
    (dict(ssh_host_key="a\nb"), "one public key line"),
    (dict(ssh_host_port=None), "SSH forward"),
    (dict(ports=(parse_port("40022:80"),)), "SSH"),
    (dict(ports=(parse_port("8080:80"), parse_port("8080:81"))), "same host port"),
    (dict(network="network", network_name="a/b"), "network name"),
    (dict(network="bridge", network_name="br0;rm"), "bridge name"),
    (dict(network="vde"), "network kind"),
    (dict(network="network", network_name="default"), "need user-mode"),
    (dict(state="half"), "creation state"),
])
def test_refused_inputs(hosted, inputs, change, match):
    with pytest.raises(UsageError, match=match):
        plan_domain(hosted, replace(inputs, **change))


def test_warm_clone_domain_is_schema_valid(hosted, inputs, domain_rng):
    """A clone of a checkpoint: the checkpoint's exact machine type, a new VM generation ID, and the
    port of vmctl's guest agent beside QEMU's."""
    from lxml import etree

    from vmctl.core.plan.devices import GUEST_AGENT_CHANNEL, VMCTL_AGENT_CHANNEL

    d = plan_domain(hosted, replace(inputs, genid="1e38322a-9f6c-4775-903c-c9f28d8e43d7", agent_channel=True,
                                    machine="pc-q35-7.2"))
    doc = etree.fromstring(d.to_xml().encode())
    assert domain_rng.validate(doc), domain_rng.error_log
    assert doc.findtext("genid") == "1e38322a-9f6c-4775-903c-c9f28d8e43d7"
    assert doc.find("os/type").get("machine") == "pc-q35-7.2"
    assert [c.find("target").get("name") for c in doc.iterfind("devices/channel")] == \
        [GUEST_AGENT_CHANNEL, VMCTL_AGENT_CHANNEL]
