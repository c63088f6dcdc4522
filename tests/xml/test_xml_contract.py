"""Contract tests on libvirt's test driver: every golden XML is accepted with VALIDATE, and a
parse -> change -> redefine cycle through vmctl's model keeps everything vmctl does not model.

Each test opens its own ``test:///default`` connection, so tests share no state.
"""

from __future__ import annotations

import pytest
from lxml import etree

from golden_cases import golden_files
from vmctl.xml.domain import Domain

libvirt = pytest.importorskip("libvirt")

pytestmark = pytest.mark.contract

# libvirt 9.0.0 announces passt in its NEWS but its parser rejects <backend type='passt'>
# ("Invalid value for attribute 'type' in element 'backend'", libvirt issue #462). vmctl renders
# passt only when the backend says the daemon supports it; on such a daemon these files must define.
PASST_CASES = {"hosted-passt.xml"}


@pytest.fixture
def conn():
    c = libvirt.open("test:///default")
    yield c
    c.close()


def _passt_parses(conn) -> bool:
    xml = ("<domain type='qemu'><name>passt-probe</name><memory>65536</memory><os><type>hvm</type>"
           "</os><devices><interface type='user'><backend type='passt'/></interface></devices>"
           "</domain>")
    try:
        conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE).undefine()
        return True
    except libvirt.libvirtError:
        return False


def _define(conn, xml: str):
    return conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: p.name)
def test_golden_defines_with_validate(conn, path):
    xml = path.read_text()
    if path.name in PASST_CASES and not _passt_parses(conn):
        # this daemon predates the passt backend: what is checked is that it refuses it loudly
        # (vmctl then uses user-mode networking instead, see test_domain_plan)
        with pytest.raises(libvirt.libvirtError, match="passt"):
            _define(conn, xml)
        return
    dom = _define(conn, xml)
    model = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    ours = Domain.from_xml(xml)
    assert model.name == ours.name and model.uuid == ours.uuid
    assert model.memory_kib == ours.memory_kib and model.vcpus == ours.vcpus
    # vmctl's metadata comes back intact
    assert model.metadata.image_ref == ours.metadata.image_ref
    assert model.metadata.state == ours.metadata.state
    assert model.metadata.ssh_port == ours.metadata.ssh_port
    assert model.metadata.ssh_host_key == ours.metadata.ssh_host_key
    assert [(p.host_port, p.guest_port, p.proto) for p in model.metadata.ports] == \
        [(p.host_port, p.guest_port, p.proto) for p in ours.metadata.ports]
    # every device vmctl wrote is still there
    assert len(model.devices.disks) == len(ours.devices.disks)
    assert len(model.devices.interfaces) == len(ours.devices.interfaces)
    assert len(model.devices.graphics) == len(ours.devices.graphics)


def _tags(el) -> list[str]:
    return [c.tag for c in el if isinstance(c.tag, str)]


@pytest.mark.parametrize("path", [p for p in golden_files() if p.name not in PASST_CASES],
                         ids=lambda p: p.name)
def test_model_order_is_libvirts_order(conn, path):
    """The order vmctl renders elements in is the order libvirt formats them."""
    xml = path.read_text()
    back = etree.fromstring(_define(conn, xml).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    ours = etree.fromstring(xml.encode())
    for xpath in (".", "devices", "os", "cputune", "features", "clock"):
        mine = ours.find(xpath) if xpath != "." else ours
        theirs = back.find(xpath) if xpath != "." else back
        if mine is None:
            continue
        known = [t for t in _tags(mine) if t in set(_tags(theirs))]
        libvirt_order = [t for t in _tags(theirs) if t in set(known)]
        dedup = lambda seq: [t for i, t in enumerate(seq) if i == 0 or seq[i - 1] != t]  # noqa: E731
        assert dedup(known) == dedup(libvirt_order), f"{path.name} <{xpath}>"
    for disk_ours, disk_theirs in zip(ours.findall("devices/disk"), back.findall("devices/disk")):
        known = [t for t in _tags(disk_ours) if t in _tags(disk_theirs)]
        assert known == [t for t in _tags(disk_theirs) if t in known]


@pytest.mark.parametrize("path", [p for p in golden_files() if p.name not in PASST_CASES],
                         ids=lambda p: p.name)
def test_change_and_redefine_keeps_unknown_elements(conn, path):
    first = _define(conn, path.read_text())
    libvirt_xml = first.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    before = etree.fromstring(libvirt_xml.encode())
    d = Domain.from_xml(libvirt_xml)
    d.memory_mib = 1536
    d.vcpus = 3
    d.title = "changed & <escaped> \"title\""
    d.metadata.state = "created"
    second = _define(conn, d.to_xml())
    after = etree.fromstring(second.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    assert after.findtext("title") == "changed & <escaped> \"title\""
    assert after.findtext("vcpu") == "3"
    assert Domain(after).memory_mib == 1536
    assert Domain(after).metadata.state == "created"
    # what libvirt added and vmctl does not model (controllers, addresses, emulator, inputs...)
    for xpath in ("devices/controller", "devices/emulator", "devices/input", ".//address",
                  "devices/console", "devices/memballoon"):
        assert len(after.findall(xpath)) == len(before.findall(xpath)), xpath
    for ctrl_b, ctrl_a in zip(before.findall("devices/controller"), after.findall("devices/controller")):
        assert etree.tostring(ctrl_b) == etree.tostring(ctrl_a)
