"""A domain of a vmctl host, made fit for another host (`retarget`), and the record a host's domain
carries (`record_from_xml`): pure functions over XML, checked against libvirt's schema and against
hostile metadata (a host's domains are written by whoever controls that daemon)."""

from __future__ import annotations

import json

import pytest
from lxml import etree

from golden_cases import HOST_ADDRESS, golden_path
from vmctl.core.hostplace import MAX_RECORD, record_from_xml
from vmctl.core.plan.edits import boot_files, copied_disks, retarget
from vmctl.errors import IntegrityError

NS = "{https://vmctl.dev/xmlns/instance/1}"


def _host_xml() -> str:
    return golden_path("host-forwards").read_text()


def test_retarget_moves_paths_addresses_and_the_record(domain_rng):
    xml = _host_xml()
    new_record = json.dumps({"name": "far", "host": "h2", "ssh_host": "10.77.0.3"})
    out = retarget(xml, roots=(("/mnt/vmctl/instances", "/srv/v2/instances"),
                               ("/mnt/vmctl/images/layers", "/srv/v2/images/layers")),
                   old_address=HOST_ADDRESS, new_address="10.77.0.3", record_json=new_record)
    doc = etree.fromstring(out.encode())
    assert domain_rng.validate(doc), domain_rng.error_log
    files = doc.xpath("//source/@file | //log/@file")
    assert files and all(f.startswith("/srv/v2/instances/") for f in files), files
    args = " ".join(doc.xpath("//*[local-name()='arg']/@value"))
    assert "hostfwd=tcp:10.77.0.3:40022-:22" in args and "hostfwd=tcp:10.77.0.3:8080-:80" in args
    assert HOST_ADDRESS not in args
    meta = doc.find(f"metadata/{NS}instance")
    assert meta.find(f"{NS}ssh").get("address") == "10.77.0.3"
    assert [p.get("address") for p in meta.iter(f"{NS}port")] == ["10.77.0.3"]
    assert json.loads(meta.findtext(f"{NS}record")) == json.loads(new_record)
    # nothing else changed: moved back, it is the same document but for the record's text
    back = retarget(out, roots=(("/srv/v2/instances", "/mnt/vmctl/instances"),), old_address="10.77.0.3",
                    new_address=HOST_ADDRESS, record_json=None)
    original = etree.fromstring(xml.encode())
    original.find(f"metadata/{NS}instance/{NS}record").text = new_record
    assert etree.tostring(etree.fromstring(back.encode())) == etree.tostring(original)


def test_a_prefix_must_match_whole_directories():
    xml = _host_xml().replace("/mnt/vmctl/instances/far.qcow2", "/mnt/vmctl/instances-other/far.qcow2")
    out = retarget(xml, roots=(("/mnt/vmctl/instances", "/srv/x"),), old_address="a", new_address="b",
                   record_json=None)
    assert "/mnt/vmctl/instances-other/far.qcow2" in out and "/srv/x/far.seed.iso" in out


def test_copied_disks_are_the_writable_ones_under_the_instances_directory():
    xml = _host_xml()
    assert copied_disks(xml, "/mnt/vmctl/instances") == ("vda",)
    assert copied_disks(xml, "/elsewhere") == ()
    assert boot_files(xml) == ()


def _with_record(text: str) -> str:
    doc = etree.fromstring(_host_xml().encode())
    doc.find(f"metadata/{NS}instance/{NS}record").text = text
    return etree.tostring(doc, encoding="unicode")


def test_a_record_is_read_back_from_its_domain():
    rec = record_from_xml(_with_record(json.dumps({
        "name": "far", "uuid": "u", "mode": "hosted", "uri": "qemu+tcp://h/system", "profile": "hosted",
        "image_ref": "tiny", "image_id": "sha256:" + "a" * 64, "created": "c", "ssh_user": "root",
        "host_key": "ssh-ed25519 AAAA", "host": "h1", "ssh_host": "10.77.0.2", "layers": ["sha256:" + "b" * 64],
        "unknown_future_field": 1})), "h1:far")
    assert (rec.name, rec.host, rec.ssh_host, rec.layers) == ("far", "h1", "10.77.0.2", ["sha256:" + "b" * 64])
    plain = etree.fromstring(_host_xml().encode())
    plain.find("metadata").clear()
    assert record_from_xml(etree.tostring(plain, encoding="unicode"), "h1:x") is None   # not vmctl's


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"name": "x"}', '{"name": 5, "uuid": []}',
                                  "x" * (MAX_RECORD + 1)])
def test_a_hostile_record_is_one_integrity_error(text):
    with pytest.raises(IntegrityError) as err:
        record_from_xml(_with_record(text), "h1:far")
    assert "h1:far" in err.value.message and "\n" not in err.value.message


def test_entities_in_a_host_domain_are_not_expanded(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("do-not-read")
    xml = _host_xml().replace("<domain", f'<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{secret}">]>\n<domain', 1)
    xml = xml.replace('"name": "far"', '"name": "&x;"')
    try:
        rec = record_from_xml(xml, "h1:far")
    except (IntegrityError, etree.XMLSyntaxError):
        return
    assert rec is None or "do-not-read" not in json.dumps(rec.__dict__)
