"""The registry commands through the CLI: login/logout, push/pull naming, derived images, a tampered
blob, search, against the real registries of conftest.py (HTTP and TLS)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from reghelpers import private_credentials

pytestmark = pytest.mark.contract
MiB = 1 << 20


@pytest.fixture
def cfg(tmp_path, monkeypatch, vmctl_root):
    """Private credentials: vmctl's, Docker's and podman's files all under tmp_path."""
    private_credentials(tmp_path, monkeypatch)
    return tmp_path


def opts(server) -> list[str]:
    return ["--ca-file", str(server.ca_file)] if server.tls else ["--insecure"]


def login(cli_run, server):
    result = cli_run("login", server.host, "-u", server.user, "--password-stdin", *opts(server),
                     input=server.password + "\n")
    assert result.exit_code == 0, result.output
    return result


def raw_disk(path: Path, size: int = 16 * MiB, random: int = 2 * MiB) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(MiB)
        for _ in range(random // MiB):   # in chunks: keep the test process small (maxrss survives exec)
            fh.write(os.urandom(MiB))
    return path


def imported(cli_run, tmp_path, name="base:1"):
    result = cli_run("image", "import", str(raw_disk(tmp_path / f"{name.replace(':', '-').replace('/', '-')}.raw")), name)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_login_checks_stores_0600_and_logout_forgets(cli_run, cfg, registry):
    wrong = cli_run("login", registry.host, "-u", registry.user, "--password-stdin", *opts(registry),
                    input="wrong\n")
    assert wrong.exit_code == 13
    assert wrong.stderr.strip().splitlines() == [f"vmctl: error: {registry.host}: wrong user name or password"]
    auth = cfg / "config" / "vmctl" / "auth.json"
    assert not auth.exists()

    login(cli_run, registry)
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    entry = json.loads(auth.read_text())["auths"][registry.host]
    assert base64.b64decode(entry["auth"]).decode() == f"{registry.user}:{registry.password}"

    out = cli_run("logout", registry.host)
    assert out.exit_code == 0 and registry.host not in json.loads(auth.read_text())["auths"]


def test_login_without_a_terminal_needs_user_and_password_stdin(cli_run, cfg, registry_http):
    assert cli_run("login", registry_http.host, "--insecure").exit_code == 2
    result = cli_run("login", registry_http.host, "-u", "x", "--insecure")
    assert result.exit_code == 2 and "--password-stdin" in result.stderr


def test_push_uses_docker_credentials_when_vmctl_has_none(cli_run, cfg, registry_http, tmp_path, repo_name):
    imported(cli_run, tmp_path)
    anon = cli_run("push", "base:1", f"{registry_http.host}/{repo_name}:1", "--insecure")
    assert anon.exit_code == 13 and "login" in anon.stderr
    (cfg / "docker").mkdir()
    token = base64.b64encode(f"{registry_http.user}:{registry_http.password}".encode()).decode()
    (cfg / "docker" / "config.json").write_text(json.dumps({"auths": {registry_http.host: {"auth": token}}}))
    assert cli_run("push", "base:1", f"{registry_http.host}/{repo_name}:1", "--insecure").exit_code == 0


def test_push_rmi_pull_keeps_the_registry_name(cli_run, cfg, registry, tmp_path, repo_name):
    login(cli_run, registry)
    image_id = imported(cli_run, tmp_path)
    remote = f"{registry.host}/{repo_name}:1"
    pushed = cli_run("push", "base:1", remote, *opts(registry), "--json")
    assert pushed.exit_code == 0, pushed.output
    pushed = json.loads(pushed.stdout)
    assert pushed["image_id"] == image_id and pushed["reference"] == remote
    assert cli_run("rmi", "base:1").exit_code == 0

    pulled = cli_run("pull", remote, *opts(registry))
    assert pulled.exit_code == 0, pulled.output
    assert pulled.stdout.strip() == remote
    rows = json.loads(cli_run("images", "--json").stdout)
    assert [(r["repository"], r["tag"], r["id"]) for r in rows] == [(f"{registry.host}/{repo_name}", "1", image_id)]
    # the pulled name is a reference like any other: inspect, create --print-xml, tag, push back
    assert json.loads(cli_run("image", "inspect", remote).stdout)[0]["id"] == image_id
    xml = cli_run("create", "--image", f"{registry.host}/{repo_name}:1", "--print-xml", "x1")
    assert xml.exit_code == 0, xml.output
    again = cli_run("push", remote, *opts(registry), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["bytes_uploaded"] == 0
    by_digest = cli_run("pull", f"{registry.host}/{repo_name}@{pushed['digest']}", *opts(registry), "--json")
    assert by_digest.exit_code == 0 and json.loads(by_digest.stdout)["id"] == image_id


def test_derived_image_push_sends_only_the_new_layer(cli_run, cfg, registry_http, tmp_path, repo_name, vmctl_root):
    from vmctl.registry import compress
    from vmctl.storage import ImageStore

    login(cli_run, registry_http)
    imported(cli_run, tmp_path)
    base = cli_run("push", "base:1", f"{registry_http.host}/{repo_name}:base", "--insecure", "--json")
    base_bytes = json.loads(base.stdout)["bytes_uploaded"]
    store = ImageStore(vmctl_root, None)
    parent = store.resolve("base:1")
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(parent.top_layer),
                    str(overlay)], check=True)
    (tmp_path / "new.bin").write_bytes(os.urandom(MiB))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {tmp_path / 'new.bin'} 4M 1M", str(overlay)],
                   check=True, capture_output=True)
    child = store.add_layer("base:1", overlay, "child:1", created=1_700_000_000)
    new_layer = compress.compressed_digest(store.blob_path(child.layer_digests[1], child.manifest["layers"][1]["mediaType"]))

    out = json.loads(cli_run("push", "child:1", f"{registry_http.host}/{repo_name}:child", "--insecure", "--json").stdout)
    assert out["bytes_uploaded"] == new_layer.size + child.manifest["config"]["size"]
    assert out["bytes_uploaded"] < base_bytes
    assert [b["status"] for b in out["blobs"] if b["kind"] == "layer"] == ["exists", "uploaded"]


def _store_state(root: Path) -> dict:
    images = root / "images"
    return {"index": (images / "index.json").read_bytes() if (images / "index.json").exists() else b"",
            "files": sorted(str(p.relative_to(images)) for p in images.rglob("*")
                            if p.is_file() and "tmp" not in p.parts and p.name != "lock")}


def test_tampered_blob_is_refused_and_nothing_stored(cli_run, cfg, registry, tmp_path, repo_name, vmctl_root):
    login(cli_run, registry)
    imported(cli_run, tmp_path)
    remote = f"{registry.host}/{repo_name}:1"
    assert cli_run("push", "base:1", remote, *opts(registry)).exit_code == 0
    assert cli_run("rmi", "base:1").exit_code == 0
    cli_run("image", "prune")
    from vmctl.registry.client import RegistryClient
    from vmctl.registry.auth import Credentials

    client = RegistryClient(registry.host, insecure=registry.insecure, ca_file=registry.ca_file,
                            credentials=Credentials(registry.user, registry.password))
    layer = json.loads(client.get_manifest(repo_name, "1")[0])["layers"][0]["digest"]
    client.close()
    path = registry.blob_data_path(layer)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    before = _store_state(vmctl_root)
    result = cli_run("pull", remote, *opts(registry))
    assert result.exit_code == 11, result.output
    assert "does not match its digest" in result.stderr
    assert _store_state(vmctl_root) == before
    assert cli_run("images", "-q").stdout.strip() == ""


def test_search_registry_and_catalog(cli_run, cfg, registry, tmp_path, repo_name):
    login(cli_run, registry)
    imported(cli_run, tmp_path)
    for tag in ("1", "2"):
        assert cli_run("push", "base:1", f"{registry.host}/{repo_name}:{tag}", *opts(registry)).exit_code == 0
    result = cli_run("search", repo_name.split("/")[-1], "--registry", registry.host, *opts(registry), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"name": f"{registry.host}/{repo_name}", "tags": ["1", "2"],
                                          "source": registry.host, "description": ""}]
    catalog = json.loads(cli_run("search", "ubu", "--json").stdout)
    assert [r["name"] for r in catalog] == ["ubuntu"] and "24.04" in catalog[0]["tags"]


def test_pull_of_an_unknown_local_word_is_a_usage_error(cli_run, cfg):
    result = cli_run("pull", "nosuchdistro:1")
    assert result.exit_code == 2 and "catalog" in result.stderr


def test_push_without_dest_falls_back_to_the_bare_name(cli_run, cfg, registry_http, tmp_path, repo_name):
    login(cli_run, registry_http)
    imported(cli_run, tmp_path, f"{repo_name}:7")
    result = cli_run("push", f"{registry_http.host}/{repo_name}:7", "--insecure")
    assert result.exit_code == 0, result.output
    missing = cli_run("push", f"{registry_http.host}/{repo_name}-none:7", "--insecure")
    assert missing.exit_code == 3 and "vmctl push IMAGE" in missing.stderr


def test_killed_pull_never_shows_a_partial_image_and_the_next_pull_completes(cli_run, cfg, registry_http, tmp_path,
                                                                            repo_name, vmctl_root):
    import signal
    import sys
    import time

    login(cli_run, registry_http)
    big = raw_disk(tmp_path / "big.raw", 160 * MiB, 96 * MiB)
    image_id = cli_run("image", "import", str(big), "big:1").stdout.strip()
    remote = f"{registry_http.host}/{repo_name}:big"
    assert cli_run("push", "big:1", remote, "--insecure").exit_code == 0
    assert cli_run("rmi", "big:1").exit_code == 0
    cli_run("image", "prune")
    before = _store_state(vmctl_root)

    partial = vmctl_root / "cache" / "registry" / "partial"
    proc = subprocess.Popen([sys.executable, "-m", "vmctl", "pull", remote, "--insecure"], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.stat().st_size > 0 for p in partial.glob("*.partial")) if partial.is_dir() else False:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _store_state(vmctl_root) == before          # no image, no layer: nothing half-made is visible
    assert cli_run("images", "-q").stdout.strip() == ""

    result = cli_run("pull", remote, "--insecure", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == image_id
    assert list(partial.glob("*.partial")) == [] and list(partial.glob("*.verified")) == []
