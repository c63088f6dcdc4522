"""Derived layers with relative backing names; QEMU's ACLs; the registry write path."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess

import pytest

from vmctl.errors import IntegrityError, UsageError
from vmctl.storage import ImageStore, probe, qemu_img
from vmctl.storage.digest import of_bytes, of_file

from storage_helpers import QEMU_USER, qemu_io, read_back


def _commit(store, tmp_path, parent_ref, ref, pattern=0x42, offset="2M"):
    parent = store.resolve(parent_ref)
    inst = tmp_path / f"inst-{ref.replace(':', '-').replace('/', '-')}"
    inst.mkdir()
    ov = inst / "disk.qcow2"
    qemu_img.create(ov, backing=parent.top_layer, backing_fmt="qcow2")
    qemu_io(ov, "qcow2", f"write -P {pattern} {offset} 256k")
    qemu_io(ov, "qcow2", "write -z 1M 64k")  # zeroes over the parent's data must survive
    return store.add_layer(parent_ref, ov, ref, "commit", created="2024-01-01T00:00:00Z")


def _getfacl(path) -> str:
    return subprocess.run(["getfacl", "-cp", str(path)], capture_output=True, text=True, check=True).stdout


def test_derived_layer_has_relative_backing_and_opens(tmp_path, store, raw_disk):
    base = store.import_image(raw_disk, "base:1")
    child = _commit(store, tmp_path, "base:1", "child:1")
    grand = _commit(store, tmp_path, "child:1", "grand:1", pattern=0x43, offset="4M")
    assert probe.read_qcow2_header(child.top_layer).backing_file == base.top_layer.name
    assert probe.read_qcow2_header(grand.top_layer).backing_file == child.top_layer.name
    chain = qemu_img.info(grand.top_layer, "qcow2", backing_chain=True)
    assert [c["filename"] for c in chain] == [str(p) for p in reversed(grand.layers)]
    assert all(c.get("backing-filename-format", "qcow2") == "qcow2" for c in chain)
    for layer in grand.layers:
        assert qemu_img.is_clean(qemu_img.check(layer))
    # the guest view through the chain: parent's data, the child's write, the zeroed range
    assert read_back(grand.top_layer, "qcow2", 1 << 20, 64 << 10, 0)
    assert read_back(grand.top_layer, "qcow2", (1 << 20) + (64 << 10), 64 << 10, 0x5A)
    assert read_back(grand.top_layer, "qcow2", 2 << 20, 256 << 10, 0x42)
    assert read_back(grand.top_layer, "qcow2", 4 << 20, 256 << 10, 0x43)
    assert grand.parent == child.id and len(grand.config["history"]) == 3


def test_layers_are_position_independent(tmp_path, store, raw_disk):
    _commit(store, tmp_path, store.import_image(raw_disk, "base:1").id, "child:1")
    child = store.resolve("child:1")
    moved = tmp_path / "moved"
    shutil.copytree(store.data_root, moved)
    other = ImageStore(moved, None)
    again = other.resolve("child:1")
    assert again.id == child.id
    chain = qemu_img.info(again.top_layer, "qcow2", backing_chain=True)
    assert chain[-1]["filename"] == str(again.layers[0])
    assert [of_file(p)[0] for p in again.layers] == list(child.layer_digests)


def test_commit_refuses_overlay_of_another_image(tmp_path, store, raw_disk):
    store.import_image(raw_disk, "a:1")
    b = store.import_image(raw_disk, "b:1", cloud_init=True, labels={"x": "y"})
    other = tmp_path / "other.qcow2"
    qemu_img.create(other, 64 << 20)
    qemu_img.create(tmp_path / "ov.qcow2", backing=other, backing_fmt="qcow2")
    with pytest.raises(UsageError, match="not an overlay"):
        store.add_layer("b:1", tmp_path / "ov.qcow2", "c:1")
    with pytest.raises(UsageError, match="no backing file"):
        store.add_layer("b:1", other, "c:1")
    assert {r.repo for r in store.list()} == {"a", "b"}
    del b


def test_permissions_with_qemu_acl(tmp_path, acl_store, raw_disk):
    store = acl_store
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k" * 5000)
    im = store.import_image(raw_disk, "deb:12", kernel=kernel, cmdline="console=ttyS0")
    child = _commit(store, tmp_path, "deb:12", "deb:child")
    for d in (store.layout.root, store.layout.layers, store.layout.blobs):
        acl = _getfacl(d)
        assert f"user:{QEMU_USER}:--x" in acl, acl
        assert "group::---" in acl and "other::---" in acl
        assert stat.S_IMODE(d.stat().st_mode) & 0o007 == 0
    for d in (store.layout.tmp, store.layout.holds):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700 and QEMU_USER not in _getfacl(d)
    for f in [*child.layers, im.kernel]:
        acl = _getfacl(f)
        assert f"user:{QEMU_USER}:r--" in acl and "mask::r--" in acl and "group::---" in acl
        assert stat.S_IMODE(f.stat().st_mode) & 0o222 == 0  # nobody may write a layer
        assert "w" not in acl.replace("other::---", "")
    assert stat.S_IMODE(store.layout.index.stat().st_mode) == 0o600
    # the QEMU user can open the whole chain by name, but cannot list or write
    as_qemu = ["runuser", "-u", QEMU_USER, "--"]
    proc = subprocess.run([*as_qemu, "qemu-img", "info", "-f", "qcow2", "--backing-chain", str(child.top_layer)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*as_qemu, "ls", str(store.layout.layers)], capture_output=True, text=True)
    assert proc.returncode != 0
    proc = subprocess.run([*as_qemu, "qemu-io", "-f", "qcow2", "-c", "write 0 512", str(child.top_layer)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 or "Permission denied" in proc.stdout + proc.stderr
    proc = subprocess.run([*as_qemu, "cat", str(store.layout.index)], capture_output=True)
    assert proc.returncode != 0
    proc = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(im.kernel)], capture_output=True)
    assert proc.returncode != 0


def test_registry_roundtrip_between_stores(tmp_path, store, raw_disk):
    """Blobs pushed as-is from one store and ingested into another give the same image id."""
    k = tmp_path / "k"
    k.write_bytes(b"kernel" * 1000)
    store.import_image(raw_disk, "base:1", kernel=k, cmdline="quiet")
    src = _commit(store, tmp_path, "base:1", "app:1")
    dst = ImageStore(tmp_path / "dst", None)
    manifest = src.manifest
    with dst.session() as s:
        for desc in [*manifest["layers"], manifest["config"]]:
            mt = desc["mediaType"] if desc["mediaType"].endswith("qcow2") else None
            with open(store.blob_path(desc["digest"], mt), "rb") as fh:
                dst.ingest_blob(desc["digest"], fh, media_type=desc["mediaType"], size=desc["size"], session=s)
        raw = store.blob_path(src.id).read_bytes()
        got = dst.put_manifest(raw, "mirror/app:1")
    assert got.id == src.id and got.repo_tags == ("mirror/app:1",)
    assert read_back(got.top_layer, "qcow2", 2 << 20, 256 << 10, 0x42)
    assert got.kernel.read_bytes() == k.read_bytes()
    assert dst.verify("mirror/app:1") == []


def test_ingest_refuses_bad_content(tmp_path, store):
    data = b"hello"
    with pytest.raises(IntegrityError):
        store.ingest_blob("sha256:" + "0" * 64, io.BytesIO(data))
    # a "layer" whose backing file points outside the store
    evil = tmp_path / "evil.qcow2"
    qemu_img.create(evil, backing="/etc/shadow", backing_fmt="qcow2", unsafe_size=True, size=1 << 20)
    raw = evil.read_bytes()
    with pytest.raises(IntegrityError, match="backing"):
        store.ingest_blob(of_bytes(raw), io.BytesIO(raw), media_type="application/vnd.vmctl.disk.layer.v1.qcow2")
    assert list(store.layout.layers.iterdir()) == [] and list(store.layout.tmp.iterdir()) == []
    with pytest.raises(Exception):
        store.put_manifest(b'{"schemaVersion": 2}')
