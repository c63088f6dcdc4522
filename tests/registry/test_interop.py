"""Interop with a client nobody here wrote: skopeo reads what vmctl pushed, vmctl reads what skopeo pushed."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
import reghelpers as h

from vmctl.registry import compress
from vmctl.registry import mediatypes as mt

pytestmark = pytest.mark.contract


def _skopeo(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["skopeo", *args], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def _push_vmctl_image(client, repo, tmp_path, tag="v1"):
    """Push a vmctl-shaped image (config + one zstd disk layer) with the client."""
    raw = tmp_path / "layer.qcow2"
    raw.write_bytes(b"QFI\xfb" + bytes(64 * 1024) + bytes(range(256)) * 400)
    zst = tmp_path / "layer.qcow2.zst"
    c = compress.compress_file(raw, zst)
    config = h.sample_config()
    client.upload_blob(repo, h.sha256(config), io.BytesIO(config), len(config))
    client.upload_blob(repo, c.digest, zst)
    manifest = h.vmctl_manifest(config, [(c.digest, c.size, c.uncompressed_digest, c.uncompressed_size)])
    digest = client.put_manifest(repo, tag, manifest)
    return manifest, digest, config, c, zst


def test_skopeo_inspect_and_copy_read_what_vmctl_pushed(skopeo, registry, registry_client, repo_name, tmp_path):
    manifest, digest, config, c, zst = _push_vmctl_image(registry_client, repo_name, tmp_path)
    ref = f"docker://{registry.host}/{repo_name}:v1"

    raw = _skopeo("inspect", "--raw", *registry.skopeo_args(), ref).stdout
    assert raw == manifest
    cfg = _skopeo("inspect", "--config", "--raw", *registry.skopeo_args(), ref).stdout
    assert cfg == config

    layout = tmp_path / "oci"
    _skopeo("copy", "--quiet", *registry.skopeo_args("src"), ref, f"oci:{layout}:v1")
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    blobs = layout / "blobs" / "sha256"
    assert (blobs / digest.split(":")[1]).read_bytes() == manifest
    assert (blobs / c.digest.split(":")[1]).read_bytes() == zst.read_bytes()
    assert (blobs / h.sha256(config).split(":")[1]).read_bytes() == config


def _write_oci_layout(root: Path, blobs: dict[str, bytes], manifest: bytes, tag: str) -> None:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for digest, data in {**blobs, h.sha256(manifest): manifest}.items():
        (root / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
    (root / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": h.sha256(manifest), "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))


def test_vmctl_reads_what_skopeo_pushed(skopeo, registry, registry_client, repo_name, tmp_path):
    raw = tmp_path / "disk.qcow2"
    raw.write_bytes(b"QFI\xfb" + bytes(range(256)) * 4096)
    zst = tmp_path / "disk.zst"
    c = compress.compress_file(raw, zst)
    config = h.sample_config()
    manifest = h.vmctl_manifest(config, [(c.digest, c.size, c.uncompressed_digest, c.uncompressed_size)])
    layout = tmp_path / "layout"
    _write_oci_layout(layout, {h.sha256(config): config, c.digest: zst.read_bytes()}, manifest, "v1")

    _skopeo("copy", "--quiet", "--preserve-digests", *registry.skopeo_args("dest"),
            f"oci:{layout}:v1", f"docker://{registry.host}/{repo_name}:v1")

    data, media_type, digest = registry_client.get_manifest(repo_name, "v1")
    assert data == manifest and media_type == mt.OCI_MANIFEST and digest == h.sha256(manifest)
    parsed = json.loads(data)
    assert registry_client.get_blob_bytes(repo_name, parsed["config"]["digest"]) == config
    layer = parsed["layers"][0]
    dest = tmp_path / "pulled.zst"
    registry_client.download_blob(repo_name, layer["digest"], dest, partial_dir=tmp_path / "p", size=layer["size"])
    out = tmp_path / "pulled.qcow2"
    compress.decompress_file(dest, out, expected_digest=layer["annotations"][mt.ANN_UNCOMPRESSED_DIGEST],
                             expected_size=int(layer["annotations"][mt.ANN_UNCOMPRESSED_SIZE]))
    assert out.read_bytes() == raw.read_bytes()
