"""Registry credentials: vmctl's own file, and read-only fallbacks to Docker's and podman's
(checking them against a registry is :func:`vmctl.registry.client.login`).

vmctl writes ``user_config_dir()/auth.json`` (mode 0600, directory 0700, atomic rename, one writer at
a time through a lock file) in Docker's shape, ``{"auths": {"HOST": {"auth": base64("user:pass")}}}``,
so the files are interchangeable. When vmctl has no entry for a host it reads, in order and never
writing them, ``$REGISTRY_AUTH_FILE``, ``${XDG_RUNTIME_DIR}/containers/auth.json``,
``~/.config/containers/auth.json`` (podman, skopeo, buildah) and ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json`` (Docker). Keys there may carry a scheme or a path (``https://host/v1/``,
``host/namespace``): the most specific key for the repository wins, as in containers-auth.json(5).

Not supported: credential helpers (``credsStore``/``credHelpers``) and identity (refresh) tokens;
hosts configured only that way are reported as having no credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path

from vmctl.config import user_config_dir
from vmctl.errors import UsageError
from vmctl.fsutil import atomic_write, lock_file, private_dirs
from vmctl.registry.refs import normalize_host

AUTH_FILE_NAME = "auth.json"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str = ""  # the file they came from, for messages

    def __repr__(self) -> str:  # never print a password by accident
        return f"Credentials(username={self.username!r}, source={self.source!r})"


def vmctl_auth_file() -> Path:
    return user_config_dir() / AUTH_FILE_NAME


def foreign_auth_files() -> list[Path]:
    """The podman and Docker files read when vmctl has no credentials, highest priority first."""
    home = Path.home()
    out: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        out.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        out.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    xdg_config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    out.append(xdg_config / "containers" / "auth.json")
    docker_dir = Path(os.environ["DOCKER_CONFIG"]) if os.environ.get("DOCKER_CONFIG") else home / ".docker"
    out.append(docker_dir / "config.json")
    return out


def _key_host_path(key: str) -> tuple[str, str]:
    """``https://host:5000/v1/`` -> ("host:5000", ""); ``host/ns/repo`` -> ("host", "ns/repo")."""
    k = key.strip()
    for scheme in ("https://", "http://"):
        if k.lower().startswith(scheme):
            k = k[len(scheme):]
            # a URL key's path is an API path (Docker's "/v1/"), not a namespace
            return _hub(k.split("/", 1)[0]), ""
    host, _, path = k.partition("/")
    return _hub(host), path.strip("/")


def _hub(host: str) -> str:
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def _decode(entry) -> tuple[str, str] | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("auth"):
        try:
            text = base64.b64decode(entry["auth"], validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        user, sep, password = text.partition(":")
        if sep and user:
            return user, password
        return None
    if entry.get("username") and "password" in entry:
        return str(entry["username"]), str(entry["password"])
    return None


def _read_json(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lookup_in(path: Path, host: str, repo: str | None = None) -> Credentials | None:
    """The credentials file `path` holds for `host` (and `repo`, for namespaced keys), if any."""
    auths = _read_json(path).get("auths")
    if not isinstance(auths, dict):
        return None
    best: tuple[int, tuple[str, str]] | None = None
    for key, entry in auths.items():
        if not isinstance(key, str):
            continue
        khost, kpath = _key_host_path(key)
        if khost != host:
            continue
        if kpath and not (repo and (repo == kpath or repo.startswith(kpath + "/"))):
            continue
        decoded = _decode(entry)
        if decoded is None:
            continue
        rank = len(kpath)
        if best is None or rank > best[0]:
            best = (rank, decoded)
    if best is None:
        return None
    return Credentials(best[1][0], best[1][1], str(path))


class AuthStore:
    """vmctl's credentials file, plus the read-only fallbacks."""

    def __init__(self, path: Path | None = None, *, fallbacks: list[Path] | None = None):
        self.path = Path(path) if path else vmctl_auth_file()
        self.fallbacks = foreign_auth_files() if fallbacks is None else list(fallbacks)

    def get(self, host: str, repo: str | None = None) -> Credentials | None:
        host = normalize_host(host)
        for path in [self.path, *self.fallbacks]:
            creds = lookup_in(path, host, repo)
            if creds is not None:
                return creds
        return None

    def hosts(self) -> list[str]:
        auths = _read_json(self.path).get("auths")
        return sorted(auths) if isinstance(auths, dict) else []

    def _lock(self):
        """One writer at a time: an flock on ``auth.json.lock``, removed afterwards."""
        private_dirs(self.path.parent)
        return lock_file(Path(str(self.path) + ".lock"))

    def _write(self, data: dict) -> None:
        atomic_write(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)

    def save(self, host: str, username: str, password: str) -> None:
        """Store credentials for `host` (replacing any), keeping every other entry of the file."""
        host = normalize_host(host)
        if not username or ":" in username:
            raise UsageError("invalid user name: it must be non-empty and contain no ':'")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        with self._lock():
            data = _read_json(self.path)
            auths = data.get("auths") if isinstance(data.get("auths"), dict) else {}
            auths[host] = {"auth": token}
            data["auths"] = auths
            self._write(data)

    def remove(self, host: str) -> bool:
        """Forget `host`; True if vmctl had credentials for it (foreign files are never touched)."""
        host = normalize_host(host)
        with self._lock():
            data = _read_json(self.path)
            auths = data.get("auths") if isinstance(data.get("auths"), dict) else {}
            gone = [k for k in auths if _key_host_path(k)[0] == host]
            for k in gone:
                del auths[k]
            if gone:
                data["auths"] = auths
                self._write(data)
            return bool(gone)


def logout(host: str, *, store: AuthStore | None = None) -> bool:
    return (store or AuthStore()).remove(host)
