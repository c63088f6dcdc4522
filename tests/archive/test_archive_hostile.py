"""`vmctl load` of archives made to hurt: crafted members, bombs, names, duplicates, lies about sizes.

Every case runs the real program (tests/registry/measured.py) on a data root of its own and checks
the exit code, one line on stderr, the store's files unchanged, nothing written outside the store,
and peak memory.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from tests import tarcraft
from tests.figures import record
from vmctl.archive import save
from vmctl.storage import ImageStore

pytestmark = pytest.mark.contract
MEASURED = Path(__file__).resolve().parent.parent / "registry" / "measured.py"
MiB = 1 << 20
M = tarcraft.member


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real archive of a small image, and its members (name -> bytes)."""
    work = tmp_path_factory.mktemp("saved")
    store = ImageStore(work / "src", None)
    disk = work / "disk.raw"
    with open(disk, "wb") as fh:
        fh.truncate(4 * MiB)
        fh.write(os.urandom(MiB))
    store.import_image(disk, "base:1", created=1_700_000_000)
    out = work / "base.tar"
    save(store, ["base:1"], out)
    with tarfile.open(out) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    return out, members, store.resolve("base:1").id


def build(members, extra_before=(), extra_after=(), replace=None) -> bytes:
    parts = [*extra_before]
    for name, data in members:
        if replace and name in replace:
            got = replace[name](data)
            if got is None:
                continue
            data = got
        parts.append(M(name, data))
    parts += extra_after
    return tarcraft.stream(*parts)


def run_load(root: Path, archive: Path, *, stdin: Path | None = None):
    env = dict(os.environ, VMCTL_ROOT=str(root), VMCTL_CONFIG="/dev/null")
    args = [sys.executable, str(MEASURED), "load", "-i", "/dev/stdin" if stdin else str(archive)]
    # a real pipe (a redirected file would still be a regular file behind /dev/stdin)
    cat = subprocess.Popen(["cat", str(stdin or os.devnull)], stdout=subprocess.PIPE)
    try:
        proc = subprocess.run(args, env=env, stdin=cat.stdout, capture_output=True, text=True, timeout=300)
    finally:
        cat.stdout.close()
        cat.kill()
        cat.wait()
    lines = proc.stderr.rstrip("\n").split("\n")
    peak = int(lines[-1].split("=", 1)[1]) / 1024
    return proc.returncode, "\n".join(lines[:-1]).strip(), proc.stdout, peak


def files(root: Path) -> dict:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and p.name != "lock":
            out[str(p.relative_to(root))] = p.stat().st_size
    return out


def refused(tmp_path, data: bytes, code: int, match: str, *, name="bad.tar", pipe=False, root=None):
    root = root or tmp_path / "root"
    archive = tmp_path / name
    archive.write_bytes(data)
    outside = sorted(str(p) for p in tmp_path.rglob("*") if root not in p.parents and p != root)
    before = files(root)
    got, err, out, peak = run_load(root, archive, stdin=archive if pipe else None)
    assert got == code, err
    assert err.startswith("vmctl: error: ") and "\n" not in err and match in err, err
    assert files(root) == before
    assert sorted(str(p) for p in tmp_path.rglob("*") if root not in p.parents and p != root) == outside
    assert peak < 100, f"peak {peak:.0f} MiB"
    record("hostile archives refused", 1)
    record("vmctl peak memory loading hostile archives", peak, how="max", unit="MiB")
    return err


def blob_names(members):
    return [n for n, _ in members if n.startswith("blobs/")]


def test_a_clean_archive_loads(saved, tmp_path):
    out, _, image_id = saved
    code, err, stdout, _ = run_load(tmp_path / "root", out)
    assert code == 0, err
    assert stdout.strip() == "Loaded image: base:1"


CRAFTED = {
    "a member that climbs out": (lambda m: build(m, extra_after=[M("../escaped", b"x")]), "climbs out"),
    "a blob path that climbs out": (lambda m: build(m, extra_after=[M("blobs/sha256/../../../escaped", b"x")]),
                                    "climbs out"),
    "an absolute member": (lambda m: build(m, extra_after=[M("/tmp/vmctl-escaped", b"x")]), "absolute"),
    "a symlink for a blob": (lambda m: build(m, replace={blob_names(m)[-1]: lambda d: None},
                                              extra_after=[M(blob_names(m)[-1], typeflag=b"2", linkname="/etc/passwd")]),
                              "symlink"),
    "a hard link": (lambda m: build(m, extra_after=[M("blobs/sha256/" + "0" * 64, typeflag=b"1",
                                                     linkname="/etc/shadow")]), "hardlink"),
    "a device": (lambda m: build(m, extra_after=[M("blobs/sha256/" + "1" * 64, typeflag=b"3")]), "chardev"),
    "a member outside the layout": (lambda m: build(m, extra_after=[M("manifest.json", b"[]")]), "not part of"),
    "a sha512 blob": (lambda m: build(m, extra_after=[M("blobs/sha512/" + "a" * 128, b"x")]), "not part of"),
    "a second index.json": (lambda m: build(m, extra_after=[M("index.json", dict(m)["index.json"])]),
                            "appears twice"),
    "a blob twice": (lambda m: build(m, extra_after=[M(blob_names(m)[0], dict(m)[blob_names(m)[0]])]),
                     "appears twice"),
    "a name that reads as an image ID": (lambda m: build(m, replace={"index.json": lambda d: d.replace(
        b'"base:1"', b'"deadbeef:1"')}), "could be read as an image ID"),
    "a name that climbs": (lambda m: build(m, replace={"index.json": lambda d: d.replace(
        b'"base:1"', b'"../../x:1"')}), "names an image"),
    "an index listing a path as a digest": (lambda m: build(m, replace={"index.json": lambda d: json.dumps(
        {"schemaVersion": 2, "manifests": [{"digest": "../../etc/passwd", "size": 1}]}).encode()}),
        "not a sha256 digest"),
    "a layer whose size lies": (lambda m: build(m, replace={blob_names(m)[-1]: lambda d: d + b"\0" * 512}),
                                "its manifest says"),
    "a tampered layer": (lambda m: build(m, replace={blob_names(m)[-1]: lambda d: d[:-1] + bytes([d[-1] ^ 1])}),
                         "digest"),
    "a manifest whose config is a string": (lambda m: _config_string(m), "config descriptor"),
    "too many members": (lambda m: build(m, extra_after=[M("blobs/", typeflag=b"5")] * 100_001),
                         "more than 100000 members"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_archive_is_refused_and_changes_nothing(saved, tmp_path, case):
    _, members, _ = saved
    make, match = CRAFTED[case]
    refused(tmp_path, make(members), 11, match)
    assert not Path("/tmp/vmctl-escaped").exists()


def _config_string(members) -> bytes:
    """The archive with its manifest replaced by one whose config is a string (and the index
    pointing at it)."""
    import hashlib

    manifest = json.dumps({"schemaVersion": 2, "config": "x", "layers": []}).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{"digest": digest, "size": len(manifest)}]}).encode()
    return build([(n, d) for n, d in members if n != "index.json"],
                 extra_after=[M("index.json", index), M("blobs/sha256/" + digest[7:], manifest)])


def _zeros_tar_gz(path: Path, size: int) -> None:
    """A gzip'd tar whose first member is `size` bytes of zeros, then an index naming nothing
    present: about 1 MiB on disk per GiB claimed."""
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    with open(path, "wb") as out:
        out.write(comp.compress(tarcraft.header("blobs/sha256/" + "e" * 64, size=size)))
        zero = b"\0" * (8 * MiB)
        for _ in range(size // len(zero)):
            out.write(comp.compress(zero))
        tail = tarcraft.stream(
            M("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            M("index.json", json.dumps({"schemaVersion": 2, "manifests": [
                {"digest": "sha256:" + "f" * 64, "size": 10,
                 "mediaType": "application/vnd.oci.image.manifest.v1+json"}]}).encode()))
        out.write(comp.compress(tail) + comp.flush())


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.tar.gz"
    _zeros_tar_gz(path, 1 << 30)
    return path


@pytest.fixture
def small_root(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192m", "tmpfs", str(mnt)], check=True)
    yield mnt / "root"
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_tiny_compressed_bomb_stages_nothing(bomb, tmp_path, small_root):
    assert bomb.stat().st_size < 8 * MiB
    # a file: two passes, the 1 GiB blob is never written (the root has only 192 MiB)
    err = refused(tmp_path, bomb.read_bytes(), 11, "missing from the archive", name="bomb.tar.gz", root=small_root)
    assert "manifest" in err
    # a pipe: one pass, and the blob is refused before a byte of it is staged
    refused(tmp_path, bomb.read_bytes(), 14, "does not fit", name="bomb2.tar.gz", pipe=True, root=small_root)


def test_a_load_that_moves_a_name_says_so(saved, tmp_path):
    out, _, image_id = saved
    root = tmp_path / "root"
    other = ImageStore(root, None)
    disk = tmp_path / "other.raw"
    disk.write_bytes(os.urandom(MiB))
    old = other.import_image(disk, "base:1", created=1)
    code, err, stdout, _ = run_load(root, out)
    assert code == 0, err
    assert f"base:1 named image {old.id[7:19]} before" in err
    assert other.resolve("base:1").id == image_id


def test_gzip_and_pipe_archives_load(saved, tmp_path):
    out, _, image_id = saved
    gz = tmp_path / "base.tar.gz"
    gz.write_bytes(gzip.compress(out.read_bytes(), 1))
    code, err, _, _ = run_load(tmp_path / "a", gz)
    assert code == 0, err
    code, err, _, _ = run_load(tmp_path / "b", out, stdin=out)
    assert code == 0, err
    assert ImageStore(tmp_path / "b", None).resolve("base:1").id == image_id


def test_save_writes_0600(saved, tmp_path):
    out, _, _ = saved
    assert out.stat().st_mode & 0o777 == 0o600
    old = os.umask(0)
    try:
        store = ImageStore(tmp_path / "s", None)
        disk = tmp_path / "d.raw"
        disk.write_bytes(b"\1" * MiB)
        store.import_image(disk, "x:1", created=1)
        save(store, ["x:1"], tmp_path / "x.tar")
        assert (tmp_path / "x.tar").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
