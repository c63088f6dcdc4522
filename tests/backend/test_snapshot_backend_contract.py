"""The backend's snapshot calls against libvirt's test driver (a private node file per test)."""

from __future__ import annotations

import pytest

from vmctl.errors import NotFoundError
from vmctl.xml.snapshot import DomainSnapshot, build_snapshot

pytestmark = pytest.mark.contract

NODE = """<node>
  <domain type='test'>
    <name>snapvm</name>
    <memory>262144</memory>
    <os><type>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/var/tmp/none.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
  </domain>
</node>
"""


@pytest.fixture
def backend(tmp_path):
    from vmctl.backend import open_backend

    node = tmp_path / "node.xml"
    node.write_text(NODE)
    be = open_backend(f"test://{node}")
    yield be
    be.close()


def test_create_list_current_revert_delete(backend):
    from vmctl.backend import snapshots as bsnap

    assert bsnap.list_snapshots(backend, "snapvm") == []
    assert bsnap.current(backend, "snapvm") is None
    bsnap.create(backend, "snapvm", build_snapshot("a", memory="internal", disks={"vda": "internal"}).to_xml())
    bsnap.create(backend, "snapvm", build_snapshot("b", description="second", memory="internal",
                                                   disks={"vda": "internal"}).to_xml())
    metas = {m.name: m for m in bsnap.list_snapshots(backend, "snapvm")}
    assert set(metas) == {"a", "b"} and metas["b"].current and not metas["a"].current
    b = DomainSnapshot.from_xml(metas["b"].xml)
    assert b.parent == "a" and b.description == "second" and b.state == "running"
    assert bsnap.has_snapshot(backend, "snapvm", "a") and not bsnap.has_snapshot(backend, "snapvm", "zz")
    bsnap.revert(backend, "snapvm", "a", then="running")
    assert bsnap.current(backend, "snapvm") == "a"
    assert backend.state("snapvm").state == "running"
    bsnap.delete(backend, "snapvm", "a")
    left = bsnap.list_snapshots(backend, "snapvm")
    assert [m.name for m in left] == ["b"] and DomainSnapshot.from_xml(left[0].xml).parent is None
    with pytest.raises(NotFoundError, match="no snapshot zz"):
        bsnap.revert(backend, "snapvm", "zz", then=None)
    with pytest.raises(NotFoundError):
        bsnap.delete(backend, "snapvm", "zz")


def test_redefine_records_metadata_as_current(backend):
    from vmctl.backend import snapshots as bsnap

    bsnap.create(backend, "snapvm", build_snapshot("a", memory="internal", disks={"vda": "internal"}).to_xml())
    doc = build_snapshot("d", state="shutoff", creation_time=1795911999, parent="a", memory="no",
                         disks={"vda": "internal"}, domain_xml=backend.xml("snapvm", inactive=True))
    bsnap.redefine(backend, "snapvm", doc.to_xml(), current=True)
    assert bsnap.current(backend, "snapvm") == "d"
    got = DomainSnapshot.from_xml(bsnap.snapshot_xml(backend, "snapvm", "d"))
    assert (got.state, got.parent, got.creation_time) == ("shutoff", "a", 1795911999)
    bsnap.delete(backend, "snapvm", "d")  # (the test driver has no METADATA_ONLY)
    assert not bsnap.has_snapshot(backend, "snapvm", "d")
