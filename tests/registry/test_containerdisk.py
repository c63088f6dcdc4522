"""KubeVirt containerDisks: vmctl pulls one that skopeo put in the registry (built here by hand as an
OCI layout), and pushes one that skopeo reads back as a plain container image."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_cli_registry import cfg, login, opts  # noqa: F401 - cfg is a fixture

pytestmark = pytest.mark.contract
MiB = 1 << 20


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def small_qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "32M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 2M", "-c", "write -P 0xa5 20M 64k", str(path)],
                   check=True, capture_output=True)
    return path


def containerdisk_layout(root: Path, disk: Path, tag: str, name: str = "disk/disk.qcow2") -> None:
    """An OCI image layout holding a containerDisk, the way 'ADD --chown=107:107 disk.qcow2 /disk/' does."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("disk")
        d.type, d.mode, d.uid, d.gid = tarfile.DIRTYPE, 0o755, 107, 107
        tar.addfile(d)
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid = disk.stat().st_size, 0o644, 107, 107
        with open(disk, "rb") as fh:
            tar.addfile(info, fh)
    layer_tar = buf.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-05-01T10:00:00.123456789Z",
                         "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar)]}, "config": {}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(layer), "size": len(layer)}],
    }).encode()
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (layer, config, manifest):
        (blobs / sha(data).split(":")[1]).write_bytes(data)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))


def same_disk(a: Path, fmt_a: str, b: Path, fmt_b: str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", "-f", fmt_a, "-F", fmt_b, str(a), str(b)]).returncode == 0


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_pull_a_containerdisk_that_skopeo_pushed(skopeo, cli_run, cfg, registry, repo_name, tmp_path, fmt):  # noqa: F811
    disk = small_qcow2(tmp_path / "disk.qcow2")
    layout = tmp_path / "layout"
    containerdisk_layout(layout, disk, "v1")
    args = ["--format", "v2s2"] if fmt == "v2s2" else []
    proc = subprocess.run(["skopeo", "copy", "--quiet", *args, *registry.skopeo_args("dest"), f"oci:{layout}:v1",
                           f"docker://{registry.host}/{repo_name}:v1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    login(cli_run, registry)
    ref = f"{registry.host}/{repo_name}:v1"
    result = cli_run("pull", ref, *opts(registry), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["source"] == "containerdisk" and out["name"] == ref
    image = json.loads(cli_run("image", "inspect", ref).stdout)[0]
    assert image["boot"] == {"kind": "firmware", "firmware": "bios", "supports": ["bios"]} and image["cloud_init"] is True
    assert image["created"] == "2024-05-01T10:00:00Z"
    assert same_disk(disk, "qcow2", Path(image["top_layer"]), "qcow2")


def test_pull_refuses_a_container_image_without_a_disk(skopeo, cli_run, cfg, registry_http, repo_name, tmp_path):  # noqa: F811
    disk = small_qcow2(tmp_path / "disk.qcow2")
    layout = tmp_path / "layout"
    containerdisk_layout(layout, disk, "v1", name="etc/disk.qcow2")
    subprocess.run(["skopeo", "copy", "--quiet", *registry_http.skopeo_args("dest"), f"oci:{layout}:v1",
                    f"docker://{registry_http.host}/{repo_name}:v1"], check=True, capture_output=True)
    login(cli_run, registry_http)
    result = cli_run("pull", f"{registry_http.host}/{repo_name}:v1", "--insecure")
    assert result.exit_code == 11 and "no file under /disk/" in result.stderr
    assert cli_run("images", "-q").stdout.strip() == ""


def test_push_containerdisk_is_a_plain_container_image(skopeo, cli_run, cfg, registry, repo_name, tmp_path):  # noqa: F811
    disk = small_qcow2(tmp_path / "disk.qcow2")
    assert cli_run("image", "import", str(disk), "cd:1", "--user", "cloud").exit_code == 0
    login(cli_run, registry)
    ref = f"{registry.host}/{repo_name}:cd"
    result = cli_run("push", "--containerdisk", "cd:1", ref, *opts(registry), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["containerdisk"] is True

    info = json.loads(subprocess.run(["skopeo", "inspect", *registry.skopeo_args(), f"docker://{ref}"],
                                     capture_output=True, check=True).stdout)
    assert info["Os"] == "linux" and info["Architecture"] == "amd64" and info["Labels"]["vmctl.user"] == "cloud"
    layout = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", "--quiet", *registry.skopeo_args("src"), f"docker://{ref}", f"oci:{layout}:cd"],
                   check=True, capture_output=True)
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    assert [d["mediaType"] for d in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    layer = layout / "blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    with tarfile.open(layer, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"disk", "disk/disk.qcow2"}
        m = members["disk/disk.qcow2"]
        assert (m.uid, m.gid) == (107, 107) and m.isreg()
        (tmp_path / "out.qcow2").write_bytes(tar.extractfile(m).read())
    assert same_disk(disk, "qcow2", tmp_path / "out.qcow2", "qcow2")

    # and back: vmctl pulls it as a containerDisk, keeping the user it carried
    assert cli_run("rmi", "cd:1").exit_code == 0
    back = cli_run("pull", ref, *opts(registry), "--json")
    assert back.exit_code == 0, back.output
    pulled = json.loads(cli_run("image", "inspect", ref).stdout)[0]
    assert pulled["user"] == "cloud" and same_disk(disk, "qcow2", Path(pulled["top_layer"]), "qcow2")


def test_push_containerdisk_of_a_kernel_boot_image_is_refused(cli_run, cfg, registry_http, repo_name, tmp_path):  # noqa: F811
    disk = small_qcow2(tmp_path / "disk.qcow2")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0" * 4096)
    assert cli_run("image", "import", "--disk", str(disk), "--kernel", str(kernel), "k:1").exit_code == 0
    login(cli_run, registry_http)
    result = cli_run("push", "--containerdisk", "k:1", f"{registry_http.host}/{repo_name}:k", "--insecure")
    assert result.exit_code == 2 and "boots a kernel directly" in result.stderr
