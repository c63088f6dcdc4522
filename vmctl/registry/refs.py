"""Registry references, Docker's grammar: ``HOST[:PORT]/REPO[:TAG][@sha256:HEX]``.

The first ``/``-separated component is a registry host when it contains ``.`` or ``:`` or is
``localhost`` (exactly Docker's rule), so ``localhost:5000/tiny``, ``registry.example.com/a/b:1`` and
``127.0.0.1:5000/x@sha256:...`` are registry references while ``tiny:latest`` or ``debian/12`` are
local image names: :func:`parse_registry_ref` returns None for those, so the CLI can tell them apart.

Repository paths follow the OCI distribution grammar (lowercase components joined by ``/``); the tag
defaults to ``latest`` unless a digest is given. ``docker.io`` names are normalized as Docker does
(``docker.io/debian`` is ``library/debian`` on ``registry-1.docker.io``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmctl.errors import UsageError

DEFAULT_TAG = "latest"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class RegistryRef:
    """A parsed registry reference. `tag` is None only when the reference gives a digest alone."""

    host: str          # as typed (normalized for Docker Hub): the key for credentials
    repo: str          # repository path inside the registry
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes into ``/v2/<repo>/manifests/<reference>``: the digest if given, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def api_host(self) -> str:
        """The host the HTTP API is reached at (Docker Hub's API lives on another name)."""
        return DOCKER_HUB_API if self.host in DOCKER_HUB_NAMES else self.host

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repo}"

    @property
    def local_name(self) -> str:
        """The repository name a pulled image gets in the local store, Docker's way: the full
        ``HOST[:PORT]/REPO`` (``localhost:5000/tiny``), except Docker Hub's, which drops its host and
        ``library/`` (``docker.io/library/debian`` -> ``debian``)."""
        if self.host == "docker.io":
            return self.repo[len("library/"):] if self.repo.startswith("library/") else self.repo
        return f"{self.host}/{self.repo}"

    def __str__(self) -> str:
        out = self.name
        if self.tag and not self.digest:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def is_registry_host(component: str) -> bool:
    """Docker's rule: a first path component is a host if it has a dot or a colon, or is localhost."""
    return ("." in component or ":" in component or component == "localhost") and bool(
        _HOST.fullmatch(component)
    )


def check_repo(repo: str) -> str:
    if not repo or len(repo) > 255 or not _REPO.fullmatch(repo):
        raise UsageError(
            f"invalid repository {repo!r}: use lowercase letters, digits and single separators "
            "('.', '_', '-') in '/'-separated components"
        )
    return repo


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag or ""):
        raise UsageError(f"invalid tag {tag!r}: letters, digits, '_', '.' and '-', at most 128")
    return tag


def normalize_host(text: str) -> str:
    """A registry host as users type it for login/logout: drop a scheme and any path."""
    host = text.strip()
    for scheme in ("https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme):]
    host = host.split("/", 1)[0]
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = "docker.io"
    if not host or not _HOST.fullmatch(host):
        raise UsageError(f"invalid registry {text!r}: expected HOST or HOST:PORT")
    return host


def parse_registry_ref(text: str) -> RegistryRef | None:
    """Parse ``HOST/REPO[:TAG][@DIGEST]``; None if `text` has no registry host (a local name).

    Raises UsageError when `text` has a host part but is otherwise malformed.
    """
    if not isinstance(text, str) or "/" not in text:
        return None
    host, rest = text.split("/", 1)
    if not is_registry_host(host):
        return None
    digest = None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise UsageError(f"invalid reference {text!r}: expected @sha256:<64 lowercase hex digits>")
    tag = None
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], check_tag(rest[colon + 1:])
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    if host in DOCKER_HUB_NAMES:
        host = "docker.io"
        if "/" not in rest:
            rest = f"library/{rest}"
    return RegistryRef(host=host, repo=check_repo(rest), tag=tag, digest=digest)


def require_registry_ref(text: str) -> RegistryRef:
    """Like :func:`parse_registry_ref`, but a reference without a host is a UsageError."""
    ref = parse_registry_ref(text)
    if ref is None:
        raise UsageError(
            f"{text!r} does not name a registry: use HOST[:PORT]/REPO[:TAG] "
            "(for example localhost:5000/tiny:latest)"
        )
    return ref
