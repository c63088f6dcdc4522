"""The qemu-img wrapper: explicit formats, JSON parsed, failures carry qemu-img's message."""

from __future__ import annotations

import pytest

from vmctl.errors import ExternalToolError
from vmctl.storage import qemu_img

from storage_helpers import make_qcow2, make_raw, qemu_io


def test_create_info_overlay_always_names_backing_format(tmp_path):
    base = tmp_path / "base.qcow2"
    qemu_img.create(base, 32 << 20)
    info = qemu_img.info(base, "qcow2")
    assert info["format"] == "qcow2" and info["virtual-size"] == 32 << 20
    with pytest.raises(ValueError):
        qemu_img.create(tmp_path / "ov.qcow2", backing=base)
    qemu_img.create(tmp_path / "ov.qcow2", backing="base.qcow2", backing_fmt="qcow2")
    chain = qemu_img.info(tmp_path / "ov.qcow2", "qcow2", backing_chain=True)
    assert [c["filename"] for c in chain] == [str(tmp_path / "ov.qcow2"), str(base)]
    assert chain[0]["backing-filename"] == "base.qcow2"
    assert chain[0]["backing-filename-format"] == "qcow2"


def test_info_never_probes(tmp_path):
    # a raw disk whose first sector looks like a qcow2 header stays raw
    evil = tmp_path / "evil.raw"
    make_qcow2(tmp_path / "inner.qcow2")
    evil.write_bytes((tmp_path / "inner.qcow2").read_bytes()[:4096] + b"\0" * (1 << 20))
    assert qemu_img.info(evil, "raw")["format"] == "raw"


def test_failure_raises_with_qemu_img_message(tmp_path):
    with pytest.raises(ExternalToolError) as exc:
        qemu_img.info(tmp_path / "missing.qcow2", "qcow2")
    assert exc.value.tool == "qemu-img"
    assert "No such file" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_convert_progress_check_measure_resize_rebase(tmp_path):
    raw = make_raw(tmp_path / "d.raw", size=16 << 20)
    seen = []
    qemu_img.convert(raw, tmp_path / "d.qcow2", src_fmt="raw", progress=seen.append)
    assert seen and seen[-1] == 100.0 and seen == sorted(seen)
    report = qemu_img.check(tmp_path / "d.qcow2")
    assert qemu_img.is_clean(report)
    m = qemu_img.measure(raw, "raw")
    assert m["required"] > 0 and m["fully-allocated"] >= m["required"]
    qemu_img.resize(tmp_path / "d.qcow2", 32 << 20)
    assert qemu_img.info(tmp_path / "d.qcow2", "qcow2")["virtual-size"] == 32 << 20
    qemu_img.create(tmp_path / "o.qcow2", backing="d.qcow2", backing_fmt="qcow2")
    qemu_img.rebase(tmp_path / "o.qcow2", "other.qcow2", "qcow2", unsafe=True)
    assert qemu_img.info(tmp_path / "o.qcow2", "qcow2")["backing-filename"] == "other.qcow2"
    qemu_img.rebase(tmp_path / "o.qcow2", "", None, unsafe=True)
    assert "backing-filename" not in qemu_img.info(tmp_path / "o.qcow2", "qcow2")


def test_check_reports_corruption_without_raising(tmp_path):
    img = make_qcow2(tmp_path / "c.qcow2")
    data = bytearray(img.read_bytes())
    # point the refcount table somewhere absurd: qemu-img check must report, not crash us
    data[48:56] = (1 << 40).to_bytes(8, "big")
    img.write_bytes(bytes(data))
    report = qemu_img.check(img)
    assert report["corruptions"] > 0 and report["exit-status"] == 2
    assert not qemu_img.is_clean(report)


def test_no_backing_spec_checks_layer_away_from_its_parent(tmp_path):
    (tmp_path / "a").mkdir()
    base = tmp_path / "a" / "base.qcow2"
    qemu_img.create(base, 8 << 20)
    ov = tmp_path / "a" / "ov.qcow2"
    qemu_img.create(ov, backing="base.qcow2", backing_fmt="qcow2")
    qemu_io(ov, "qcow2", "write -P 7 0 64k")
    moved = tmp_path / "ov.qcow2"
    ov.rename(moved)
    with pytest.raises(ExternalToolError):
        qemu_img.check(moved)  # the relative backing name no longer resolves
    assert qemu_img.is_clean(qemu_img.check(qemu_img.no_backing_spec(moved), spec=True))


def test_bad_option_values_rejected():
    with pytest.raises(ValueError):
        qemu_img._options({"backing_file": "x,driver=ssh"})
    with pytest.raises(ValueError):
        qemu_img.info("x", "vmdk")
