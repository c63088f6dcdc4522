"""The Bearer token flow against docker-registry configured for token auth, with a token service
written here (JWTs signed RS256 with an x5c certificate the registry trusts)."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import subprocess
import threading
import time
from urllib.parse import parse_qs, urlparse

import pytest
import regserver
import reghelpers as h

from vmctl.errors import AuthError
from vmctl.registry import transfer
from vmctl.registry.auth import Credentials
from vmctl.registry.client import RegistryClient

pytestmark = pytest.mark.contract
SERVICE, ISSUER = "vmctl-test-registry", "vmctl-test-issuer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    def __init__(self, key_path, cert_path):
        from cryptography.hazmat.primitives import serialization
        from cryptography import x509

        self.key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.requests: list[dict] = []

    def token(self, subject: str, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(sig)}"


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    missing = regserver.missing_tools()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}")
    work = tmp_path_factory.mktemp("registry-token")
    key, crt = work / "token.key", work / "token.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=vmctl token signer", "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    service = TokenService(key, crt)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            q = parse_qs(url.query)
            auth = self.headers.get("Authorization", "")
            user = None
            if auth.startswith("Basic "):
                u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                if (u, p) != (regserver.USER, regserver.PASSWORD):
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                user = u
            scopes = q.get("scope", []) if user else []
            service.requests.append({"user": user, "scopes": scopes, "service": q.get("service")})
            body = json.dumps({"token": service.token(user or "", scopes), "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    realm = f"http://127.0.0.1:{httpd.server_address[1]}/token"
    server = regserver.start_registry(work / "reg", tls=False, token={
        "realm": realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(crt)})
    yield server, service
    server.stop()
    httpd.shutdown()
    httpd.server_close()


def _client(server, password=regserver.PASSWORD):
    return RegistryClient(server.host, insecure=True, retries=1, backoff=0.01,
                          credentials=Credentials(regserver.USER, password) if password else None)


def test_bearer_login_push_pull_and_catalog(token_registry, tmp_path):
    server, service = token_registry
    client = _client(server)
    assert client.ping()["auth"] == "bearer"
    src = tmp_path / "blob"
    digest = h.random_file(src, 3 << 20)
    assert client.upload_blob("tok/a", digest, src) == "uploaded"
    assert client.upload_blob("tok/b", digest, src, mount_from="tok/a") == "mounted"
    config = h.sample_config()
    client.upload_blob("tok/a", h.sha256(config), io.BytesIO(config), len(config))
    manifest = h.vmctl_manifest(config, [(digest, 3 << 20, h.sha256(b"x"), 1)])
    client.put_manifest("tok/a", "v1", manifest)
    assert client.get_manifest("tok/a", "v1")[0] == manifest
    client.download_blob("tok/a", digest, tmp_path / "out", size=3 << 20)
    assert h.file_digest(tmp_path / "out") == digest
    assert "tok/a" in client.catalog()
    assert [hit.repo for hit in transfer.search(client, "tok/")] == ["tok/a", "tok/b"]
    scopes = {s for r in service.requests for s in r["scopes"]}
    assert {"repository:tok/a:pull,push", "repository:tok/b:pull,push", "repository:tok/a:pull",
            "registry:catalog:*"} <= scopes
    assert all(r["service"] == [SERVICE] for r in service.requests)


def test_bearer_wrong_password_and_anonymous(token_registry):
    server, _ = token_registry
    with pytest.raises(AuthError, match="wrong user name or password"):
        _client(server, "nope").check_login()
    with pytest.raises(AuthError):
        _client(server, None).list_tags("tok/a")
