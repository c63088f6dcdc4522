"""The real `vmctl` program against a registry that lies (tests/registry/hostile_registry.py).

Each case runs vmctl as a subprocess, as users do, and checks: the documented exit code, one line
on stderr, the store unchanged, credentials sent nowhere else, and vmctl's own peak memory (VmHWM,
read at its exit) far below anything the registry claimed or sent.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.figures import record
from tests.registry.hostile_registry import HostileRegistry, Listener

pytestmark = pytest.mark.contract
MEASURED = Path(__file__).with_name("measured.py")
PEAK_LIMIT_MIB = 100


@pytest.fixture(scope="module")
def hostile():
    reg = HostileRegistry().start()
    yield reg
    reg.stop()


@pytest.fixture
def listener():
    lis = Listener().start()
    yield lis
    lis.stop()


@pytest.fixture
def home(tmp_path):
    """A private HOME/XDG config for vmctl's credentials, and a data root."""
    env = dict(os.environ)
    env.update({"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
                "VMCTL_ROOT": str(tmp_path / "root"), "VMCTL_CONFIG": "/dev/null"})
    for k in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "VMCTL_MODE", "VMCTL_CONNECT"):
        env.pop(k, None)
    (tmp_path / "home").mkdir()
    return env, tmp_path / "root"


def vmctl(env, *args, input: str | None = None):
    """Run vmctl; returns (exit code, stderr without the measurement line, peak RSS in MiB)."""
    proc = subprocess.run([sys.executable, str(MEASURED), *args], env=env, capture_output=True,
                          text=True, timeout=300, input=input)
    lines = proc.stderr.rstrip("\n").split("\n")
    peak = int(lines[-1].split("=", 1)[1]) / 1024 if lines and lines[-1].startswith("VMHWM_KIB=") else None
    return proc.returncode, "\n".join(lines[:-1]).strip(), peak


def tree(root: Path) -> set[str]:
    """The files under `root` (an empty store layout made on first use does not count)."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def check_refused(env, root, args, code: int, match: str):
    before = tree(root)
    got, err, peak = vmctl(env, *args)
    assert got == code, err
    assert err.startswith("vmctl: error: ") and "\n" not in err, err
    assert match in err, err
    assert tree(root) == before
    assert peak is not None and peak < PEAK_LIMIT_MIB, f"vmctl peaked at {peak:.0f} MiB"
    record("hostile registry answers tried", 1)
    record("vmctl peak memory under hostile registry answers", peak, how="max", unit="MiB")
    return err


def test_login_credentials_never_go_to_a_plain_http_realm_elsewhere(hostile, listener, home):
    env, root = home
    hostile.scenario = "basic"
    code, err, _ = vmctl(env, "login", hostile.host, "-u", "alice", "--password-stdin", "--insecure", input="pw\n")
    assert code == 0, err
    hostile.scenario, hostile.params = "realm-elsewhere", {"realm": f"{listener.url}/token"}
    check_refused(env, root, ["pull", f"{hostile.host}/team/app:1", "--insecure"], 13, "not HTTPS")
    check_refused(env, root, ["search", "app", "--registry", hostile.host, "--insecure"], 13, "no credentials were sent")
    assert listener.seen == []
    # a realm with another scheme entirely, one that is not a URL, and one whose host two URL
    # parsers read differently (urllib3 would connect to 127.0.0.2, urlparse says 127.0.0.1)
    for realm, match in [("ftp://127.0.0.2/token", "malformed token service"),
                         ("javascript:alert(1)", "malformed token service"),
                         (f"http://127.0.0.2:{listener.port}\\@127.0.0.1/token", "malformed token service")]:
        hostile.params = {"realm": realm}
        check_refused(env, root, ["pull", f"{hostile.host}/team/app:1", "--insecure"], 12, match)
    assert listener.seen == []


HOSTILE_PULLS = {
    "a 1 GiB error page": ("huge-error", {}, 12, "HTTP 400"),
    "a 1 GiB chunked manifest": ("huge-manifest", {}, 12, "larger than"),
    "a manifest declaring 1 GiB": ("huge-declared", {}, 12, "more than the"),
    "a redirect to ftp": ("redirect", {"location": "ftp://127.0.0.1/x"}, 12, "non-HTTP URL"),
    "a redirect to a file URL": ("redirect", {"location": "file:///etc/passwd"}, 12, "non-HTTP URL"),
    "a redirect without Location": ("redirect", {"location": None}, 12, "without a Location"),
    "a redirect loop": ("redirect", {"location": "/v2/team/app/manifests/1"}, 12, "more than 5 redirects"),
    "a redirect to a broken IPv6 URL": ("redirect", {"location": "http://[::1"}, 12, "malformed URL"),
    "a redirect with a user-info part": ("redirect", {"location": "http://evil@127.0.0.1/x"}, 12, "ambiguous"),
    "a manifest whose config is a string": ("json", {"body": {"schemaVersion": 2, "config": "x", "layers": []},
                                                     "type": "application/vnd.oci.image.manifest.v1+json"},
                                            12, "config descriptor"),
    "a manifest that is a JSON list": ("json", {"body": [1, 2, 3],
                                                "type": "application/vnd.oci.image.manifest.v1+json"}, 12, "manifest"),
    "a manifest with a string for layers": ("json", {"body": {"schemaVersion": 2, "layers": "x",
                                                              "artifactType": "application/vnd.vmctl.image.v1",
                                                              "config": {"mediaType": "x"}},
                                                     "type": "application/vnd.oci.image.manifest.v1+json"},
                                            12, "layers must be a list"),
    "a compressed manifest": ("json", {"body": b"\x1f\x8b\x08\x00garbage", "headers": {"Content-Encoding": "gzip"},
                                       "type": "application/vnd.oci.image.manifest.v1+json"}, 12, "compressed"),
    "a malformed Docker-Content-Digest": ("json", {"body": {"schemaVersion": 2},
                                                   "headers": {"Docker-Content-Digest": "sha256:../../x"}},
                                          12, "malformed digest"),
    "an index listing numbers": ("index-then", {"manifests": [1, 2]}, 12, "not a JSON object"),
    "an index with a path for a digest": ("index-then", {"manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "../../../etc/passwd", "size": 1,
         "artifactType": "application/vnd.vmctl.image.v1"}]}, 12, "is not a sha256 digest"),
    "an index with a string for a size": ("index-then", {"manifests": [
        {"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": "12"}]}, 12, "not a non-negative integer"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PULLS))
def test_a_hostile_answer_to_pull_is_one_line_in_bounded_memory(hostile, home, case):
    env, root = home
    scenario, params, code, match = HOSTILE_PULLS[case]
    hostile.scenario, hostile.params = scenario, params
    check_refused(env, root, ["pull", f"{hostile.host}/team/app:1", "--insecure"], code, match)


HOSTILE_LISTINGS = {
    "pages that never end": ("endless-pages", {}, "more than 1000 pages"),
    "pages in a circle": ("circular-pages", {}, "circle"),
    "a next page on another host": ("next-page-elsewhere", {"elsewhere": "http://127.0.0.2:9"}, "another host"),
    "a catalog with a number for its list": ("json", {"body": {"repositories": 7}}, "not a list of names"),
    "a catalog listing objects": ("json", {"body": {"repositories": [{"x": 1}]}}, "not a list of names"),
    "a 1 GiB catalog page": ("huge-manifest", {}, "larger than"),
    "names of 40 KB": ("json", {"body": {"repositories": ["r" * 40_000] * 90}}, "longer than 255"),
    "a broken next link": ("json", {"body": {"repositories": ["r"]}, "headers": {"Link": '<http://[x>; rel="next"'}},
                           "malformed URL"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_LISTINGS))
def test_a_hostile_catalog_is_bounded(hostile, home, case):
    env, root = home
    scenario, params, match = HOSTILE_LISTINGS[case]
    hostile.scenario, hostile.params = scenario, params
    check_refused(env, root, ["search", "r", "--registry", hostile.host, "--insecure"], 12, match)


def test_https_never_steps_down_to_plain_http(tmp_path, home):
    from tests.registry.regserver import make_ca

    certs = make_ca(tmp_path / "ca")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs["cert"], certs["key"])
    reg = HostileRegistry().start(ssl_context=ctx)
    try:
        env, root = home
        reg.scenario, reg.params = "redirect", {"location": f"http://{reg.host}/v2/team/app/manifests/1"}
        check_refused(env, root, ["pull", f"{reg.host}/team/app:1", "--ca-file", str(certs["ca"])], 12,
                      "from HTTPS to plain HTTP")
        lis = Listener(address="127.0.0.1").start()
        try:
            reg.scenario, reg.params = "realm-elsewhere", {"realm": f"{lis.url}/token"}
            code, err, _ = vmctl(env, "login", reg.host, "-u", "alice", "--password-stdin",
                                 "--ca-file", str(certs["ca"]), input="pw\n")
            assert code == 13 and "not HTTPS" in err, err
            assert lis.seen == []  # the same host, but plain HTTP for a registry that is not insecure
        finally:
            lis.stop()
    finally:
        reg.stop()


def test_a_token_service_elsewhere_gets_verified_tls_even_for_an_insecure_registry(hostile, home, tmp_path):
    """--insecure is about the registry named; an HTTPS realm on another host must present a
    certificate the system trusts before the credentials go there."""
    from tests.registry.regserver import make_ca

    env, root = home
    certs = make_ca(tmp_path / "ca")   # not a CA the system trusts
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs["cert"], certs["key"])
    lis = Listener().start()
    lis.httpd.socket = ctx.wrap_socket(lis.httpd.socket, server_side=True)
    try:
        hostile.scenario = "basic"
        code, err, _ = vmctl(env, "login", hostile.host, "-u", "alice", "--password-stdin", "--insecure", input="pw\n")
        assert code == 0, err
        hostile.scenario, hostile.params = "realm-elsewhere", {"realm": f"https://127.0.0.2:{lis.port}/token"}
        check_refused(env, root, ["pull", f"{hostile.host}/team/app:1", "--insecure"], 12, "TLS verification failed")
        assert lis.seen == []
    finally:
        lis.stop()
