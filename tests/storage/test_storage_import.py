"""Import: qcow2 and raw in, fresh qcow2 layer out, stable ids, refused inputs."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from vmctl.errors import NotFoundError, UsageError
from vmctl.storage import ImageStore, qemu_img

from storage_helpers import make_qcow2, make_raw, read_back


def test_import_raw(store, raw_disk):
    events = []
    im = store.import_image(raw_disk, "deb:12", progress=lambda *e: events.append(e))
    assert im.id.startswith("sha256:") and len(im.id) == 71 and im.short_id == im.id[7:19]
    assert im.repo_tags == ("deb:12",)
    assert len(im.layers) == 1 and im.top_layer.name.endswith(".qcow2")
    assert qemu_img.info(im.top_layer, "qcow2").get("backing-filename") is None
    assert read_back(im.top_layer, "qcow2", 1 << 20, 1 << 20, 0x5A)
    assert im.boot == {"kind": "firmware", "firmware": "bios", "supports": ["bios"]}
    assert im.defaults == {"cpus": 1, "memory_mib": 1024, "disk_bytes": 64 << 20}
    phases = [e[0] for e in events]
    assert phases[0] == "check" and "convert" in phases and "hash" in phases and phases[-1] == "publish"
    converts = [e[1] for e in events if e[0] == "convert"]
    assert converts == sorted(converts) and converts[-1] == 64 << 20
    assert store.resolve("deb:12") == im
    assert store.resolve(im.short_id).id == im.id
    assert store.resolve(f"deb@{im.id}").id == im.id


def test_import_qcow2_and_layer_checks_clean(store, qcow2_disk):
    im = store.import_image(qcow2_disk, "q:1", cloud_init=True, user="debian",
                            labels={"os": "debian"}, defaults={"cpus": 2, "memory_mib": 512})
    assert read_back(im.top_layer, "qcow2", 0, 512 << 10, 0x33)
    assert qemu_img.is_clean(qemu_img.check(im.top_layer))
    assert im.cloud_init and im.user == "debian" and im.labels == {"os": "debian"}
    assert im.defaults["cpus"] == 2 and im.defaults["memory_mib"] == 512
    assert im.config["history"][0]["layer"] == im.layer_digests[0]


def test_reimport_gives_same_id(tmp_path, store, raw_disk):
    a = store.import_image(raw_disk, "a:1")
    b = store.import_image(raw_disk, "b:1")
    assert a.id == b.id and set(store.resolve("a:1").repo_tags) == {"a:1", "b:1"}
    # another store, another path, same bytes and time: same layer, same id
    copy = tmp_path / "elsewhere.raw"
    shutil.copy2(raw_disk, copy)
    other = ImageStore(tmp_path / "other", None)
    c = other.import_image(copy, "c:1")
    assert c.id == a.id and c.layer_digests == a.layer_digests
    # different options give a different image sharing the same layer
    d = store.import_image(raw_disk, "d:1", cloud_init=True)
    assert d.id != a.id and d.layer_digests == a.layer_digests
    e = store.import_image(raw_disk, "e:1", created="2020-01-02T03:04:05Z")
    assert e.created == "2020-01-02T03:04:05Z" and e.id != a.id


def test_same_content_in_qcow2_and_raw_gives_same_layer(tmp_path, store):
    raw = make_raw(tmp_path / "x.raw")
    q = tmp_path / "x.qcow2"
    qemu_img.convert(raw, q, src_fmt="raw")
    a = store.import_image(raw, "a:1")
    b = store.import_image(q, "b:1")
    assert a.layer_digests == b.layer_digests


def test_kernel_boot_import(tmp_path, store, raw_disk):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(4096))
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(os.urandom(2048))
    im = store.import_image(raw_disk, "k:1", kernel=kernel, initrd=initrd, cmdline="console=ttyS0 root=/dev/vda")
    assert im.boot_kind == "kernel" and im.cmdline == "console=ttyS0 root=/dev/vda"
    assert im.kernel.read_bytes() == kernel.read_bytes()
    assert im.initrd.read_bytes() == initrd.read_bytes()
    assert not os.access(im.kernel, os.W_OK) or os.geteuid() == 0
    assert im.kernel.stat().st_mode & 0o222 == 0
    mts = [d["mediaType"] for d in im.manifest["layers"]]
    assert mts == ["application/vnd.vmctl.disk.layer.v1.qcow2", "application/vnd.vmctl.kernel.v1",
                   "application/vnd.vmctl.initrd.v1"]
    with pytest.raises(UsageError, match="need --kernel"):
        store.import_image(raw_disk, "k:2", cmdline="x")


def test_refused_inputs(tmp_path, store):
    base = make_qcow2(tmp_path / "base.qcow2")
    ov = tmp_path / "ov.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(ov)], check=True)
    with pytest.raises(UsageError, match="backing file"):
        store.import_image(ov, "x:1")
    df = tmp_path / "df.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.bin'}",
                    str(df), "1M"], check=True)
    with pytest.raises(UsageError, match="data file"):
        store.import_image(df, "x:1")
    garbage = tmp_path / "garbage.qcow2"
    garbage.write_bytes(b"<html>not found</html>" * 50)
    with pytest.raises(UsageError, match="qcow2"):
        store.import_image(garbage, "x:1")
    with pytest.raises(UsageError, match="no such file"):
        store.import_image(tmp_path / "missing.raw", "x:1")
    with pytest.raises(UsageError):
        store.import_image(base, "bad name:1")
    assert store.list() == []
    assert list(store.layout.layers.iterdir()) == []
    assert [p.name for p in store.layout.tmp.iterdir()] == []


def test_resolution_errors(store, raw_disk):
    im = store.import_image(raw_disk, "deb:12")
    with pytest.raises(NotFoundError):
        store.resolve("deb")  # deb:latest does not exist
    with pytest.raises(NotFoundError):
        store.resolve("sha256:" + ("0" if im.id[7] != "0" else "1") * 12)
    with pytest.raises(UsageError, match="vmctl image import"):
        store.resolve("./deb.qcow2")
    d2 = store.import_image(raw_disk, "deb:13", cloud_init=True)
    # a 4-digit prefix shared by both is ambiguous only if they share it; force it with a common one
    common = os.path.commonprefix([im.id[7:], d2.id[7:]])
    if len(common) >= 4:
        with pytest.raises(UsageError, match="ambiguous"):
            store.resolve(common[:4])
    assert store.resolve(d2.id[7:11] if not d2.id[7:11] == im.id[7:11] else d2.id).id == d2.id


def test_list_rows_and_inspect(store, raw_disk):
    im = store.import_image(raw_disk, "deb:12")
    store.tag("deb:12", "deb:latest")
    rows = store.list()
    assert {(r.repo, r.tag) for r in rows} == {("deb", "12"), ("deb", "latest")}
    assert all(r.id == im.id and r.short_id == im.short_id and r.size == im.size for r in rows)
    info = store.inspect("deb")
    assert info["id"] == im.id and info["repo_tags"] == ["deb:12", "deb:latest"]
    assert info["layers"][0]["digest"] == im.layer_digests[0]
    assert info["holders"] == [] and info["children"] == []
    assert info["size"] == im.size > 0


def test_add_built_records_recipe(tmp_path, store, qcow2_disk):
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class BuildResult:
        recipe_digest: str
        disk: object
        kernel: object
        initrd: object
        cmdline: str
        boot_kind: str
        architecture: str
        defaults: dict
        cloud_init: bool
        user: str
        labels: dict = field(default_factory=dict)

    k = tmp_path / "k"
    k.write_bytes(b"kernel" * 100)
    i = tmp_path / "i"
    i.write_bytes(b"initrd" * 100)
    res = BuildResult("sha256:" + "ab" * 32, qcow2_disk, k, i, "console=ttyS0", "kernel", "x86_64",
                      {"cpus": 1, "memory_mib": 256, "disk_bytes": 1 << 20}, True, "vmctl", {"a": "b"})
    events = []
    im = store.add_built(res, "tiny:1", progress=lambda *e: events.append(e))
    assert im.labels["vmctl.recipe.digest"] == res.recipe_digest and im.labels["a"] == "b"
    assert store.find_build(res.recipe_digest).id == im.id
    assert store.find_by_label("a", "b")[0].id == im.id
    assert store.find_build("sha256:" + "cd" * 32) is None
    assert im.defaults["memory_mib"] == 256 and im.defaults["disk_bytes"] == 64 << 20
    assert store.add_built(res, "tiny:2").id == im.id
    assert events
