"""Transient failures between the client and a real registry, injected by a proxy on 127.0.0.1."""

from __future__ import annotations

import http.server
import re
import threading

import pytest
import reghelpers as h
import requests

from vmctl.errors import NotFoundError, RegistryError
from vmctl.registry.auth import Credentials
from vmctl.registry.client import RegistryClient

pytestmark = pytest.mark.contract
MiB = 1 << 20


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules: list[dict] = []   # {"method", "pattern", "times", "status" | "cut_after"}
        self.log: list[tuple[str, str, str | None, int]] = []

    def add(self, method, pattern, times=1, **action):
        self.rules.append({"method": method, "pattern": re.compile(pattern), "times": times, **action})

    def take(self, method, path):
        with self.lock:
            for rule in self.rules:
                if rule["times"] > 0 and rule["method"] == method and rule["pattern"].search(path):
                    rule["times"] -= 1
                    return rule
        return None


@pytest.fixture
def faulty(registry_http):
    """A proxy in front of the plain-HTTP registry; returns (host, Faults)."""
    faults = Faults()
    upstream = registry_http.url
    session = requests.Session()
    session.trust_env = False

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            rule = faults.take(self.command, self.path)
            if rule and "status" in rule:
                faults.log.append((self.command, self.path, self.headers.get("Range"), rule["status"]))
                self.send_response(rule["status"])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length",)}
            resp = session.request(self.command, upstream + self.path, headers=headers, data=body,
                                   stream=True, allow_redirects=False)
            faults.log.append((self.command, self.path, self.headers.get("Range"), resp.status_code))
            self.send_response(resp.status_code)
            for k, v in resp.raw.headers.items():
                if k.lower() not in ("transfer-encoding", "connection"):
                    self.send_header(k, v)
            self.end_headers()
            if self.command == "HEAD":
                return
            sent = 0
            for chunk in resp.raw.stream(64 * 1024, decode_content=False):
                if rule and "cut_after" in rule and sent + len(chunk) > rule["cut_after"]:
                    self.wfile.write(chunk[: rule["cut_after"] - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(chunk)
                sent += len(chunk)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"127.0.0.1:{server.server_address[1]}"
    yield host, faults
    server.shutdown()
    server.server_close()


def _client(host, registry_http, **kw):
    return RegistryClient(host, insecure=True, credentials=Credentials(registry_http.user, registry_http.password),
                          retries=3, backoff=0.01, **kw)


def test_cut_stream_is_resumed_with_range_in_the_same_call(faulty, registry_http, repo_name, tmp_path):
    host, faults = faulty
    client = _client(host, registry_http)
    src = tmp_path / "src"
    digest = h.random_file(src, 6 * MiB)
    client.upload_blob(repo_name, digest, src)
    faults.add("GET", r"/blobs/sha256:", cut_after=2 * MiB + 5)
    dest = tmp_path / "dest"
    client.download_blob(repo_name, digest, dest, partial_dir=tmp_path / "p", size=6 * MiB)
    assert h.file_digest(dest) == digest
    ranges = [r for m, p, r, s in faults.log if m == "GET" and "/blobs/" in p]
    assert ranges == [None, f"bytes={2 * MiB + 5}-"]
    assert client.bytes_downloaded == 6 * MiB


def test_5xx_and_429_are_retried_4xx_are_not(faulty, registry_http, repo_name, tmp_path):
    host, faults = faulty
    client = _client(host, registry_http)
    src = tmp_path / "src"
    digest = h.random_file(src, MiB)
    faults.add("POST", r"/blobs/uploads/", status=503)
    faults.add("HEAD", r"/blobs/", status=429)
    assert client.upload_blob(repo_name, digest, src) == "uploaded"
    faults.add("GET", r"/tags/list", times=1, status=400)
    with pytest.raises(RegistryError, match="HTTP 400"):
        client.list_tags(repo_name)
    assert [s for m, p, r, s in faults.log if "/tags/list" in p] == [400]


def test_chunked_upload_resumes_after_a_failed_chunk(faulty, registry_http, repo_name, tmp_path):
    host, faults = faulty
    client = _client(host, registry_http, upload_chunk=MiB)
    src = tmp_path / "src"
    digest = h.random_file(src, 4 * MiB + 7)
    faults.add("PATCH", r"/blobs/uploads/", times=1, status=502)
    faults.log.clear()
    assert client.upload_blob(repo_name, digest, src) == "uploaded"
    patches = [s for m, p, r, s in faults.log if m == "PATCH"]
    assert patches == [502, 202, 202, 202, 202, 202]  # 4 MiB + 7 in 1 MiB chunks
    # the failed chunk was sent once more, nothing else twice (the 502 came before upstream saw it)
    assert client.bytes_uploaded == 4 * MiB + 7 + MiB
    dest = tmp_path / "d"
    client.download_blob(repo_name, digest, dest)
    assert h.file_digest(dest) == digest


def test_server_error_mid_way_gives_up_after_bounded_retries(faulty, registry_http, repo_name, tmp_path):
    host, faults = faulty
    client = _client(host, registry_http)
    src = tmp_path / "src"
    digest = h.random_file(src, MiB)
    client.upload_blob(repo_name, digest, src)
    faults.add("GET", r"/blobs/sha256:", times=100, status=500)
    dest = tmp_path / "dest"
    with pytest.raises(RegistryError, match="HTTP 500"):
        client.download_blob(repo_name, digest, dest, partial_dir=tmp_path / "p")
    assert not dest.exists()
    assert len([1 for m, p, r, s in faults.log if s == 500]) == 4  # 1 + retries
    with pytest.raises(NotFoundError):
        client.get_manifest(repo_name, "missing")
