"""Model and unit tests for snapshots: the <domainsnapshot> XML (validated against libvirt's schema),
names, disk modes, the space check, the tree, the CLI's option rules and image history."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from vmctl.errors import ResourceError, UsageError
from vmctl.xml.snapshot import DomainSnapshot, build_snapshot

SNAPSHOT_RNG = Path("/usr/share/libvirt/schemas/domainsnapshot.rng")
DOMAIN_XML = Path(__file__).resolve().parent.parent / "data" / "libvirt-defined-hosted.xml"


@pytest.fixture(scope="module")
def rng() -> etree.RelaxNG:
    if not SNAPSHOT_RNG.is_file():
        pytest.fail(f"{SNAPSHOT_RNG} is missing (install libvirt-daemon / libvirt-clients)")
    return etree.RelaxNG(file=str(SNAPSHOT_RNG))


def _valid(rng, xml: str) -> bool:
    return rng.validate(etree.fromstring(xml.encode()))


def test_memory_snapshot_document_is_valid(rng):
    doc = build_snapshot("s1", description="known good", memory="internal",
                         disks={"vda": "internal", "sda": "no"})
    xml = doc.to_xml()
    assert _valid(rng, xml), rng.error_log
    assert xml == (
        "<domainsnapshot>\n  <name>s1</name>\n  <description>known good</description>\n"
        "  <memory snapshot=\"internal\"/>\n  <disks>\n    <disk name=\"vda\" snapshot=\"internal\"/>\n"
        "    <disk name=\"sda\" snapshot=\"no\"/>\n  </disks>\n</domainsnapshot>\n"
    )


def test_redefine_document_with_domain_is_valid_and_ordered(rng):
    doc = build_snapshot("d1", state="shutoff", creation_time=1795911999, parent="s1", memory="no",
                         disks={"vda": "internal", "sda": "no"}, domain_xml=DOMAIN_XML.read_text())
    xml = doc.to_xml()
    assert _valid(rng, xml), rng.error_log
    tags = [el.tag for el in etree.fromstring(xml.encode())]
    assert tags == ["name", "state", "creationTime", "parent", "memory", "disks", "domain"]
    back = DomainSnapshot.from_xml(xml)
    assert (back.name, back.state, back.creation_time, back.parent, back.memory) == (
        "d1", "shutoff", 1795911999, "s1", "no")
    assert back.disk_modes() == {"vda": "internal", "sda": "no"}
    assert back.domain is not None and back.domain.findtext("name")
    # replacing the domain keeps one
    back.set_domain(DOMAIN_XML.read_text())
    assert len(back.element.findall("domain")) == 1
    assert DomainSnapshot.from_xml(back.to_xml()).to_xml() == back.to_xml()


def test_text_is_escaped_not_formatted(rng):
    nasty = "a <b> & 'c' \"d\" ]]> </description><name>x</name>"
    xml = build_snapshot("s1", description=nasty).to_xml()
    assert _valid(rng, xml)
    assert DomainSnapshot.from_xml(xml).description == nasty
    assert DomainSnapshot.from_xml(xml).name == "s1"


@pytest.mark.parametrize("xml", [
    "<domainsnapshot><state>bogus</state></domainsnapshot>",
    "<domainsnapshot><memory snapshot='sideways'/></domainsnapshot>",
    "<domainsnapshot><disks><disk snapshot='internal'/></disks></domainsnapshot>",
    "<domainsnapshot><parent><name>a</name></parent><parent><name>b</name></parent></domainsnapshot>",
])
def test_invalid_documents_fail_the_schema(rng, xml):
    assert not _valid(rng, xml)


def test_builder_refuses_unknown_modes():
    with pytest.raises(ValueError):
        build_snapshot("s", state="bogus")
    with pytest.raises(ValueError):
        build_snapshot("s", memory="external")
    with pytest.raises(ValueError):
        build_snapshot("s", disks={"vda": "sideways"})
    with pytest.raises(ValueError):
        build_snapshot("s").set_domain("<notadomain/>")


def test_parse_of_libvirt_output_keeps_unmodelled_elements():
    xml = ("<domainsnapshot><name>a</name><state>running</state><creationTime>5</creationTime>"
           "<memory snapshot='internal'/><disks><disk name='vda' snapshot='internal'/></disks>"
           "<cookie><cpu mode='custom'/></cookie><active>1</active></domainsnapshot>")
    doc = DomainSnapshot.from_xml(xml)
    doc.description = "added"
    out = doc.to_xml()
    assert "<cookie>" in out and "<active>1</active>" in out and "<description>added</description>" in out
    assert out.index("<description>") < out.index("<state>")


@pytest.mark.parametrize("name", ["vmctl-tmp-x", "a/b", "..", "a b", "", "-x", "x" * 65])
def test_snapshot_names_follow_the_name_rule(name):
    from vmctl.core.snapshot_records import check_snapshot_name

    with pytest.raises(UsageError):
        check_snapshot_name(name)


def test_disk_modes():
    from vmctl.core.snapshots import _disk_modes, _disks
    from vmctl.xml.domain import Disk

    disks = _disks(DOMAIN_XML.read_text())
    modes = _disk_modes(disks)
    assert "internal" in modes.values()
    assert all(m == "no" for d, m in zip(disks, modes.values()) if d.readonly)
    raw = Disk()
    raw.target_dev, raw.source_file, raw.driver_type = "vdb", "/x.raw", "raw"
    with pytest.raises(UsageError, match="qcow2"):
        _disk_modes([raw])


def test_space_check(tmp_path):
    import subprocess
    from types import SimpleNamespace

    from vmctl.core import snapshots

    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mnt)], check=True)
    try:
        inst = SimpleNamespace(directory=mnt, on_host=False)
        with pytest.raises(ResourceError, match="not enough disk space.*nothing was changed"):
            snapshots._check_space(inst, 300 * snapshots.MIB, "a memory snapshot of x")
        snapshots._check_space(inst, 5 * snapshots.MIB, "a disk snapshot of x")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_tree_orders_children_after_parents():
    from vmctl.core.snapshots import tree

    rows = [{"name": n, "parent": p} for n, p in
            [("a", None), ("b", "a"), ("c", "a"), ("d", "b"), ("e", "gone")]]
    assert [(d, r["name"]) for d, r in tree(rows)] == [(0, "a"), (1, "b"), (2, "d"), (1, "c"), (0, "e")]


def test_cli_memory_and_disk_only_exclude_each_other(cli_run):
    result = cli_run("snapshot", "create", "vm1", "s1", "--memory", "--disk-only")
    assert result.exit_code == UsageError.exit_code
    assert "exclude each other" in result.stderr


def test_cli_registers_commands(cli_run):
    for args in (["snapshot", "--help"], ["commit", "--help"], ["image", "history", "--help"]):
        assert cli_run(*args).exit_code == 0


def test_convert_arguments(monkeypatch, tmp_path):
    from vmctl.core import commit
    from vmctl.storage import qemu_img

    seen = []
    monkeypatch.setattr(qemu_img, "run", lambda args, **kw: seen.append(list(args)))
    commit.convert_disk(tmp_path / "d.qcow2", tmp_path / "o.qcow2", snapshot="s1",
                        backing=tmp_path / "p.qcow2", force_share=True)
    args = seen[0]
    assert args[:3] == ["convert", "-f", "qcow2"] and "-U" in args
    assert args[args.index("-l") + 1] == "snapshot.name=s1"
    assert args[args.index("-B") + 1:args.index("-B") + 4] == [str(tmp_path / "p.qcow2"), "-F", "qcow2"]
    with pytest.raises(UsageError):
        commit.convert_disk(tmp_path / "d", tmp_path / "o", snapshot="a,b=c")
