"""Push and pull whole vmctl images between stores and a real registry (contract tier)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import reghelpers as h

from vmctl.errors import IntegrityError
from vmctl.registry import compress, transfer
from vmctl.registry import mediatypes as mt
from vmctl.registry.refs import parse_registry_ref
from vmctl.storage import ImageStore

pytestmark = pytest.mark.contract
MiB = 1 << 20


def qemu_io(path: Path, command: str) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], check=True, capture_output=True)


def random_raw(path: Path, size: int = 24 * MiB, random_bytes: int = 6 * MiB) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(MiB)
        fh.write(os.urandom(random_bytes))
    return path


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "root-a", None)


@pytest.fixture
def store_b(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "root-b", None)


@pytest.fixture
def base(store, tmp_path):
    return store.import_image(random_raw(tmp_path / "base.raw"), "base:1", created=1_700_000_000)


def derive(store, parent, tmp_path, name="child:1", size=3 * MiB):
    overlay = tmp_path / f"{name.replace(':', '-')}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(parent.top_layer),
                    str(overlay)], check=True)
    data = tmp_path / "new.bin"
    data.write_bytes(os.urandom(size))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {data} 8M {size}", str(overlay)],
                   check=True, capture_output=True)
    return store.add_layer(parent.id, overlay, name, "test layer", created=1_700_000_100)


def store_files(store) -> dict:
    root = Path(store.data_root) / "images"
    return {
        "index": (root / "index.json").read_bytes() if (root / "index.json").exists() else b"",
        "layers": sorted(p.name for p in (root / "layers").iterdir()),
        "blobs": sorted(p.name for p in (root / "blobs" / "sha256").iterdir()),
    }


def ref(registry, repo, tag="v1"):
    return parse_registry_ref(f"{registry.host}/{repo}:{tag}")


def test_push_then_pull_gives_the_same_image(registry, registry_client, store, store_b, base, repo_name):
    pushed = transfer.push(store, "base:1", ref(registry, repo_name), registry_client)
    assert pushed.image_id == base.id
    assert {k for k, _, s in pushed.blobs if s == "uploaded"} == {"layer", "config"}
    manifest = json.loads(registry_client.get_manifest(repo_name, "v1")[0])
    assert manifest["artifactType"] == mt.ARTIFACT_TYPE
    layer = manifest["layers"][0]
    assert layer["mediaType"] == mt.DISK_LAYER_ZSTD
    assert layer["annotations"][mt.ANN_UNCOMPRESSED_DIGEST] == base.layer_digests[0]

    pulled = transfer.pull(store_b, ref(registry, repo_name), registry_client)
    assert pulled.image.id == base.id                     # same local manifest bytes, same id
    assert pulled.image.repo_tags == (f"{registry.host}/{repo_name}:v1",)
    assert h.file_digest(pulled.image.top_layer) == base.layer_digests[0]
    assert pulled.manifest_digest == pushed.manifest_digest
    assert not list((Path(store_b.data_root) / "cache/registry/partial").glob("*.verified"))
    # by digest too, untagged unless asked
    again = transfer.pull(store_b, parse_registry_ref(f"{registry.host}/{repo_name}@{pushed.manifest_digest}"),
                          registry_client)
    assert again.image.id == base.id and again.bytes_downloaded == 0


def test_derived_image_uploads_and_downloads_only_its_new_layer(registry, registry_client, store, store_b,
                                                                base, repo_name, tmp_path):
    transfer.push(store, "base:1", ref(registry, repo_name, "base"), registry_client)
    child = derive(store, base, tmp_path)
    new_layer = store.blob_path(child.layer_digests[1], mt.LOCAL_LAYER)
    new_compressed = compress.compressed_digest(new_layer)
    config_size = child.manifest["config"]["size"]

    pushed = transfer.push(store, "child:1", ref(registry, repo_name, "child"), registry_client)
    statuses = {(k, s) for k, _, s in pushed.blobs}
    assert statuses == {("layer", "exists"), ("layer", "uploaded"), ("config", "uploaded")}
    assert pushed.bytes_uploaded == new_compressed.size + config_size   # counted bytes: new layer only

    # a re-push uploads nothing and does not recompress (cache hit, HEAD says exists)
    again = transfer.push(store, "child:1", ref(registry, repo_name, "child"), registry_client)
    assert again.bytes_uploaded == 0 and again.manifest_digest == pushed.manifest_digest

    # the other host has the parent: pulling the child fetches only the new layer (+ config)
    transfer.pull(store_b, ref(registry, repo_name, "base"), registry_client)
    before = registry_client.bytes_downloaded
    result = transfer.pull(store_b, ref(registry, repo_name, "child"), registry_client)
    assert result.image.id == child.id
    assert result.downloaded == [child.layer_digests[1]]
    assert registry_client.bytes_downloaded - before == new_compressed.size + config_size
    assert store_b.verify(f"{registry.host}/{repo_name}:child") == []


def test_kernel_boot_image_round_trip(registry, registry_client, store, store_b, repo_name, tmp_path):
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(os.urandom(600 * 1024))
    initrd.write_bytes(os.urandom(300 * 1024))
    image = store.import_image(random_raw(tmp_path / "k.raw", 8 * MiB, MiB), "kern:1", kernel=kernel,
                               initrd=initrd, cmdline="console=ttyS0", created=1_700_000_000)
    transfer.push(store, "kern:1", ref(registry, repo_name), registry_client)
    manifest = json.loads(registry_client.get_manifest(repo_name, "v1")[0])
    assert [d["mediaType"] for d in manifest["layers"]] == [mt.DISK_LAYER_ZSTD, mt.KERNEL, mt.INITRD]
    assert manifest["layers"][1]["digest"] == image.boot["kernel"]   # same digest on both sides
    pulled = transfer.pull(store_b, ref(registry, repo_name), registry_client)
    assert pulled.image.id == image.id
    assert pulled.image.kernel.read_bytes() == kernel.read_bytes()
    assert pulled.image.cmdline == "console=ttyS0"


def test_local_name_the_store_refuses_fails_before_any_download(registry, registry_client, store, store_b,
                                                              base, repo_name):
    from vmctl.errors import UsageError

    transfer.push(store, "base:1", ref(registry, repo_name), registry_client)
    before = registry_client.bytes_downloaded
    with pytest.raises(UsageError):
        transfer.pull(store_b, ref(registry, repo_name), registry_client, local_ref="bad name:1")
    assert registry_client.bytes_downloaded == before


def test_push_to_another_repo_mounts_instead_of_uploading(registry, registry_client, store, base, repo_name):
    transfer.push(store, "base:1", ref(registry, repo_name + "-a"), registry_client)
    pushed = transfer.push(store, "base:1", ref(registry, repo_name + "-b"), registry_client)
    assert ("layer", "mounted") in {(k, s) for k, _, s in pushed.blobs}
    assert pushed.bytes_uploaded == base.manifest["config"]["size"]


def test_tampered_layer_on_the_server_leaves_the_store_as_it_was(registry, registry_client, store, store_b,
                                                                  base, repo_name):
    transfer.push(store, "base:1", ref(registry, repo_name), registry_client)
    layer = json.loads(registry_client.get_manifest(repo_name, "v1")[0])["layers"][0]
    path = registry.blob_data_path(layer["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    before = store_files(store_b)
    with pytest.raises(IntegrityError, match="does not match its digest"):
        transfer.pull(store_b, ref(registry, repo_name), registry_client)
    assert store_files(store_b) == before
    assert store_b.images() == []
    leftovers = list((Path(store_b.data_root) / "cache/registry/partial").glob("*.partial"))
    assert leftovers == []


def test_lying_uncompressed_annotation_is_refused(registry, registry_client, store, store_b, base, repo_name):
    transfer.push(store, "base:1", ref(registry, repo_name), registry_client)
    data = json.loads(registry_client.get_manifest(repo_name, "v1")[0])
    data["layers"][0]["annotations"][mt.ANN_UNCOMPRESSED_SIZE] = str(int(
        data["layers"][0]["annotations"][mt.ANN_UNCOMPRESSED_SIZE]) - 1)
    registry_client.put_manifest(repo_name, "liar", h.canonical(data))
    before = store_files(store_b)
    with pytest.raises(IntegrityError):
        transfer.pull(store_b, ref(registry, repo_name, "liar"), registry_client)
    assert store_files(store_b) == before


KILL_PULL = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import make_client
    import regserver
    from vmctl.registry import transfer
    from vmctl.registry.refs import parse_registry_ref
    from vmctl.storage import ImageStore
    server = regserver.RegistryServer(**{server!r}, proc=None)
    def progress(phase, done, total):
        if phase.startswith("download") and done >= {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
    transfer.pull(ImageStore({root!r}), parse_registry_ref({ref!r}), make_client(server), progress=progress)
""")


def test_killed_mid_pull_then_pull_resumes(registry, registry_client, store, store_b, base, repo_name):
    transfer.push(store, "base:1", ref(registry, repo_name), registry_client)
    layer = json.loads(registry_client.get_manifest(repo_name, "v1")[0])["layers"][0]
    assert layer["size"] > 4 * MiB
    fields = {k: v for k, v in registry.__dict__.items() if k in ("host", "url", "tls", "user", "password")}
    fields.update(storage="/nonexistent", workdir="/nonexistent",
                  ca_file=str(registry.ca_file) if registry.ca_file else None)
    script = KILL_PULL.format(tests=str(Path(__file__).parent), server=fields, kill_at=2 * MiB,
                              root=str(store_b.data_root), ref=f"{registry.host}/{repo_name}:v1")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert store_b.images() == []
    partial = Path(store_b.data_root) / "cache/registry/partial" / (layer["digest"].split(":")[1] + ".partial")
    kept = partial.stat().st_size
    assert kept >= 2 * MiB

    before = registry_client.bytes_downloaded
    result = transfer.pull(store_b, ref(registry, repo_name), registry_client)
    assert result.image.id == base.id
    config_size = base.manifest["config"]["size"]
    assert registry_client.bytes_downloaded - before == layer["size"] - kept + config_size
    assert store_b.verify(f"{registry.host}/{repo_name}:v1") == []


def test_skopeo_reads_a_pushed_image_and_vmctl_pulls_what_skopeo_copied(
        skopeo, registry, registry_client, store, store_b, base, repo_name, tmp_path):
    pushed = transfer.push(store, "base:1", ref(registry, repo_name), registry_client)
    src = f"docker://{registry.host}/{repo_name}:v1"
    layout = tmp_path / "oci"
    subprocess.run(["skopeo", "copy", "--quiet", *registry.skopeo_args("src"), src, f"oci:{layout}:v1"],
                   check=True, capture_output=True)
    assert json.loads((layout / "index.json").read_text())["manifests"][0]["digest"] == pushed.manifest_digest
    # skopeo copies the layout into another repository; vmctl pulls that
    dst = f"docker://{registry.host}/{repo_name}-skopeo:v2"
    subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", *registry.skopeo_args("dest"),
                    f"oci:{layout}:v1", dst], check=True, capture_output=True)
    result = transfer.pull(store_b, ref(registry, repo_name + "-skopeo", "v2"), registry_client)
    assert result.image.id == base.id


def test_search_lists_matching_repositories_with_tags(registry, registry_client, store, base, repo_name):
    transfer.push(store, "base:1", ref(registry, repo_name + "-findme", "t1"), registry_client)
    transfer.push(store, "base:1", ref(registry, repo_name + "-findme", "t2"), registry_client)
    hits = transfer.search(registry_client, "FINDME")
    assert [(x.repo, x.tags) for x in hits if x.repo.startswith(repo_name)] == [
        (repo_name + "-findme", ("t1", "t2"))]


def test_open_client_uses_stored_credentials_and_insecure_list(registry_http, tmp_path, monkeypatch):
    from vmctl.registry.auth import AuthStore

    store = AuthStore(tmp_path / "auth.json", fallbacks=[])
    store.save(registry_http.host, registry_http.user, registry_http.password)

    class S:
        insecure_registries = (registry_http.host,)

    client = transfer.open_client(parse_registry_ref(f"{registry_http.host}/x:y"), settings=S(), auth_store=store)
    assert client.insecure and client.ping()["auth"] == "basic"
