"""Tag, untag, holds, rm (refused while used, --force only untags), prune, df."""

from __future__ import annotations


import pytest

from vmctl.errors import ConflictError, InUseError, NotFoundError, UsageError
from vmctl.storage import qemu_img

from storage_helpers import make_raw, qemu_io


def _child(store, tmp_path, parent_ref: str, ref: str, pattern: int = 0x42):
    parent = store.resolve(parent_ref)
    inst = tmp_path / f"inst-{ref.replace(':', '-')}"
    inst.mkdir()
    ov = inst / "disk.qcow2"
    qemu_img.create(ov, backing=parent.top_layer, backing_fmt="qcow2")
    qemu_io(ov, "qcow2", f"write -P {pattern} 2M 256k")
    return store.add_layer(parent_ref, ov, ref, "change", created="2024-01-01T00:00:00Z")


def test_tag_untag(store, raw_disk):
    im = store.import_image(raw_disk, "deb:12")
    store.tag("deb:12", "mirror/deb:stable")
    assert store.resolve("mirror/deb:stable").id == im.id
    store.tag(im.short_id, "deb:latest")
    assert store.resolve("deb").id == im.id
    assert store.untag("deb:latest") == im.id
    with pytest.raises(NotFoundError):
        store.untag("deb:latest")
    with pytest.raises(UsageError):
        store.tag("deb:12", "Bad Name")
    with pytest.raises(NotFoundError):
        store.tag("nope:1", "x:1")


def test_rm_only_untags_while_other_tags_remain(store, raw_disk):
    im = store.import_image(raw_disk, "deb:12")
    store.tag("deb:12", "deb:latest")
    res = store.remove("deb:latest")
    assert res.untagged == ("deb:latest",) and res.deleted == ()
    res = store.remove("deb:12")
    assert res.deleted == (im.id,) and res.freed > 0
    assert store.list() == [] and not im.top_layer.exists()
    assert list(store.layout.blobs.iterdir()) == []


def test_rm_by_id_of_multi_tagged_image_needs_force(store, raw_disk):
    im = store.import_image(raw_disk, "deb:12")
    store.tag("deb:12", "deb:latest")
    with pytest.raises(ConflictError, match="deb:12, deb:latest"):
        store.remove(im.short_id)
    res = store.remove(im.short_id, force=True)
    assert res.deleted == (im.id,) and set(res.untagged) == {"deb:12", "deb:latest"}


def test_rm_refused_while_held(store, raw_disk):
    im = store.import_image(raw_disk, "deb:12")
    store.hold("deb:12", "instance:web1")
    store.hold(im.id, "instance:web2")
    assert store.holders("deb:12") == ["instance:web1", "instance:web2"]
    with pytest.raises(InUseError, match="instance:web1, instance:web2") as exc:
        store.remove("deb:12")
    assert exc.value.exit_code == 5
    res = store.remove("deb:12", force=True)
    assert res.untagged == ("deb:12",) and res.deleted == ()
    assert im.top_layer.exists()
    rows = store.list()
    assert len(rows) == 1 and rows[0].repo is None and rows[0].holders == ("instance:web1", "instance:web2")
    assert store.prune().images == ()  # held: prune keeps it
    assert store.release(im.id, "instance:web1") and store.release(im.id, "instance:web2")
    assert not store.release(im.id, "instance:web2")
    pr = store.prune()
    assert pr.images == (im.id,) and im.layer_digests[0] in pr.layers
    assert not im.top_layer.exists() and store.list() == []
    with pytest.raises(UsageError):
        store.hold(im.id, "no spaces allowed")


def test_rm_refused_while_child_image_uses_it(tmp_path, store, raw_disk):
    base = store.import_image(raw_disk, "base:1")
    child = _child(store, tmp_path, "base:1", "child:1")
    assert child.layer_digests[0] == base.layer_digests[0] and len(child.layers) == 2
    assert child.parent == base.id
    with pytest.raises(InUseError, match=r"child images child:1"):
        store.remove("base:1")
    assert [c.id for c in store.children(base.id)] == [child.id]
    store.remove("child:1")
    assert not child.top_layer.exists() and base.top_layer.exists()
    store.remove("base:1")
    assert not base.top_layer.exists()


def test_shared_layers_survive_removal_of_one_image(store, raw_disk):
    a = store.import_image(raw_disk, "a:1")
    b = store.import_image(raw_disk, "b:1", cloud_init=True)
    assert a.layer_digests == b.layer_digests and a.id != b.id
    store.remove("a:1")
    assert b.top_layer.exists() and store.resolve("b:1").id == b.id


def test_prune_removes_only_unreferenced_and_stale(store, raw_disk, tmp_path):
    im = store.import_image(raw_disk, "deb:12")
    other = make_raw(tmp_path / "other.raw", pattern=0x77)
    gone = store.import_image(other, "gone:1")
    # an unreferenced layer and blob, as a crash between publish and index update leaves them
    from vmctl.storage.index import Index

    idx = Index.load(store.layout.index)
    idx.drop_image(gone.id)
    idx.save(store.layout.index)
    # a stale work dir of a dead process, and a live one
    stale = store.layout.tmp / "import-999999-dead"
    stale.mkdir()
    (stale / "layer.qcow2").write_bytes(b"x" * 10000)
    (store.layout.root / ".index.json.1.ab.tmp").write_bytes(b"{}")
    with store.session("pull") as live:
        (live.path / "partial").write_bytes(b"y" * 100)
        res = store.prune()
        assert live.path.exists()
    assert set(res.layers) == {gone.layer_digests[0]}
    assert gone.id in res.blobs and gone.manifest["config"]["digest"] in res.blobs
    assert res.temps == 1 and not stale.exists()
    assert not (store.layout.root / ".index.json.1.ab.tmp").exists()
    assert im.top_layer.exists() and store.resolve("deb:12").id == im.id
    assert store.prune().layers == ()


def test_prune_keeps_pinned_blobs_of_live_sessions(store):
    import io

    data = b"kernel bytes"
    from vmctl.storage.digest import of_bytes

    with store.session() as s:
        path = store.ingest_blob(of_bytes(data), io.BytesIO(data), session=s)
        assert store.prune().blobs == ()
        assert path.exists()
    assert store.prune().blobs == (of_bytes(data),)


def test_df(tmp_path, store, raw_disk):
    im = store.import_image(raw_disk, "deb:12")
    inst = store.data_root / "instances" / "web1"
    inst.mkdir(parents=True)
    (inst / "disk.qcow2").write_bytes(b"z" * 65536)
    usage = store.df()
    assert usage.images.count == 1 and usage.images.active == 0
    assert usage.images.size >= im.top_layer.stat().st_blocks * 512
    assert usage.images.reclaimable == usage.images.size
    assert usage.instances.count == 1 and usage.instances.size >= 65536
    store.hold("deb:12", "instance:web1")
    usage = store.df(active_instances=[], snapshots=lambda: (2, 1, 300, 100))
    assert usage.images.active == 1 and usage.images.reclaimable == 0
    assert usage.instances.reclaimable == usage.instances.size
    assert usage.snapshots.count == 2 and usage.snapshots.size == 300
    assert [r.kind for r in usage.rows] == ["images", "instances", "snapshots"]


def test_hold_release_and_verify(store, raw_disk):
    im = store.import_image(raw_disk, "deb:12")
    with pytest.raises(NotFoundError):
        store.hold("nope:1", "instance:x")
    assert store.hold("deb:12", "instance:a").id == im.id
    assert store.hold("deb:12", "instance:a").id == im.id  # idempotent
    assert store.all_holds() == {im.id: ["instance:a"]}
    assert store.release("deb:12", "instance:a") and store.all_holds() == {}
    assert store.verify("deb:12") == []
    im.top_layer.chmod(0o644)
    assert any("writable" in p for p in store.verify("deb:12"))
