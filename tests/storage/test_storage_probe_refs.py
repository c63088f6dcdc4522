"""Input format detection from header magic, and reference parsing."""

from __future__ import annotations

import subprocess

import pytest

from vmctl.errors import UsageError
from vmctl.storage import probe
from vmctl.storage.refs import parse_name, parse_reference

from storage_helpers import make_qcow2, make_raw


def test_detect_format(tmp_path):
    assert probe.detect_format(make_qcow2(tmp_path / "a.qcow2")) == "qcow2"
    assert probe.detect_format(make_raw(tmp_path / "a.img")) == "raw"
    (tmp_path / "empty.raw").write_bytes(b"")
    with pytest.raises(UsageError, match="empty"):
        probe.detect_format(tmp_path / "empty.raw")
    (tmp_path / "garbage.qcow2").write_bytes(b"this is not a disk image\n" * 100)
    with pytest.raises(UsageError, match="no qcow2 header"):
        probe.detect_format(tmp_path / "garbage.qcow2")
    (tmp_path / "x.vmdk").write_bytes(b"KDMV" + b"\0" * 1020)
    with pytest.raises(UsageError, match="VMDK"):
        probe.detect_format(tmp_path / "x.vmdk")


def test_header_sees_backing_and_data_file(tmp_path):
    base = make_qcow2(tmp_path / "base.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(tmp_path / "ov.qcow2")], check=True)
    assert probe.read_qcow2_header(tmp_path / "ov.qcow2").backing_file == str(base)
    with pytest.raises(UsageError, match="backing file"):
        probe.check_standalone_qcow2(tmp_path / "ov.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}",
                    str(tmp_path / "df.qcow2"), "1M"], check=True)
    hdr = probe.read_qcow2_header(tmp_path / "df.qcow2")
    assert hdr.data_file == str(tmp_path / "data.raw")
    with pytest.raises(UsageError, match="data file"):
        probe.check_standalone_qcow2(tmp_path / "df.qcow2")
    assert probe.check_standalone_qcow2(base).backing_file is None


@pytest.mark.parametrize("text, expected", [
    ("debian", ("debian", "latest", None, None)),
    ("debian:12", ("debian", "12", None, None)),
    ("library/debian:bookworm-1", ("library/debian", "bookworm-1", None, None)),
    ("debian@sha256:" + "a" * 64, ("debian", None, "sha256:" + "a" * 64, None)),
    ("sha256:abcd12", (None, None, None, "abcd12")),
])
def test_parse_reference(text, expected):
    r = parse_reference(text)
    assert (r.repo, r.tag, r.digest, r.id_prefix) == expected


@pytest.mark.parametrize("bad", [
    "", "Debian:", "deb ian", "a/../b", "x:y:z", "debian@sha256:abc", "sha256:ab", "-x", "a:b@c",
])
def test_bad_references(bad):
    with pytest.raises(UsageError):
        parse_reference(bad)


@pytest.mark.parametrize("path", ["./disk.qcow2", "/tmp/x", "disk.img", "~/d.raw", "foo.qcow2"])
def test_paths_are_pointed_to_import(path):
    with pytest.raises(UsageError, match="vmctl image import"):
        parse_reference(path)


def test_parse_name_refuses_digests():
    assert parse_name("web") == ("web", "latest")
    with pytest.raises(UsageError):
        parse_name("web@sha256:" + "0" * 64)
