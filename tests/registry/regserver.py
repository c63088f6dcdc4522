"""Start Debian's ``docker-registry`` (distribution v2) on 127.0.0.1 for tests and benchmarks.

Used by tests/registry/conftest.py and bench/registry_bench.py. Everything lives in one directory the
caller gives: the config YAML, the bcrypt htpasswd file, a CA and server certificate made with
openssl (SAN IP:127.0.0.1) for TLS, the registry's storage and its log.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3

USER = "vmctl"
PASSWORD = "s3cret-pass"
TOOLS = ("docker-registry", "htpasswd", "openssl")


def missing_tools(extra: tuple[str, ...] = ()) -> list[str]:
    return [t for t in (*TOOLS, *extra) if shutil.which(t) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it; returns their paths.

    Also writes ``certs.d/ca.crt`` for skopeo's ``--cert-dir``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=vmctl test CA",
        "-keyout", str(ca_key), "-out", str(ca_crt),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    ext.write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(crt))
    certs_d = directory / "certs.d"
    certs_d.mkdir(exist_ok=True)
    shutil.copy(ca_crt, certs_d / "ca.crt")
    return {"ca": ca_crt, "cert": crt, "key": key, "cert_dir": certs_d}


@dataclass
class RegistryServer:
    """A running registry. `host` is what refs and credentials use (``127.0.0.1:PORT``)."""

    host: str
    url: str
    storage: Path
    workdir: Path
    proc: subprocess.Popen
    tls: bool
    user: str | None = USER
    password: str | None = PASSWORD
    ca_file: Path | None = None
    cert_dir: Path | None = None
    log: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def insecure(self) -> bool:
        """How a client reaches it: plain HTTP needs insecure; TLS is verified with `ca_file`."""
        return not self.tls

    def blob_data_path(self, digest: str) -> Path:
        """The file the registry serves for blob `digest` (for tampering tests)."""
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def skopeo_args(self, direction: str = "") -> list[str]:
        """skopeo options for this registry (`direction` is "src", "dest" or "" for inspect)."""
        pre = f"--{direction}-" if direction else "--"
        args = [f"{pre}creds", f"{self.user}:{self.password}"] if self.user else [f"{pre}no-creds"]
        if self.tls:
            args += [f"{pre}cert-dir", str(self.cert_dir)]
        else:
            args += [f"{pre}tls-verify=false"]
        return args

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, even by SIGKILL (no orphan servers)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start_registry(workdir: Path, *, tls: bool = False, auth: bool = True,
                   certs: dict[str, Path] | None = None, token: dict | None = None,
                   accesslog: bool = False, proxy: dict | None = None) -> RegistryServer:
    """Write a config and start ``docker-registry serve`` on a free 127.0.0.1 port; wait until it answers.

    `proxy` ({"remoteurl", and "username"/"password" for an upstream with auth}) makes it a
    pull-through cache of that registry (read-only; what it fetched lands in its storage)."""
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    port = free_port()
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        f"    disabled: {'false' if accesslog else 'true'}",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {os.urandom(16).hex()}",
    ]
    if tls:
        certs = certs or make_ca(workdir / "pki")
        lines += ["  tls:", f"    certificate: {certs['cert']}", f"    key: {certs['key']}"]
    if token:  # {"realm", "service", "issuer", "rootcertbundle"}: Bearer token auth instead
        lines += ["auth:", "  token:"] + [f"    {k}: {token[k]}" for k in ("realm", "service", "issuer", "rootcertbundle")]
    elif auth:
        htpasswd = workdir / "htpasswd"
        out = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True)
        htpasswd.write_text(out.stdout.strip() + "\n")
        lines += ["auth:", "  htpasswd:", "    realm: vmctl-test", f"    path: {htpasswd}"]
    if proxy:  # a top-level section: after http's nested keys
        lines += ["proxy:"] + [f"  {k}: {v}" for k, v in proxy.items()]
    config = workdir / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = workdir / "registry.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent)
    scheme = "https" if tls else "http"
    host = f"127.0.0.1:{port}"
    server = RegistryServer(
        host=host, url=f"{scheme}://{host}", storage=storage, workdir=workdir, proc=proc, tls=tls,
        user=USER if auth else None, password=PASSWORD if auth else None,
        ca_file=certs["ca"] if tls else None, cert_dir=certs["cert_dir"] if tls else None, log=log,
    )
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            r = requests.get(f"{server.url}/v2/", timeout=1, verify=str(server.ca_file) if tls else True)
            if r.status_code in (200, 401):
                return server
        except requests.exceptions.RequestException:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"docker-registry did not answer on {host}: {log.read_text()[-2000:]}")
        time.sleep(0.1)


urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
