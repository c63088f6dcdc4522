"""Round trip: libvirt's own XML for a defined domain -> model -> change a field -> XML.

The fixture tests/data/libvirt-defined-hosted.xml is ``virsh dumpxml --inactive`` of a domain vmctl
defined on libvirt 9.0 (qemu:///session): it carries what libvirt adds and vmctl never models
(emulator, controllers, PCI/drive addresses, inputs, audio, a console with a log). The test applies
the same change twice, once through the model and once by hand with lxml, and compares canonical
forms: anything else the model touched would show up as a difference.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from vmctl.core.plan import move_ssh_port
from vmctl.xml.base import VMCTL_NS
from vmctl.xml.domain import Disk, Domain

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "libvirt-defined-hosted.xml"


def _canon(el) -> bytes:
    copy = etree.fromstring(etree.tostring(el), etree.XMLParser(remove_blank_text=True))
    return etree.tostring(copy, method="c14n")


def _libvirt_tree():
    return etree.fromstring(FIXTURE.read_bytes(), etree.XMLParser(remove_blank_text=True))


def test_parse_and_serialize_unchanged_is_lossless():
    d = Domain.from_xml(FIXTURE.read_text())
    assert _canon(etree.fromstring(d.to_xml().encode())) == _canon(_libvirt_tree())


def test_change_memory_vcpus_title_keeps_everything_else():
    d = Domain.from_xml(FIXTURE.read_text())
    d.memory_mib = 2048
    d.vcpus = 4
    d.title = "renamed <&>"
    out = etree.fromstring(d.to_xml().encode())

    expected = _libvirt_tree()
    expected.find("memory").text = str(2048 * 1024)
    expected.find("currentMemory").text = str(2048 * 1024)
    expected.find("vcpu").text = "4"
    expected.find("title").text = "renamed <&>"
    assert _canon(out) == _canon(expected)


def test_adding_new_elements_lands_in_libvirt_order_among_unknown_ones():
    d = Domain.from_xml(FIXTURE.read_text())
    d.os.kernel = "/boot/vmlinuz"
    disk = Disk()
    disk.type = "file"
    disk.device = "disk"
    disk.driver_type = "qcow2"
    disk.source_file = "/data/extra.qcow2"
    disk.target_dev = "vdb"
    disk.target_bus = "virtio"
    d.devices.add(disk)
    out = etree.fromstring(d.to_xml().encode())
    assert [c.tag for c in out.find("os")] == ["type", "kernel"]
    devs = [c.tag for c in out.find("devices")]
    assert devs[:4] == ["emulator", "disk", "disk", "disk"]
    assert out.findall("devices/disk")[2].find("source").get("file") == "/data/extra.qcow2"
    # nothing else moved: removing what we added gives libvirt's document back
    out.find("os").remove(out.find("os/kernel"))
    out.find("devices").remove(out.findall("devices/disk")[2])
    assert _canon(out) == _canon(_libvirt_tree())


def test_move_ssh_port_changes_only_the_forward_and_metadata():
    xml = move_ssh_port(FIXTURE.read_text(), 40022, 41000)
    d = Domain.from_xml(xml)
    assert d.metadata.ssh_port == 41000
    assert "hostfwd=tcp:127.0.0.1:41000-:22" in d.qemu_commandline.args[1]
    assert "hostfwd=tcp:127.0.0.1:8080-:80" in d.qemu_commandline.args[1]
    expected = _libvirt_tree()
    expected.find(f"metadata/{{{VMCTL_NS}}}instance/{{{VMCTL_NS}}}ssh").set("port", "41000")
    args = expected.findall("{http://libvirt.org/schemas/domain/qemu/1.0}commandline/"
                            "{http://libvirt.org/schemas/domain/qemu/1.0}arg")
    args[1].set("value", args[1].get("value").replace(":40022-:22", ":41000-:22"))
    assert _canon(etree.fromstring(xml.encode())) == _canon(expected)


def test_move_ssh_port_on_passt_interface():
    from golden_cases import golden_path

    xml = move_ssh_port(golden_path("hosted-passt").read_text(), 40022, 40100)
    d = Domain.from_xml(xml)
    starts = [(pf.proto, r.start, r.to) for i in d.devices.interfaces
              for pf in i.port_forwards for r in pf.ranges]
    assert ("tcp", 40100, 22) in starts and ("tcp", 8443, 443) in starts
    assert ("udp", 6000, 6000) in starts
