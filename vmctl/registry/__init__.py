"""vmctl's OCI registry support: an OCI distribution client and the push/pull glue.

- :mod:`.refs`: ``HOST/REPO[:TAG][@sha256:…]`` references (None for local names);
- :mod:`.auth`: credentials (vmctl's file, Docker's and podman's read-only), logout;
- :mod:`.transport`: HTTP to one registry — where credentials may go, redirects, retries, bounded reads;
- :mod:`.client`: :class:`RegistryClient` — the API verbs: manifests, resumable verified blobs, listings, login;
- :mod:`.compress`: streaming, deterministic zstd with digests of both sides;
- :mod:`.mediatypes` and FORMAT.md: how a vmctl image looks in a registry;
- :mod:`.mirrors`: which mirrors a pull may ask (vmctl's config, containers-registries.conf(5));
- :mod:`.mirrored`: :class:`MirroredClient` — a pull's reads, mirrors first, verified, origin last;
- :mod:`.transfer`: push/pull between the image store and a registry, search;
- :mod:`.containerdisk`: KubeVirt containerDisks (a disk in a plain container image), both ways.

The client knows nothing about libvirt, the CLI or the store; only :mod:`.transfer` and
:mod:`.containerdisk` use the store.
"""

from vmctl.registry.auth import AuthStore, Credentials, logout
from vmctl.registry.client import RegistryClient, login
from vmctl.registry.refs import RegistryRef, parse_registry_ref, require_registry_ref

__all__ = [
    "AuthStore", "Credentials", "login", "logout", "RegistryClient", "RegistryRef",
    "parse_registry_ref", "require_registry_ref",
]
