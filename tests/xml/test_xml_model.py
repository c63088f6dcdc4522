"""Unit tests of the XML model: properties, order, escaping, lazy children, namespaces."""

from __future__ import annotations

import pytest
from lxml import etree

from vmctl.xml import (
    QEMU_NS, VMCTL_NS, Disk, Domain, Interface, RNG, Serial,
)
from vmctl.xml.base import XMLNode, insert_ordered


def test_new_domain_renders_in_libvirt_order_whatever_the_set_order():
    d = Domain()
    d.on_crash = "destroy"
    d.devices.ensure()
    d.vcpus = 2
    d.os.machine = "q35"
    d.name = "a"
    d.memory_mib = 64
    d.uuid = "00000000-0000-4000-8000-000000000000"
    tags = [c.tag for c in d.element]
    assert tags == ["name", "uuid", "memory", "currentMemory", "vcpu", "os", "on_crash", "devices"]


def test_values_are_escaped_never_formatted():
    d = Domain()
    d.name = "x"
    d.title = 'a"b\'<c>&d'
    d.description = "]]> <!-- -->"
    d.metadata.image_ref = "evil\"/><inject/>"
    xml = d.to_xml()
    assert "<inject/>" not in xml
    back = Domain.from_xml(xml)
    assert back.title == 'a"b\'<c>&d'
    assert back.description == "]]> <!-- -->"
    assert back.metadata.image_ref == "evil\"/><inject/>"


def test_lazy_child_reads_none_and_creates_on_write():
    d = Domain()
    assert not d.cpu.exists
    assert d.cpu.mode is None
    assert d.element.find("cpu") is None
    d.cpu.mode = "maximum"
    assert d.element.find("cpu").get("mode") == "maximum"


def test_memory_units_are_normalised_to_kib():
    d = Domain.from_xml("<domain><name>a</name><memory unit='GiB'>2</memory>"
                        "<currentMemory unit='MB'>1000</currentMemory></domain>")
    assert d.memory_kib == 2 * 1024 * 1024
    assert d.memory_mib == 2048
    assert d.current_memory_kib == 976562
    d.memory_mib = 512
    assert d.element.find("memory").get("unit") == "KiB"
    assert d.element.find("memory").text == "524288"
    bad = Domain.from_xml("<domain><memory unit='XB'>2</memory></domain>")
    with pytest.raises(ValueError):
        bad.memory_kib


def test_presence_and_yesno_onoff_props():
    d = Domain()
    d.features.acpi = True
    d.features.vmport = False
    assert d.element.find("features/vmport").get("state") == "off"
    assert d.features.acpi is True and d.features.apic is False
    d.features.acpi = False
    assert d.element.find("features/acpi") is None


def test_setting_none_removes():
    s = Serial()
    s.log_file = "/x"
    s.log_append = True
    s.log_append = None
    assert s.element.find("log").get("append") is None
    s.log_file = None
    assert s.element.find("log").get("file") is None
    d = Domain()
    d.title = "t"
    d.title = None
    assert d.element.find("title") is None


def test_int_props_type_checked():
    d = Domain()
    with pytest.raises(TypeError):
        d.vcpus = "2"
    with pytest.raises(TypeError):
        d.vcpus = True


def test_devices_are_added_after_their_kind_and_before_later_kinds():
    d = Domain.from_xml(
        "<domain><devices><emulator>/q</emulator><disk type='file' device='disk'><target dev='vda'/></disk>"
        "<controller type='sata' index='0'/><unknown-device/><serial type='pty'/>"
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng></devices></domain>")
    disk = Disk()
    disk.target_dev = "vdb"
    d.devices.add(disk)
    iface = Interface()
    iface.type = "network"
    iface.source_network = "default"
    d.devices.add(iface)
    tags = [c.tag for c in d.devices.element]
    assert tags == ["emulator", "disk", "disk", "controller", "interface", "unknown-device",
                    "serial", "rng"]
    assert [x.target_dev for x in d.devices.disks] == ["vda", "vdb"]


def test_insert_ordered_keeps_unknown_children_in_place():
    parent = etree.fromstring("<p><a/><x/><c/></p>")
    insert_ordered(parent, etree.Element("b"), ("a", "b", "c"))
    assert [c.tag for c in parent] == ["a", "b", "x", "c"]
    insert_ordered(parent, etree.Element("z"), ("a", "b", "c"))
    assert [c.tag for c in parent][-1] == "z"
    parent = etree.fromstring("<p><c/></p>")
    insert_ordered(parent, etree.Element("a"), ("a", "b", "c"))
    assert [c.tag for c in parent] == ["a", "c"]


def test_qemu_commandline_args_and_namespace():
    d = Domain(qemu_namespace=True)
    d.name = "a"
    d.qemu_commandline.args = ["-netdev", "user,id=n0"]
    xml = d.to_xml()
    assert xml.count(f'xmlns:qemu="{QEMU_NS}"') == 1
    assert Domain.from_xml(xml).qemu_commandline.args == ["-netdev", "user,id=n0"]
    d.qemu_commandline.args = ["-s"]
    assert Domain.from_xml(d.to_xml()).qemu_commandline.args == ["-s"]
    # a parsed domain without the namespace gets it declared where needed
    plain = Domain.from_xml("<domain><name>b</name><devices/></domain>")
    plain.qemu_commandline.args = ["-S"]
    again = Domain.from_xml(plain.to_xml())
    assert again.qemu_commandline.args == ["-S"]
    assert again.element[-1].tag == f"{{{QEMU_NS}}}commandline"


def test_metadata_accessors():
    d = Domain()
    m = d.metadata
    m.image_ref = "debian:12"
    m.image_id = "sha256:" + "0" * 64
    m.mode = "hosted"
    m.profile = "hosted"
    m.state = "creating"
    m.created = "2026-01-01T00:00:00Z"
    m.ssh_address = "127.0.0.1"
    m.ssh_port = 2222
    m.ssh_host_key = "ssh-ed25519 AAAA k"
    m.add_port("tcp", "127.0.0.1", 8080, 80)
    m.add_port("udp", "127.0.0.1", 5353, 53)
    xml = d.to_xml()
    assert xml.count(f'xmlns:vmctl="{VMCTL_NS}"') == 1
    back = Domain.from_xml(xml).metadata
    assert (back.ssh_port, back.ssh_host_key, back.state, back.created) == \
        (2222, "ssh-ed25519 AAAA k", "creating", "2026-01-01T00:00:00Z")
    assert [(p.proto, p.host_address, p.host_port, p.guest_port) for p in back.ports] == \
        [("tcp", "127.0.0.1", 8080, 80), ("udp", "127.0.0.1", 5353, 53)]
    back.state = "created"
    assert back.created == "2026-01-01T00:00:00Z"
    back.clear_ports()
    assert back.ports == []


def test_foreign_metadata_is_kept_next_to_ours():
    d = Domain.from_xml("<domain><name>a</name><metadata><other:x xmlns:other='urn:o'>1</other:x>"
                        "</metadata></domain>")
    d.metadata.mode = "system"
    xml = d.to_xml()
    assert "urn:o" in xml and "<other:x" in xml
    assert Domain.from_xml(xml).metadata.mode == "system"


def test_from_xml_refuses_other_roots_and_entities():
    with pytest.raises(ValueError):
        Domain.from_xml("<network/>")
    evil = ('<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            "<domain><name>&e;</name></domain>")
    d = Domain.from_xml(evil)
    assert "root:" not in (d.name or "")


def test_rng_text_and_attrs():
    r = RNG()
    r.model = "virtio"
    r.backend_model = "random"
    r.backend_device = "/dev/urandom"
    r.rate_bytes = 10
    r.rate_period = 1000
    assert [c.tag for c in r.element] == ["rate", "backend"]
    assert r.backend_device == "/dev/urandom"


def test_remove_detaches_device():
    d = Domain.from_xml("<domain><devices><disk/><disk/></devices></domain>")
    d.devices.disks[0].remove()
    assert len(d.devices.disks) == 1


def test_node_repr_and_exists():
    node = XMLNode(etree.Element("x"))
    assert node.exists
    assert "absent" in repr(Domain().cpu)
