"""Pulls through registry mirrors, against real registries: Debian's docker-registry as a
pull-through cache (``proxy.remoteurl``) of a second docker-registry, the origin (anonymous: the
2.8 proxy logs in upstream only to Bearer token services, not with Basic auth),
a dead mirror first in the list, an empty registry (404s), a cache whose stored blob was tampered
with, a mirror that forges manifests, an origin that is down, and recording mirrors that show where
credentials go. The CLI (``vmctl pull -v --json``) is what is driven."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from pathlib import Path

import pytest
import regserver
from hostile_registry import HostileRegistry
from reghelpers import private_credentials, random_file, sample_config, sha256, vmctl_manifest

from vmctl.errors import NotFoundError
from vmctl.registry.client import RegistryClient
from vmctl.registry.mirrored import MirroredClient
from vmctl.registry.mirrors import Mirror, Route

pytestmark = pytest.mark.contract
MiB = 1 << 20


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    server = regserver.start_registry(tmp_path_factory.mktemp("mirror-origin"), auth=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cache(origin, tmp_path_factory):
    """A pull-through cache of `origin`."""
    server = regserver.start_registry(tmp_path_factory.mktemp("mirror-cache"), auth=False,
                                      proxy={"remoteurl": origin.url})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory):
    server = regserver.start_registry(tmp_path_factory.mktemp("mirror-empty"), auth=False)
    yield server
    server.stop()


@pytest.fixture
def hostile():
    made = []

    def start(scenario="missing", **params):
        reg = HostileRegistry().start()
        reg.scenario, reg.params = scenario, params
        made.append(reg)
        return reg

    yield start
    for reg in made:
        reg.stop()


@pytest.fixture
def cfg(tmp_path, monkeypatch, vmctl_root):
    """Private credentials; `cfg.mirrors(host, urls)` writes vmctl's config with those mirrors."""
    private_credentials(tmp_path, monkeypatch)

    class Cfg:
        @staticmethod
        def mirrors(host: str, urls: list[str]) -> None:
            (tmp_path / "no-config.toml").write_text(f'[registries."{host}"]\nmirrors = {json.dumps(urls)}\n')
    return Cfg


def _login(cli_run, host, user, password):
    result = cli_run("login", host, "-u", user, "--password-stdin", "--insecure", input=password + "\n")
    assert result.exit_code == 0, result.output


def _pushed(cli_run, tmp_path, origin, repo_name, tag="1") -> tuple[str, str]:
    """Import a small random disk, push it to the origin, remove it locally: (image id, reference)."""
    raw = tmp_path / f"disk-{tag}.raw"
    with open(raw, "wb") as fh:
        fh.truncate(8 * MiB)
        fh.seek(MiB)
        fh.write(os.urandom(MiB))
    image_id = cli_run("image", "import", str(raw), f"base:{tag}").stdout.strip()
    remote = f"{origin.host}/{repo_name}:{tag}"
    pushed = cli_run("push", f"base:{tag}", remote, "--insecure")
    assert pushed.exit_code == 0, pushed.output
    assert cli_run("rmi", f"base:{tag}").exit_code == 0
    cli_run("image", "prune")
    return image_id, remote


def _pull(cli_run, remote, *extra):
    result = cli_run("pull", remote, "--insecure", "-v", "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def _short(digest: str) -> str:
    return digest.split(":", 1)[1][:12]


def _wait_for(path: Path, seconds: float = 20) -> bool:
    # the cache stores what it proxied in the background, after the answer
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.exists()


def _reset(cli_run, remote):
    assert cli_run("rmi", remote).exit_code == 0
    cli_run("image", "prune")


# ------------------------------------------------------------------ a real pull-through cache
def test_pull_is_served_by_the_pull_through_cache(cli_run, cfg, origin, cache, tmp_path, repo_name):
    image_id, remote = _pushed(cli_run, tmp_path, origin, repo_name)
    cfg.mirrors(origin.host, [cache.url])

    data, stderr = _pull(cli_run, remote)
    assert data["id"] == image_id and data["name"] == remote
    served = data["served_by"]
    assert [s["kind"] for s in served] == ["manifest"] + ["blob"] * (len(served) - 1) and len(served) >= 3
    assert {(s["host"], s["role"]) for s in served} == {(cache.host, "mirror")}
    for s in served:   # one line each on stderr, naming the host
        assert f"{_short(s['digest'])}: {s['kind']} from {cache.host} (mirror)" in stderr.splitlines()
    for s in served[1:]:   # the bytes really went through the cache: it keeps them now
        assert _wait_for(cache.blob_data_path(s["digest"])), s


def test_a_dead_mirror_first_in_the_list_is_passed_over_once(cli_run, cfg, origin, cache, tmp_path,
                                                             repo_name):
    image_id, remote = _pushed(cli_run, tmp_path, origin, repo_name)
    dead = f"127.0.0.1:{regserver.free_port()}"
    cfg.mirrors(origin.host, [f"http://{dead}", cache.url])

    data, stderr = _pull(cli_run, remote)
    assert data["id"] == image_id
    assert {(s["host"], s["role"]) for s in data["served_by"]} == {(cache.host, "mirror")}
    passed = [line for line in stderr.splitlines() if line.startswith(f"mirror {dead} passed over")]
    assert len(passed) == 1 and "Connection refused" in passed[0]   # not asked again for every blob


def test_a_mirror_without_the_image_falls_back_to_the_origin(cli_run, cfg, origin, empty_registry,
                                                             tmp_path, repo_name):
    image_id, remote = _pushed(cli_run, tmp_path, origin, repo_name)
    cfg.mirrors(origin.host, [empty_registry.url])

    data, stderr = _pull(cli_run, remote)
    assert data["id"] == image_id
    assert {(s["host"], s["role"]) for s in data["served_by"]} == {(origin.host, "origin")}
    # asked (and 404) for the manifest and for every blob: a cache may hold some objects only
    assert sum(f"not on mirror {empty_registry.host}" in line for line in stderr.splitlines()) == len(data["served_by"])


# ------------------------------------------------------------------ hostile mirrors
def test_a_tampered_blob_from_the_mirror_is_discarded_and_fetched_from_the_origin(
        cli_run, cfg, origin, cache, tmp_path, repo_name, vmctl_root):
    image_id, remote = _pushed(cli_run, tmp_path, origin, repo_name)
    cfg.mirrors(origin.host, [cache.url])
    first, _ = _pull(cli_run, remote)                     # fills the cache
    layer = max(first["served_by"][1:], key=lambda s: cache.blob_data_path(s["digest"]).stat().st_size
                if _wait_for(cache.blob_data_path(s["digest"])) else 0)["digest"]
    _reset(cli_run, remote)
    path = cache.blob_data_path(layer)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))                         # the cache now serves wrong bytes for it

    again = cli_run("pull", remote, "--insecure", "-v", "--json")
    assert again.exit_code == 0, again.output
    out = json.loads(again.stdout)
    assert out["id"] == image_id
    by_digest = {s["digest"]: (s["host"], s["role"]) for s in out["served_by"]}
    assert by_digest[layer] == (origin.host, "origin")
    warning = [line for line in again.stderr.splitlines() if line.startswith("vmctl: warning:")]
    assert len(warning) == 1 and f"mirror {cache.host} served a blob that fails verification" in warning[0]
    assert "does not match its digest" in warning[0]
    partial = vmctl_root / "cache" / "registry" / "partial"
    assert list(partial.glob("*.partial")) == [] and list(partial.glob("*.verified")) == []
    assert cli_run("image", "inspect", remote).exit_code == 0


def test_a_forging_mirror_cannot_change_what_a_tag_names(cli_run, cfg, origin, hostile, tmp_path,
                                                         repo_name):
    image_id, remote = _pushed(cli_run, tmp_path, origin, repo_name)
    config = sample_config()
    forged = vmctl_manifest(config, [(sha256(b"x"), 1, sha256(b"y"), 1)])
    liar = hostile("json", body=forged, type="application/vnd.oci.image.manifest.v1+json",
                   headers={"Docker-Content-Digest": sha256(forged)})
    cfg.mirrors(origin.host, [f"http://{liar.host}"])

    result = cli_run("pull", remote, "--insecure", "-v", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["id"] == image_id
    assert {(s["host"], s["role"]) for s in out["served_by"]} == {(origin.host, "origin")}
    # the tag was resolved at the origin: the mirror was asked by digest only, and then never again
    asked = [path for method, path, _ in liar.requests if path != "/v2/"]
    assert asked == [f"/v2/{repo_name}/manifests/{out['digest']}"]
    assert "fails verification" in result.stderr


def test_when_the_origin_is_down_a_mirror_resolves_the_tag(cli_run, cfg, origin, cache, tmp_path,
                                                           repo_name):
    image_id, _ = _pushed(cli_run, tmp_path, origin, repo_name)
    # the cache serves repositories by name: a reference to a dead host with the cache as its mirror
    down = f"127.0.0.1:{regserver.free_port()}"
    cfg.mirrors(down, [cache.url])

    data, stderr = _pull(cli_run, f"{down}/{repo_name}:1")
    assert data["id"] == image_id
    assert data["served_by"][0]["role"] == "mirror, tag resolved there"
    assert {s["host"] for s in data["served_by"]} == {cache.host}
    assert f"{repo_name}:1: the origin cannot resolve the tag ({down}: cannot reach the registry" in stderr


# ------------------------------------------------------------------ credentials
def test_the_origins_credentials_never_reach_a_mirror_and_pushes_skip_mirrors(
        cli_run, cfg, registry_http, hostile, tmp_path, repo_name):
    _login(cli_run, registry_http.host, registry_http.user, registry_http.password)
    image_id, remote = _pushed(cli_run, tmp_path, registry_http, repo_name)
    anonymous = hostile("missing")                     # records every request; has nothing
    own = hostile("basic")                             # asks for Basic auth: alice / pw
    _login(cli_run, own.host, own.user, own.password)  # vmctl has credentials for this mirror too
    own.requests.clear()
    cfg.mirrors(registry_http.host, [f"http://{anonymous.host}", f"http://{own.host}"])

    data, _ = _pull(cli_run, remote)
    assert data["id"] == image_id and {s["role"] for s in data["served_by"]} == {"origin"}
    assert anonymous.requests and all(auth is None for _, _, auth in anonymous.requests)
    alice = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert {auth for _, _, auth in own.requests} <= {None, alice}
    assert alice in {auth for _, _, auth in own.requests}

    seen = len(anonymous.requests), len(own.requests)
    image = cli_run("image", "import", str(_tiny_raw(tmp_path)), "pushme:1")
    assert image.exit_code == 0, image.output
    pushed = cli_run("push", "pushme:1", f"{registry_http.host}/{repo_name}:pushed", "--insecure")
    assert pushed.exit_code == 0, pushed.output
    assert (len(anonymous.requests), len(own.requests)) == seen    # pushes go to the origin alone


def _tiny_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "tiny.raw"
    raw.write_bytes(os.urandom(64 << 10) + bytes(MiB - (64 << 10)))
    return raw


# ------------------------------------------------------------------ the client itself: 5xx, timeouts
def test_mirrors_answering_5xx_or_nothing_are_passed_over(registry_http, client_for, hostile, tmp_path, repo_name):
    origin = client_for(registry_http)
    digest = random_file(tmp_path / "blob", 4096)
    origin.upload_blob(repo_name, digest, tmp_path / "blob")
    failing = hostile("status", code=503)
    silent = socket.socket()              # accepts connections (backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent_host = f"127.0.0.1:{silent.getsockname()[1]}"
    lines: list[str] = []
    routes = [Route(Mirror(host, "", "http", True), repo_name) for host in (failing.host, silent_host)]
    client = MirroredClient(RegistryClient(registry_http.host, insecure=True, credentials=origin.credentials),
                            repo_name, routes, trace=lines.append,
                            client_kw={"timeout": (2.0, 1.0), "backoff": 0.01})
    try:
        started = time.monotonic()
        assert sha256(client.get_blob_bytes(repo_name, digest)) == digest
        assert time.monotonic() - started < 15
        assert client.served == [("blob", digest, registry_http.host, "origin")]
        assert lines[0].startswith(f"mirror {failing.host} passed over: {failing.host}: blob {digest}: HTTP 503")
        assert lines[1].startswith(f"mirror {silent_host} passed over: ") and "timed out" in lines[1]
        assert lines[2] == f"{_short(digest)}: blob from {registry_http.host} (origin)"
        failing.requests.clear()
        dest = tmp_path / "again"
        client.download_blob(repo_name, digest, dest, partial_dir=tmp_path / "partial")
        assert failing.requests == [] and dest.exists()   # a mirror that failed is not asked again
    finally:
        client.close()
        silent.close()


def test_a_mirror_error_does_not_hide_the_origins(registry_http, client_for, hostile, repo_name):
    """When neither the mirrors nor the origin have it, the error is the origin's."""
    origin = client_for(registry_http)
    failing = hostile("status", code=500)
    routes = [Route(Mirror(failing.host, "", "http", True), repo_name)]
    client = MirroredClient(RegistryClient(registry_http.host, insecure=True, credentials=origin.credentials),
                            repo_name, routes, client_kw={"backoff": 0.01})
    try:
        with pytest.raises(NotFoundError) as exc:
            client.get_manifest(repo_name, "sha256:" + "0" * 64)
        assert exc.value.message.startswith(f"{registry_http.host}: ") and "manifest unknown" in exc.value.message
        assert [m for m, _, _ in failing.requests if m == "GET"] == ["GET", "GET"]   # asked, retried once
    finally:
        client.close()
