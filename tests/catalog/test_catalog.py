"""The cloud image catalog against a local HTTP(S) server serving real qcow2 files and real-format
checksum lists (Ubuntu's SHA256SUMS, Fedora's signed BSD-style CHECKSUM, Debian's SHA512SUMS,
Alpine's per-file .sha512)."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "registry"))
import regserver  # noqa: E402

from vmctl import catalog  # noqa: E402

pytestmark = pytest.mark.contract
LAST_MODIFIED = 1_714_557_600  # 2024-05-01T10:00:00Z


class Site:
    """A tiny download site: path -> bytes, with Range, Last-Modified, and a request log."""

    def __init__(self, tls_dir: Path | None = None):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: int | None = None   # drop the connection once after this many bytes
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                site.requests.append((self.path, rng))
                data = site.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Last-Modified", formatdate(LAST_MODIFIED, usegmt=True))
                self.end_headers()
                if site.cut_after is not None and len(body) > site.cut_after:
                    cut, site.cut_after = site.cut_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls_dir is not None:
            certs = regserver.make_ca(tls_dir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certs["cert"], certs["key"])
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.ca_file = certs["ca"]
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.stop()


@pytest.fixture
def tls_site(tmp_path):
    s = Site(tmp_path / "pki")
    yield s
    s.stop()


def qcow2(path: Path, pattern: int) -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 1M 1M", str(path)], check=True,
                   capture_output=True)
    return path.read_bytes()


@pytest.fixture
def env(monkeypatch, vmctl_root, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return monkeypatch


def publish_ubuntu(site: Site, tmp_path: Path, *, wrong: bool = False) -> bytes:
    image = qcow2(tmp_path / "ubuntu.img", 0x11)
    name = "ubuntu-24.04-server-cloudimg-amd64.img"
    digest = hashlib.sha256(image).hexdigest()
    if wrong:
        digest = hashlib.sha256(b"something else").hexdigest()
    site.files[f"/ubuntu/noble/release/{name}"] = image
    site.files["/ubuntu/noble/release/SHA256SUMS"] = (
        f"{'0' * 64} *ubuntu-24.04-server-cloudimg-arm64.img\n{digest} *{name}\n"
        f"{'1' * 64} *ubuntu-24.04-server-cloudimg-amd64.tar.gz\n").encode()
    return image


def test_ubuntu_from_a_mirror_is_verified_and_imported(cli_run, env, site, tmp_path):
    env.setenv("VMCTL_CATALOG_MIRROR_UBUNTU", site.url + "/ubuntu")
    image = publish_ubuntu(site, tmp_path)
    result = cli_run("pull", "ubuntu:24.04", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["source"] == "catalog" and out["name"] == "ubuntu:24.04"
    assert out["digest"] == "sha256:" + hashlib.sha256(image).hexdigest()
    info = json.loads(cli_run("image", "inspect", "ubuntu:24.04").stdout)[0]
    assert info["user"] == "ubuntu" and info["cloud_init"] is True
    assert info["boot"] == {"kind": "firmware", "firmware": "bios", "supports": ["bios"]}
    assert info["created"] == "2024-05-01T10:00:00Z"
    assert subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", str(tmp_path / "ubuntu.img"),
                           info["top_layer"]]).returncode == 0
    # the alias and the same file again give the same image
    again = json.loads(cli_run("pull", "ubuntu:noble", "--json").stdout)
    assert again["id"] == out["id"]


def test_wrong_checksum_is_refused_and_nothing_stored(cli_run, env, site, tmp_path, vmctl_root):
    env.setenv("VMCTL_CATALOG_MIRROR_UBUNTU", site.url + "/ubuntu")
    publish_ubuntu(site, tmp_path, wrong=True)
    result = cli_run("pull", "ubuntu:24.04")
    assert result.exit_code == 11 and "nothing was imported" in result.stderr
    assert cli_run("images", "-q").stdout.strip() == ""
    assert list((vmctl_root / "cache" / "catalog").glob("*.partial")) == []


def test_fedora_bsd_checksums_over_https(cli_run, env, tls_site, tmp_path):
    env.setenv("VMCTL_CATALOG_MIRROR_FEDORA", tls_site.url + "/fedora")
    image = qcow2(tmp_path / "fedora.qcow2", 0x22)
    d = "/fedora/42/Cloud/x86_64/images"
    name = "Fedora-Cloud-Base-Generic-42-1.1.x86_64.qcow2"
    tls_site.files[f"{d}/{name}"] = image
    tls_site.files[f"{d}/Fedora-Cloud-42-1.1-x86_64-CHECKSUM"] = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"
        f"# Fedora-Cloud-Base-Generic-42-1.1.x86_64.qcow2: {len(image)} bytes\n"
        f"SHA256 ({name}) = {hashlib.sha256(image).hexdigest()}\n"
        f"SHA256 (Fedora-Cloud-Base-Generic-42-1.1.x86_64.raw.xz) = {'2' * 64}\n"
        "-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCAAdFiEE\n-----END PGP SIGNATURE-----\n").encode()
    untrusted = cli_run("pull", "fedora:42")
    assert untrusted.exit_code == 12 and "TLS verification failed" in untrusted.stderr
    env.setenv("VMCTL_CATALOG_CA_FILE", str(tls_site.ca_file))
    result = cli_run("pull", "fedora", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "fedora:latest"
    assert json.loads(cli_run("image", "inspect", "fedora").stdout)[0]["user"] == "fedora"


def test_debian_sha512sums_and_alpine_per_file_sha512(cli_run, env, site, tmp_path):
    env.setenv("VMCTL_CATALOG_MIRROR_DEBIAN", site.url + "/debian")
    env.setenv("VMCTL_CATALOG_MIRROR_ALPINE", site.url + "/alpine")
    deb = qcow2(tmp_path / "debian.qcow2", 0x33)
    site.files["/debian/bookworm/latest/debian-12-genericcloud-amd64.qcow2"] = deb
    site.files["/debian/bookworm/latest/SHA512SUMS"] = (
        f"{hashlib.sha512(deb).hexdigest()}  debian-12-genericcloud-amd64.qcow2\n"
        f"{'3' * 128}  debian-12-genericcloud-amd64.json\n").encode()
    alp = qcow2(tmp_path / "alpine.qcow2", 0x44)
    name = "nocloud_alpine-3.21.2-x86_64-bios-cloudinit-r0.qcow2"
    site.files[f"/alpine/v3.21/releases/cloud/{name}"] = alp
    site.files[f"/alpine/v3.21/releases/cloud/{name}.sha512"] = f"{hashlib.sha512(alp).hexdigest()}  {name}\n".encode()
    for ref, user in (("debian:bookworm", "debian"), ("alpine:3.21", "alpine")):
        result = cli_run("pull", ref)
        assert result.exit_code == 0, result.output
        assert json.loads(cli_run("image", "inspect", ref).stdout)[0]["user"] == user


def test_interrupted_download_resumes_with_range(cli_run, env, site, tmp_path, vmctl_root):
    env.setenv("VMCTL_CATALOG_MIRROR_UBUNTU", site.url + "/ubuntu")
    image = publish_ubuntu(site, tmp_path)
    # a connection dropped mid-way is retried from where it stopped
    site.cut_after = len(image) // 3
    result = cli_run("pull", "ubuntu:24.04")
    assert result.exit_code == 0, result.output
    ranges = [r for p, r in site.requests if p.endswith(".img")]
    assert ranges == [None, f"bytes={len(image) // 3}-"]
    # a killed process leaves a partial file: the next pull asks only for the rest
    cli_run("rmi", "ubuntu:24.04")
    entry = catalog.lookup("ubuntu:24.04")
    key = hashlib.sha256(entry.image_url.encode()).hexdigest()[:32]
    (vmctl_root / "cache" / "catalog" / f"{key}.partial").write_bytes(image[:1000])
    site.requests.clear()
    assert cli_run("pull", "ubuntu:24.04").exit_code == 0
    assert [r for p, r in site.requests if p.endswith(".img")] == ["bytes=1000-"]


def test_stale_partial_of_another_file_is_replaced(cli_run, env, site, tmp_path, vmctl_root):
    env.setenv("VMCTL_CATALOG_MIRROR_UBUNTU", site.url + "/ubuntu")
    image = publish_ubuntu(site, tmp_path)
    entry = catalog.lookup("ubuntu:24.04")
    key = hashlib.sha256(entry.image_url.encode()).hexdigest()[:32]
    (vmctl_root / "cache" / "catalog").mkdir(parents=True)
    (vmctl_root / "cache" / "catalog" / f"{key}.partial").write_bytes(b"x" * 1000)
    result = cli_run("pull", "ubuntu:24.04")
    assert result.exit_code == 0, result.output
    assert [r for p, r in site.requests if p.endswith(".img")] == ["bytes=1000-", None]
    assert len(image) > 1000


def test_catalog_errors(cli_run, env, site):
    env.setenv("VMCTL_CATALOG_MIRROR_UBUNTU", site.url + "/ubuntu")
    unknown = cli_run("pull", "ubuntu:9.10")
    assert unknown.exit_code == 3 and "24.04" in unknown.stderr
    site.files["/ubuntu/noble/release/SHA256SUMS"] = f"{'0' * 64} *other.img\n".encode()
    missing = cli_run("pull", "ubuntu:24.04")
    assert missing.exit_code == 11 and "no sha256 entry" in missing.stderr


def test_checksum_parsing():
    text = (f"{'a' * 64} *x.img\n{'b' * 64}  ./y.qcow2\nSHA256 (z.qcow2) = {'C' * 64}\n"
            "# comment\n-----BEGIN PGP SIGNATURE-----\n")
    assert catalog.parse_checksums(text, "sha256") == {"x.img": "a" * 64, "y.qcow2": "b" * 64, "z.qcow2": "c" * 64}
    assert catalog.expected_hash("f" * 128 + "\n", "sha512", "anything") == "f" * 128


def test_every_catalog_entry_resolves(monkeypatch):
    for name in catalog.names():
        d = catalog.load_catalog()[name]
        for version in d.versions:
            entry = catalog.lookup(f"{name}:{version}")
            assert entry.image_url.startswith("https://") and entry.checksums_url.startswith("https://")
            assert "{" not in entry.image_url
