"""Credentials files (model tier) and login against the registry (contract tier)."""

from __future__ import annotations

import base64
import json
import stat

import pytest

from vmctl.errors import AuthError
from vmctl.registry import auth, client as client_mod


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    for var in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_save_is_0600_docker_shaped_and_keeps_other_hosts(home):
    store = auth.AuthStore()
    assert store.path == home / ".config" / "vmctl" / "auth.json"
    store.save("localhost:5000", "alice", "pw:with:colons")
    store.save("https://reg.example.com/", "bob", "x")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    data = json.loads(store.path.read_text())
    assert data["auths"]["localhost:5000"] == {"auth": b64("alice:pw:with:colons")}
    assert store.get("localhost:5000") == auth.Credentials("alice", "pw:with:colons", str(store.path))
    assert store.get("reg.example.com").username == "bob"
    assert store.remove("localhost:5000") is True
    assert store.remove("localhost:5000") is False
    assert store.get("localhost:5000") is None and store.get("reg.example.com") is not None
    assert list(store.path.parent.glob(".*.tmp")) == []
    assert "pw" not in repr(store.get("reg.example.com"))


def test_falls_back_to_docker_and_podman_files_read_only(home, tmp_path):
    docker = home / ".docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": b64("hub:1")},
                                            "localhost:5000": {"auth": b64("dock:2")}},
                                  "credsStore": "desktop"}))
    podman = tmp_path / "run" / "containers" / "auth.json"
    podman.parent.mkdir(parents=True)
    podman.write_text(json.dumps({"auths": {"localhost:5000/team": {"auth": b64("team:3")},
                                            "quay.io": {"auth": b64("pod:4")}}}))
    before = (docker.read_text(), podman.read_text())
    store = auth.AuthStore()
    assert store.get("docker.io").username == "hub"
    assert store.get("quay.io").username == "pod"
    assert store.get("localhost:5000").username == "dock"             # podman key is namespaced
    assert store.get("localhost:5000", "team/app").username == "team"  # most specific wins
    store.save("localhost:5000", "mine", "5")                          # vmctl's own file first
    assert store.get("localhost:5000", "team/app").username == "mine"
    store.remove("localhost:5000")
    assert (docker.read_text(), podman.read_text()) == before


def test_unreadable_or_helper_only_files_give_nothing(home):
    docker = home / ".docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text("{not json")
    assert auth.AuthStore().get("localhost:5000") is None
    docker.write_text(json.dumps({"credHelpers": {"localhost:5000": "pass"}, "auths": {"localhost:5000": {}}}))
    assert auth.AuthStore().get("localhost:5000") is None


@pytest.mark.contract
def test_login_checks_before_storing(home, registry):
    store = auth.AuthStore()
    with pytest.raises(AuthError, match="wrong user name or password"):
        client_mod.login(registry.host, registry.user, "nope", insecure=registry.insecure,
                   ca_file=registry.ca_file, store=store)
    assert not store.path.exists()
    client_mod.login(registry.host, registry.user, registry.password, insecure=registry.insecure,
               ca_file=registry.ca_file, store=store)
    assert store.get(registry.host).username == registry.user
    assert auth.logout(registry.host, store=store) is True
    assert store.get(registry.host) is None
