"""libvirt resolves a layer's relative backing name from the layer's own directory, and QEMU opens
the whole chain through vmctl's ACLs alone (DAC relabelling off, so layers stay root-owned, 0440)."""

from __future__ import annotations

import json
import os
import re

import pytest

from vmctl import perms
from vmctl.storage import ImageStore, qemu_img

from storage_helpers import QEMU_USER, qemu_io, qemu_user_available

pytestmark = pytest.mark.e2e


def _domain_xml(name: str, disk, kernel=None) -> str:
    from lxml import etree

    dom = etree.Element("domain", type="qemu")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "64"
    etree.SubElement(dom, "vcpu").text = "1"
    os_ = etree.SubElement(dom, "os")
    etree.SubElement(os_, "type", arch="x86_64", machine="q35").text = "hvm"
    if kernel:
        etree.SubElement(os_, "kernel").text = str(kernel)
    # no relabelling: QEMU still runs as libvirt-qemu, and reads store files through ACLs only
    etree.SubElement(dom, "seclabel", type="none", model="dac")
    devices = etree.SubElement(dom, "devices")
    d = etree.SubElement(devices, "disk", type="file", device="disk")
    etree.SubElement(d, "driver", name="qemu", type="qcow2")
    etree.SubElement(d, "source", file=str(disk))
    etree.SubElement(d, "target", dev="vda", bus="virtio")
    return etree.tostring(dom).decode()


def test_libvirt_opens_relative_backing_chain(tmp_path, qemu_tmp, libvirtd, raw_disk):
    if not qemu_user_available():
        pytest.skip("needs root, setfacl and libvirt-qemu")
    import libvirt
    import libvirt_qemu

    root = qemu_tmp / "root"
    store = ImageStore(root, QEMU_USER)
    kernel = tmp_path / "k"
    kernel.write_bytes(b"\0" * 4096)
    store.import_image(raw_disk, "base:1", kernel=kernel, cmdline="x")
    inst = perms.private_dir(root / "instances" / "a", QEMU_USER)
    ov = inst / "disk.qcow2"
    qemu_img.create(ov, backing=store.resolve("base:1").top_layer, backing_fmt="qcow2")
    qemu_io(ov, "qcow2", "write -P 9 0 64k")
    child = store.add_layer("base:1", ov, "child:1")
    inst2 = perms.private_dir(root / "instances" / "b", QEMU_USER)
    disk = inst2 / "disk.qcow2"
    qemu_img.create(disk, backing=child.top_layer, backing_fmt="qcow2")
    perms.qemu_readable(disk, QEMU_USER, writable=True)
    before = [(p.stat().st_uid, p.stat().st_mode) for p in [*child.layers, child.kernel]]

    conn = libvirt.open("qemu:///system")
    name = f"vmctl-test-storage-{os.getpid()}"
    dom = conn.createXML(_domain_xml(name, disk, child.kernel), libvirt.VIR_DOMAIN_START_PAUSED)
    try:
        live = dom.XMLDesc(0)
        sources = re.findall(r"<source file='([^']+)'", live)
        assert sources == [str(disk), str(child.layers[1]), str(child.layers[0])]
        nodes = json.loads(libvirt_qemu.qemuMonitorCommand(
            dom, json.dumps({"execute": "query-named-block-nodes", "arguments": {"flat": True}}), 0))["return"]
        opened = {n["file"] for n in nodes if n["drv"] == "file"}
        assert opened == {str(disk), *map(str, child.layers)}
        formats = {n["node-name"]: n["ro"] for n in nodes if n["drv"] == "qcow2"}
        assert sorted(formats.values()) == [False, True, True]  # the layers are opened read-only
        during = [(p.stat().st_uid, p.stat().st_mode) for p in [*child.layers, child.kernel]]
        assert during == before  # not chowned to the QEMU user
    finally:
        dom.destroy()
    assert [(p.stat().st_uid, p.stat().st_mode) for p in [*child.layers, child.kernel]] == before
