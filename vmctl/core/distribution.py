"""Sharing images: push, pull (registries, containerDisks, the cloud image catalog), search, login.

The CLI (``vmctl/cli/registry.py``) parses and prints; this module decides what a reference means:

- ``HOST[:PORT]/REPO[:TAG|@sha256:…]`` (Docker's rule: the first component has a ``.`` or ``:``
  or is ``localhost``) is a registry reference. A pull looks at the manifest: a vmctl image
  (:mod:`vmctl.registry.transfer`) or a container image holding a disk under ``/disk``
  (KubeVirt's containerDisk, :mod:`vmctl.registry.containerdisk`). The pulled image is named
  ``HOST[:PORT]/REPO:TAG`` locally (:attr:`RegistryRef.local_name`), so
  ``vmctl run x --image localhost:5000/tiny`` works after ``vmctl pull localhost:5000/tiny``.
- Anything else (``ubuntu:24.04``, ``debian``) is looked up in the cloud image catalog
  (``templates/catalog/``, :mod:`vmctl.catalog`).

A registry pull asks the registry's configured mirrors first (:mod:`vmctl.registry.mirrors`,
:mod:`vmctl.registry.mirrored`); pushes, searches and logins go to the registry alone.

Every operation takes a `progress(phase, done, total)` callback or None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from vmctl import catalog
from vmctl.core.session import Session
from vmctl.errors import NotFoundError, UsageError
from vmctl.registry import containerdisk, containerdisk as cd, mirrors, transfer
from vmctl.registry.auth import logout as _logout
from vmctl.registry.client import login as _login
from vmctl.registry.mirrored import MirroredClient
from vmctl.registry.refs import RegistryRef, normalize_host, parse_registry_ref, require_registry_ref
from vmctl.registry.transfer import open_client as _open

Progress = Callable[[str, int, "int | None"], None]


def open_client(session: Session, ref_or_host, *, insecure: bool = False, ca_file: str | None = None):
    """A registry client with stored credentials; `insecure` (the flag) or the configured list."""
    return _open(ref_or_host, settings=session.settings, insecure=True if insecure else None, ca_file=ca_file)


# ------------------------------------------------------------------ pull
@dataclass
class PullOutcome:
    source: str                 # "registry", "containerdisk" or "catalog"
    reference: str              # what was pulled, as the user gave it (normalized)
    image: object               # vmctl.storage.Image
    name: str | None            # local NAME:TAG
    digest: str | None = None   # registry manifest digest, or the verified file's checksum
    bytes_downloaded: int = 0
    layers_downloaded: int = 0
    layers_present: int = 0
    details: dict = field(default_factory=dict)
    served: list = field(default_factory=list)   # (kind, digest, host, role) for registry pulls


def pull(session: Session, text: str, *, insecure: bool = False, ca_file: str | None = None,
         progress: Progress | None = None, trace: Callable[[str], None] | None = None) -> PullOutcome:
    """Pull `text` (a registry reference or a catalog name). `trace(line)` hears which host
    served the manifest and each blob, and which mirrors were passed over."""
    ref = parse_registry_ref(text)
    if ref is None:

        entry = catalog.lookup(text)
        if entry is None:
            raise UsageError(
                f"{text!r} is neither a registry reference (HOST[:PORT]/REPO[:TAG]) nor a catalog image; "
                f"known catalog images: {', '.join(catalog.names())}"
            )
        result = catalog.pull(session.store, entry, progress=progress)
        return PullOutcome("catalog", entry.ref, result.image, entry.ref, digest=result.checksum,
                           bytes_downloaded=result.bytes_downloaded,
                           details={"url": result.url, "checksums": result.checksums_url})
    routes = mirrors.routes_for(ref, session.settings)   # a broken registries.conf fails before any request
    client = MirroredClient(open_client(session, ref, insecure=insecure, ca_file=ca_file), ref.repo, routes,
                            trace=trace, warn=session.warn)
    try:
        outcome = _pull_registry(session, ref, client, progress)
    finally:
        client.close()
    outcome.served = list(client.served)
    return outcome


def _pull_registry(session: Session, ref: RegistryRef, client, progress) -> PullOutcome:

    local_ref = f"{ref.local_name}:{ref.tag}" if ref.tag and not ref.digest else None
    kind = containerdisk.classify(client, ref)
    if kind == "containerdisk":
        result = containerdisk.pull(session.store, ref, client, local_ref=local_ref, progress=progress)
        return PullOutcome("containerdisk", str(ref), result.image, local_ref, digest=result.manifest_digest,
                           bytes_downloaded=result.bytes_downloaded, layers_downloaded=result.layers)
    result = transfer.pull(session.store, ref, client, local_ref=local_ref, progress=progress)
    return PullOutcome("registry", str(ref), result.image, local_ref, digest=result.manifest_digest,
                       bytes_downloaded=result.bytes_downloaded, layers_downloaded=len(result.downloaded),
                       layers_present=len(result.present))


# ------------------------------------------------------------------ push
@dataclass
class PushOutcome:
    reference: str
    digest: str
    image_id: str
    bytes_uploaded: int
    blobs: list = field(default_factory=list)   # (kind, digest, status)
    containerdisk: bool = False


def push(session: Session, ref: str, dest: str | None = None, *, containerdisk: bool = False, insecure: bool = False,
         ca_file: str | None = None, progress: Progress | None = None) -> PushOutcome:

    local, remote = transfer.push_args(ref, dest)
    if dest is None and not session.store.exists(local):
        # Before pulls kept the host, images were pushed by their bare name: keep that working.
        bare = f"{remote.repo}:{remote.tag}"
        if session.store.exists(bare):
            local = bare
        else:
            raise NotFoundError(
                f"no image {local} in the store; name one: 'vmctl push IMAGE {remote}' "
                f"(or 'vmctl tag IMAGE {remote}' first)"
            )
    client = open_client(session, remote, insecure=insecure, ca_file=ca_file)
    try:
        if containerdisk:

            r = cd.push(session.store, local, remote, client, progress=progress)
            return PushOutcome(str(remote), r.manifest_digest, r.image_id, r.bytes_uploaded, r.blobs, True)
        r = transfer.push(session.store, local, remote, client, progress=progress)
        return PushOutcome(str(remote), r.manifest_digest, r.image_id, r.bytes_uploaded, r.blobs)
    finally:
        client.close()


# ------------------------------------------------------------------ search
@dataclass(frozen=True)
class SearchRow:
    name: str
    tags: tuple[str, ...]
    source: str          # "catalog" or the registry host
    description: str = ""


def search(session: Session, term: str, *, registry: str | None = None, insecure: bool = False,
           ca_file: str | None = None) -> list[SearchRow]:
    """Search the built-in catalog (no `registry`) or a registry's catalog and tags."""
    if registry is None:

        return [SearchRow(e.name, tuple(e.versions), "catalog", e.description) for e in catalog.search(term)]

    host = normalize_host(registry)
    client = open_client(session, host, insecure=insecure, ca_file=ca_file)
    try:
        hits = transfer.search(client, term)
    finally:
        client.close()
    return [SearchRow(f"{host}/{h.repo}", h.tags, host) for h in hits]


# ------------------------------------------------------------------ login / logout
def login(session: Session, registry: str, username: str, password: str, *, insecure: bool = False,
          ca_file: str | None = None):

    host = normalize_host(registry)
    listed = tuple(session.settings.insecure_registries or ())
    return _login(host, username, password, insecure=insecure or host in listed, ca_file=ca_file)


def logout(session: Session, registry: str) -> bool:

    return _logout(registry)


__all__ = ["pull", "push", "search", "login", "logout", "require_registry_ref", "PullOutcome", "PushOutcome"]
