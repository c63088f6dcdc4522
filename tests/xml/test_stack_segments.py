"""A stack VM's domain: its private-network NICs, valid against libvirt's schema."""

from __future__ import annotations

from dataclasses import replace

import pytest
from lxml import etree

from vmctl.core.plan import Segment, plan_domain
from vmctl.errors import UsageError
from vmctl.profiles import load_profile

SEG = Segment("52:54:00:0a:0b:0c", group="239.255.10.20", port=42100)


def test_hosted_segments_are_multicast_netdevs_on_loopback_after_the_user_nic(hosted, inputs, domain_rng):
    two = (SEG, Segment("52:54:00:0a:0b:0d", group="239.255.10.21", port=42101))
    d = plan_domain(hosted, replace(inputs, segments=two))
    args = d.qemu_commandline.args
    # the user NIC is function 0 of its slot (so the guest's first interface), the segments 1 and 2
    assert "addr=0x1c.0,multifunction=on" in args[3]
    assert args[4:6] == ["-netdev", "socket,id=vmctls1,mcast=239.255.10.20:42100,localaddr=127.0.0.1"]
    assert "netdev=vmctls1,bus=pcie.0,addr=0x1c.1,mac=52:54:00:0a:0b:0c" in args[7]
    assert args[8:10] == ["-netdev", "socket,id=vmctls2,mcast=239.255.10.21:42101,localaddr=127.0.0.1"]
    assert "addr=0x1c.2" in args[11]
    assert domain_rng.validate(etree.fromstring(d.to_xml().encode())), domain_rng.error_log


def test_segments_keep_the_commandline_nic_even_where_passt_works(hosted, inputs):
    d = plan_domain(hosted, replace(inputs, restrict=False, passt_supported=True, segments=(SEG,)))
    assert d.devices.interfaces == [] and "mcast=" in " ".join(d.qemu_commandline.args)


def test_without_segments_the_user_nic_is_as_before(hosted, inputs):
    args = plan_domain(hosted, inputs).qemu_commandline.args
    assert "multifunction" not in args[3] and len(args) == 4


def test_system_segments_are_interfaces_on_libvirt_networks(test_profiles, inputs, domain_rng):
    p = load_profile("kvm")
    i = replace(inputs, mode="system", network="network", network_name="vmctl-shop-front", ports=(),
                ssh_host_port=None, mac="52:54:00:01:02:03",
                segments=(Segment("52:54:00:01:02:04", network="vmctl-shop-back"),))
    d = plan_domain(p, i)
    nets = [(x.type, x.source_network, x.mac) for x in d.devices.interfaces]
    assert nets == [("network", "vmctl-shop-front", "52:54:00:01:02:03"),
                    ("network", "vmctl-shop-back", "52:54:00:01:02:04")]
    assert domain_rng.validate(etree.fromstring(d.to_xml().encode())), domain_rng.error_log


@pytest.mark.parametrize("segments, match", [
    ((SEG,) * 5, "at most 4"),
    ((SEG, SEG), "repeated MAC"),
    ((Segment("52:54:00:0a:0b:0c", group="10.0.0.1", port=42100),), "invalid multicast"),
    ((Segment("52:54:00:0a:0b:0c", group="239.1.1.1", port=80),), "invalid multicast"),
    ((Segment("52:54:00:0a:0b:0c", group="239.1.1.1,localaddr=0.0.0.0", port=42100),), "invalid multicast group"),
    ((Segment("52:54:00:0a:0b:0c", network="x'/><evil"),), "network name"),
    ((Segment("52:54:00:0A:0B:0C", group="239.1.1.1", port=42100),), "MAC"),
])
def test_bad_segments_are_refused(hosted, inputs, segments, match):
    with pytest.raises(UsageError, match=match):
        plan_domain(hosted, replace(inputs, segments=segments))
