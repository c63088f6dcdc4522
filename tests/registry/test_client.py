"""RegistryClient against a real docker-registry, over plain HTTP and over TLS (contract tier)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import reghelpers as h

from vmctl.errors import AuthError, IntegrityError, NotFoundError, RegistryError
from vmctl.registry import mediatypes as mt
from vmctl.registry.auth import Credentials

pytestmark = pytest.mark.contract
MiB = 1 << 20


# ------------------------------------------------------------------ ping and auth
def test_ping_with_right_password(registry_client):
    info = registry_client.ping()
    assert info["auth"] == "basic"
    assert info["api_version"] == "registry/2.0"


def test_wrong_password_is_a_clear_auth_error(registry, client_for):
    client = client_for(registry, credentials=Credentials(registry.user, "wrong"))
    with pytest.raises(AuthError) as exc:
        client.ping()
    assert str(exc.value) == f"{registry.host}: wrong user name or password"
    assert exc.value.exit_code == AuthError.exit_code


def test_no_credentials_says_login_required(registry, client_for, repo_name):
    client = client_for(registry, credentials=None)
    with pytest.raises(AuthError, match=rf"login required: vmctl login {registry.host}$"):
        client.list_tags(repo_name)


def test_tls_is_verified_by_default(registry_tls, client_for):
    client = client_for(registry_tls, ca_file=None)
    with pytest.raises(RegistryError, match="TLS verification failed"):
        client.ping()
    # --insecure accepts the unknown certificate
    assert client_for(registry_tls, ca_file=None, insecure=True).ping()["url"].startswith("https://")


def test_plain_http_needs_insecure(registry_http, client_for):
    with pytest.raises(RegistryError) as exc:
        client_for(registry_http, insecure=False).ping()
    assert "\n" not in str(exc.value)
    assert client_for(registry_http, insecure=True).ping()["url"].startswith("http://")


def test_unreachable_registry_is_a_registry_error(client_for, registry_http):
    import regserver

    port = regserver.free_port()
    server = type(registry_http)(**{**registry_http.__dict__, "host": f"127.0.0.1:{port}"})
    with pytest.raises(RegistryError, match="cannot reach the registry"):
        client_for(server).ping()


# ------------------------------------------------------------------ blobs
@pytest.mark.parametrize("size,chunk", [(300 * 1024, 32 * MiB), (5 * MiB + 123, 2 * MiB)],
                         ids=["monolithic", "chunked"])
def test_blob_round_trip(registry, client_for, repo_name, tmp_path, size, chunk):
    client = client_for(registry, upload_chunk=chunk)
    src = tmp_path / "src.bin"
    digest = h.random_file(src, size)
    seen = []
    assert client.upload_blob(repo_name, digest, src, progress=lambda d, t: seen.append((d, t))) == "uploaded"
    assert client.bytes_uploaded == size
    assert seen[-1] == (size, size)
    assert client.blob_size(repo_name, digest) == size

    dest = tmp_path / "out" / "blob"
    dest.parent.mkdir()
    got = client.download_blob(repo_name, digest, dest, partial_dir=tmp_path / "partial", size=size)
    assert got == dest and h.file_digest(dest) == digest
    assert client.bytes_downloaded == size
    assert list((tmp_path / "partial").iterdir()) == []  # no partial, no lock file left


def test_upload_of_existing_blob_sends_no_bytes(registry_client, repo_name, tmp_path):
    src = tmp_path / "src.bin"
    digest = h.random_file(src, 2 * MiB)
    assert registry_client.upload_blob(repo_name, digest, src) == "uploaded"
    before = registry_client.bytes_uploaded

    class CountingFile(io.FileIO):
        read_bytes = 0

        def read(self, n=-1):
            data = super().read(n)
            CountingFile.read_bytes += len(data)
            return data

    with CountingFile(src, "rb") as fh:
        assert registry_client.upload_blob(repo_name, digest, fh) == "exists"
    assert registry_client.bytes_uploaded == before
    assert CountingFile.read_bytes == 0


def test_cross_repo_mount(registry_client, repo_name, tmp_path):
    src = tmp_path / "src.bin"
    digest = h.random_file(src, 1 * MiB)
    registry_client.upload_blob(repo_name + "-a", digest, src)
    before = registry_client.bytes_uploaded
    result = registry_client.upload_blob(repo_name + "-b", digest, src, mount_from=repo_name + "-a")
    assert result == "mounted"
    assert registry_client.bytes_uploaded == before
    assert registry_client.blob_exists(repo_name + "-b", digest)


def test_missing_blob_is_not_found(registry_client, repo_name, tmp_path):
    missing = h.sha256(b"nothing here")
    assert not registry_client.blob_exists(repo_name, missing)
    with pytest.raises(NotFoundError):
        registry_client.download_blob(repo_name, missing, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _upload_random(client, repo, tmp_path, size):
    src = tmp_path / "src.bin"
    digest = h.random_file(src, size)
    client.upload_blob(repo, digest, src)
    return digest


def test_tampered_blob_is_refused_and_nothing_stored(registry, registry_client, repo_name, tmp_path):
    digest = _upload_random(registry_client, repo_name, tmp_path, 3 * MiB)
    data_file = registry.blob_data_path(digest)
    data_file.write_bytes(os.urandom(3 * MiB))  # same size, other bytes
    dest, partial = tmp_path / "dest", tmp_path / "partial"
    with pytest.raises(IntegrityError, match="does not match its digest"):
        registry_client.download_blob(repo_name, digest, dest, partial_dir=partial, size=3 * MiB)
    assert not dest.exists()
    assert list(partial.iterdir()) == []


def test_truncated_blob_is_refused(registry, registry_client, repo_name, tmp_path):
    digest = _upload_random(registry_client, repo_name, tmp_path, 2 * MiB)
    data_file = registry.blob_data_path(digest)
    data_file.write_bytes(data_file.read_bytes()[: MiB])
    dest, partial = tmp_path / "dest", tmp_path / "partial"
    with pytest.raises(IntegrityError):
        registry_client.download_blob(repo_name, digest, dest, partial_dir=partial, size=2 * MiB)
    assert not dest.exists()
    assert list(partial.glob("*.partial")) == []


def test_oversized_blob_is_cut_off(registry, registry_client, repo_name, tmp_path):
    digest = _upload_random(registry_client, repo_name, tmp_path, MiB)
    registry.blob_data_path(digest).write_bytes(os.urandom(4 * MiB))
    with pytest.raises(IntegrityError, match="larger than"):
        registry_client.download_blob(repo_name, digest, tmp_path / "d", partial_dir=tmp_path / "p", size=MiB)
    assert registry_client.bytes_downloaded < 3 * MiB
    assert not (tmp_path / "d").exists() and list((tmp_path / "p").glob("*.partial")) == []


KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import make_client
    import regserver
    server = regserver.RegistryServer(**{server!r}, proc=None)
    client = make_client(server)
    def progress(done, total):
        if done >= {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
    client.download_blob({repo!r}, {digest!r}, {dest!r}, partial_dir={partial!r}, size={size},
                         progress=progress)
""")


def test_killed_download_resumes_with_range(registry, registry_client, repo_name, tmp_path):
    size = 8 * MiB
    digest = _upload_random(registry_client, repo_name, tmp_path, size)
    dest, partial = tmp_path / "dest", tmp_path / "partial"
    fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in registry.__dict__.items()
              if k in ("host", "url", "tls", "user", "password")}
    fields.update(storage="/nonexistent", workdir="/nonexistent",
                  ca_file=str(registry.ca_file) if registry.ca_file else None)
    script = KILLER.format(tests=str(Path(__file__).parent), server=fields, kill_at=3 * MiB,
                           repo=repo_name, digest=digest, dest=str(dest), partial=str(partial), size=size)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert not dest.exists()
    left = partial / (digest.split(":")[1] + ".partial")
    kept = left.stat().st_size
    assert 0 < kept < size

    requests_seen = []
    orig = registry_client.transport.send

    def spy(method, url, **kw):
        requests_seen.append((method, kw.get("headers", {}).get("Range")))
        return orig(method, url, **kw)

    registry_client.transport.send = spy
    registry_client.download_blob(repo_name, digest, dest, partial_dir=partial, size=size)
    assert h.file_digest(dest) == digest
    assert registry_client.bytes_downloaded == size - kept
    assert ("GET", f"bytes={kept}-") in requests_seen
    assert not left.exists()


def test_stale_partial_with_wrong_bytes_restarts_cleanly(registry_client, repo_name, tmp_path):
    size = 2 * MiB
    digest = _upload_random(registry_client, repo_name, tmp_path, size)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / (digest.split(":")[1] + ".partial")).write_bytes(os.urandom(MiB))  # garbage left behind
    dest = tmp_path / "dest"
    registry_client.download_blob(repo_name, digest, dest, partial_dir=partial, size=size)
    assert h.file_digest(dest) == digest


# ------------------------------------------------------------------ manifests, tags, catalog
def _push_sample(client, repo, tmp_path, tag="v1"):
    config = h.sample_config()
    client.upload_blob(repo, h.sha256(config), io.BytesIO(config), len(config))
    layer = tmp_path / "layer.zst"
    ld = h.random_file(layer, 512 * 1024)
    client.upload_blob(repo, ld, layer)
    manifest = h.vmctl_manifest(config, [(ld, 512 * 1024, h.sha256(b"qcow2"), 5)])
    digest = client.put_manifest(repo, tag, manifest, mt.OCI_MANIFEST)
    return manifest, digest, config, ld


def test_manifest_put_and_get_with_vmctl_media_types(registry_client, repo_name, tmp_path):
    manifest, digest, config, _ = _push_sample(registry_client, repo_name, tmp_path)
    assert digest == h.sha256(manifest)
    data, media_type, got = registry_client.get_manifest(repo_name, "v1")
    assert (data, media_type, got) == (manifest, mt.OCI_MANIFEST, digest)
    assert registry_client.get_manifest(repo_name, digest)[0] == manifest
    assert registry_client.head_manifest(repo_name, "v1") == digest
    assert registry_client.head_manifest(repo_name, "nope") is None
    assert registry_client.get_blob_bytes(repo_name, h.sha256(config)) == config
    with pytest.raises(NotFoundError, match="manifest unknown"):
        registry_client.get_manifest(repo_name, "nope")


def test_tampered_manifest_is_refused(registry, registry_client, repo_name, tmp_path):
    manifest, digest, _, _ = _push_sample(registry_client, repo_name, tmp_path)
    registry.blob_data_path(digest).write_bytes(manifest.replace(b'-size":"5"', b'-size":"6"'))
    with pytest.raises(IntegrityError):
        registry_client.get_manifest(repo_name, "v1")
    with pytest.raises(IntegrityError):
        registry_client.get_manifest(repo_name, digest)


def test_tags_and_catalog(registry_client, repo_name, tmp_path):
    _push_sample(registry_client, repo_name, tmp_path, "v1")
    _push_sample(registry_client, repo_name, tmp_path, "v2")
    assert sorted(registry_client.list_tags(repo_name)) == ["v1", "v2"]
    assert sorted(registry_client.list_tags(repo_name, page=1)) == ["v1", "v2"]  # pagination
    assert repo_name in registry_client.catalog()
    assert repo_name in registry_client.catalog(page=2)
    with pytest.raises(NotFoundError):
        registry_client.list_tags(repo_name + "-none")


MEMORY = textwrap.dedent("""
    import os, resource, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import make_client
    import regserver
    from vmctl.registry import compress
    work = Path({work!r})
    big = work / "big.raw"
    with open(big, "wb") as fh:                      # 1 GiB: zeros, a random stretch every 64 MiB
        fh.truncate(1 << 30)
        for i in range(16):
            fh.seek(i << 26)
            fh.write(os.urandom(1 << 20))
    c = compress.compress_file(big, work / "big.zst")
    compress.decompress_file(work / "big.zst", work / "big.out", expected_digest=c.uncompressed_digest,
                             expected_size=c.uncompressed_size)
    blob = work / "blob"
    with open(blob, "wb") as fh:
        for _ in range(96):
            fh.write(os.urandom(1 << 20))
    import hashlib
    h = hashlib.sha256()
    with open(blob, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    client = make_client(regserver.RegistryServer(**{server!r}, proc=None), upload_chunk=32 << 20)
    client.upload_blob({repo!r}, digest, blob)
    client.download_blob({repo!r}, digest, work / "dl", size=96 << 20)
    # VmHWM: this process's own peak RSS (ru_maxrss would keep pytest's, inherited across exec)
    print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) // 1024)
""")


def test_memory_stays_flat_for_big_layers(registry_http, repo_name, tmp_path):
    fields = {k: v for k, v in registry_http.__dict__.items() if k in ("host", "url", "tls", "user", "password")}
    fields.update(storage="/nonexistent", workdir="/nonexistent", ca_file=None)
    script = MEMORY.format(tests=str(Path(__file__).parent), work=str(tmp_path), server=fields, repo=repo_name)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    peak_mib = int(proc.stdout.split()[-1])
    print(f"peak RSS {peak_mib} MiB")
    assert peak_mib < 120, f"peak RSS {peak_mib} MiB for a 1 GiB layer and a 96 MiB blob"
