"""vmctl save / load: OCI image-layout archives, read and written by skopeo too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from vmctl.archive import load, save
from vmctl.errors import IntegrityError
from vmctl.registry import mediatypes as mt
from vmctl.storage import ImageStore

pytestmark = pytest.mark.contract
MiB = 1 << 20


def raw(path: Path, size=16 * MiB, rand=2 * MiB) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(MiB)
        for _ in range(rand // MiB):   # in chunks: the test process stays small (maxrss survives exec)
            fh.write(os.urandom(MiB))
    return path


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "a", None)


@pytest.fixture
def store_b(tmp_path):
    return ImageStore(tmp_path / "b", None)


@pytest.fixture
def images(store, tmp_path):
    base = store.import_image(raw(tmp_path / "base.raw"), "base:1", created=1_700_000_000)
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base.top_layer),
                    str(overlay)], check=True)
    (tmp_path / "new.bin").write_bytes(os.urandom(MiB))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {tmp_path / 'new.bin'} 4M 1M", str(overlay)],
                   check=True, capture_output=True)
    child = store.add_layer("base:1", overlay, "child:1", created=1_700_000_100)
    return base, child


def files(store) -> dict:
    root = Path(store.data_root) / "images"
    return {"index": (root / "index.json").read_bytes() if (root / "index.json").exists() else b"",
            "files": sorted(str(p.relative_to(root)) for p in root.rglob("*")
                            if p.is_file() and "tmp" not in p.parts and p.name != "lock")}


def test_round_trip_keeps_ids_names_and_shares_layers(store, store_b, images, tmp_path):
    base, child = images
    out = tmp_path / "images.tar"
    save(store, ["base:1", "child:1"], out)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))
    assert names[:2] == ["oci-layout", "index.json"]
    layer_members = [n for n in names if n.endswith(base.layer_digests[0].split(":")[1])]
    assert len(layer_members) == 1                                   # the shared layer once
    assert {(m["digest"], m["annotations"]["org.opencontainers.image.ref.name"]) for m in index["manifests"]} == {
        (base.id, "base:1"), (child.id, "child:1")}
    assert all(m["artifactType"] == mt.ARTIFACT_TYPE for m in index["manifests"])

    result = load(store_b, out)
    assert sorted((im.id, names) for im, names in result.images) == sorted(
        [(base.id, ("base:1",)), (child.id, ("child:1",))])
    assert store_b.verify("child:1") == [] and store_b.resolve("base:1").id == base.id
    # loading again changes nothing
    before = files(store_b)
    load(store_b, out)
    assert files(store_b) == before


def _rewrite(src: Path, dst: Path, mutate) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            data = mutate(m.name, data)
            if data is None:
                continue
            m.size = len(data)
            import io
            tout.addfile(m, io.BytesIO(data))


def test_tampered_or_truncated_archive_changes_nothing(store, store_b, images, tmp_path):
    base, _ = images
    out = tmp_path / "base.tar"
    save(store, ["base:1"], out)
    layer_hex = base.layer_digests[0].split(":")[1]

    def flip(name, data):
        if name.endswith(layer_hex):
            data = bytearray(data)
            data[len(data) // 2] ^= 1
            return bytes(data)
        return data

    bad = tmp_path / "bad.tar"
    _rewrite(out, bad, flip)
    before = files(store_b)
    with pytest.raises(IntegrityError, match="digest"):
        load(store_b, bad)
    assert files(store_b) == before

    missing = tmp_path / "missing.tar"
    _rewrite(out, missing, lambda name, data: None if name.endswith(layer_hex) else data)
    with pytest.raises(IntegrityError, match="missing"):
        load(store_b, missing)
    assert files(store_b) == before

    cut = tmp_path / "cut.tar"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(IntegrityError):
        load(store_b, cut)
    assert files(store_b) == before and store_b.images() == []


def test_skopeo_reads_saved_archives_and_vmctl_pulls_the_copy(skopeo, store, store_b, images, tmp_path,
                                                              registry, client_for, repo_name):
    from vmctl.registry import transfer
    from vmctl.registry.refs import parse_registry_ref

    base, child = images
    out = tmp_path / "images.tar"
    save(store, ["base:1", "child:1"], out)
    raw_manifest = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{out}:child:1"],
                                  capture_output=True, check=True).stdout
    assert raw_manifest == store.blobs.read(child.id)
    dest = f"docker://{registry.host}/{repo_name}:child"
    proc = subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", *registry.skopeo_args("dest"),
                           f"oci-archive:{out}:child:1", dest], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    pulled = transfer.pull(store_b, parse_registry_ref(f"{registry.host}/{repo_name}:child"), client_for(registry))
    assert pulled.image.id == child.id


def test_load_reads_what_skopeo_saved_from_a_registry(skopeo, store, store_b, images, tmp_path, registry,
                                                       client_for, repo_name):
    """skopeo's oci-archive of a pushed vmctl image has registry-form (zstd) layers: load decompresses
    and verifies them, and the image id is the same."""
    from vmctl.registry import transfer
    from vmctl.registry.refs import parse_registry_ref

    base, _ = images
    transfer.push(store, "base:1", parse_registry_ref(f"{registry.host}/{repo_name}:1"), client_for(registry))
    out = tmp_path / "from-registry.tar"
    proc = subprocess.run(["skopeo", "copy", "--quiet", *registry.skopeo_args("src"),
                           f"docker://{registry.host}/{repo_name}:1", f"oci-archive:{out}:skopeo/base:1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = load(store_b, out)
    assert [(im.id, names) for im, names in result.images] == [(base.id, ("skopeo/base:1",))]
    assert store_b.verify("skopeo/base:1") == []


MEMORY = """
import sys
from vmctl.storage import ImageStore
from vmctl.archive import save, load
a, b, out = ImageStore(sys.argv[1], None), ImageStore(sys.argv[2], None), sys.argv[3]
save(a, ["big:1"], out)
load(b, out)
# VmHWM is this process's own peak RSS (ru_maxrss keeps the parent's across exec)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) // 1024)
"""


def test_save_and_load_stream_with_flat_memory(store, tmp_path):
    big = raw(tmp_path / "big.raw", 256 * MiB, 200 * MiB)
    store.import_image(big, "big:1", created=1)
    big.unlink()
    proc = subprocess.run([sys.executable, "-c", MEMORY, str(tmp_path / "a"), str(tmp_path / "b"),
                           str(tmp_path / "big.tar")], capture_output=True, text=True, check=True)
    peak_mib = int(proc.stdout.strip())
    assert peak_mib < 120, f"peak RSS {peak_mib} MiB for a 200 MiB image"
