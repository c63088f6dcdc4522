"""Pulls through mirrors: a client that asks each mirror in turn, then the registry itself.

:class:`MirroredClient` has the read verbs of :class:`RegistryClient` a pull uses
(``get_manifest``, ``get_blob_bytes``, ``download_blob``), so :mod:`.transfer` and
:mod:`.containerdisk` pull through it unchanged. Which mirrors a reference has is
:mod:`.mirrors`; this module promises how they are used:

- **Verified exactly as the origin's answers**: every mirror is a RegistryClient of its own, so its
  blobs are hashed against their digests and its manifests against the digest asked for, by the
  same code. Bytes that fail are discarded (never stored), a warning names the mirror, and the
  next source is asked.
- **Tags stay the origin's**: a mirror is asked for a manifest *by digest*. For a tag, the origin
  is asked first what the tag names (``HEAD``, one small request, as Docker does), so a stale or
  lying mirror cannot change the image a tag pull yields. Only when the origin cannot answer
  (unreachable, a server error, login required) do the mirrors resolve the tag; the image is then
  the mirror's word for it, and ``-v`` says which mirror that was.
- **Fallback**: a mirror that is down (connection refused, timeout, 5xx after one retry), refuses
  (401/403) or serves bad bytes is not asked again during this pull; one that lacks an object
  (404) is asked for the next one. After the mirrors comes the origin, whose errors are final.
- **Credentials**: each mirror's client gets only its own host's stored credentials (if any), and
  the transport sends credentials only to the host they belong to: a mirror never sees the
  origin's, the origin never sees a mirror's.
- Pushes never come here: they use the origin's client alone.

`trace(line)` hears one line per object served (``1a2b3c4d5e6f: blob from HOST (mirror)``) and per
mirror passed over; `warn(line)` hears bad bytes.
"""

from __future__ import annotations

from typing import Callable

from vmctl.errors import IntegrityError, NotFoundError, RegistryError
from vmctl.registry import mediatypes as mt
from vmctl.registry.auth import AuthStore
from vmctl.registry.client import MAX_CONFIG, RegistryClient
from vmctl.registry.mirrors import Route

# A mirror is a shortcut, not a service to wait for: one retry, short timeouts, then the next.
MIRROR_CLIENT = {"retries": 1, "backoff": 0.25, "timeout": (5.0, 60.0)}


def _silent(_line: str) -> None:
    return None


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class MirroredClient:
    """The pull side of a RegistryClient for one repository, mirrors first. Owns `origin`."""

    def __init__(self, origin: RegistryClient, repo: str, routes: list[Route], *,
                 auth_store: AuthStore | None = None, trace: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None, client_kw: dict | None = None):
        self.origin = origin
        self.host = origin.host
        self.repo = repo
        self.routes = list(routes)
        self.trace = trace or _silent
        self.warn = warn or _silent
        self.served: list[tuple[str, str, str, str]] = []   # (kind, digest, host, "mirror"|"origin")
        self._auth = auth_store
        self._kw = {**MIRROR_CLIENT, **(client_kw or {})}
        self._clients: dict[int, RegistryClient] = {}
        self._passed: set[int] = set()     # mirrors not asked again during this pull
        self._manifests: dict[tuple, tuple[bytes, str, str]] = {}

    # ------------------------------------------------------------------ plumbing
    @property
    def bytes_downloaded(self) -> int:
        return self.origin.bytes_downloaded + sum(c.bytes_downloaded for c in self._clients.values())

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self.origin.close()

    def __enter__(self) -> "MirroredClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _client(self, i: int) -> RegistryClient:
        if i not in self._clients:
            route = self.routes[i]
            m = route.mirror
            creds = (self._auth or AuthStore()).get(m.host, route.repo)
            self._clients[i] = RegistryClient(m.api_host, insecure=m.insecure, scheme=m.scheme,
                                              credentials=creds, **self._kw)
        return self._clients[i]

    def _served(self, kind: str, digest: str, host: str, role: str) -> None:
        self.served.append((kind, digest, host, role))
        self.trace(f"{_short(digest)}: {kind} from {host} ({role})")

    def _mirrors(self, repo: str):
        """(index, client, repository there) of each mirror still worth asking about `repo`."""
        if repo != self.repo:   # another repository than the pull's: mirrors were not chosen for it
            return
        for i, route in enumerate(self.routes):
            if i not in self._passed:
                yield i, self._client(i), route.repo

    def _ask(self, i: int, kind: str, label: str, call):
        """`call()` on mirror `i`: its answer, or None after recording why the next source is asked."""
        host = self.routes[i].mirror.host
        try:
            return call()
        except NotFoundError:
            self.trace(f"{label}: {kind} not on mirror {host}")
        except IntegrityError as exc:
            self._passed.add(i)
            self.warn(f"mirror {host} served a {kind} that fails verification; it was discarded and "
                      f"the mirror is not asked again ({exc.message})")
        except RegistryError as exc:   # down, server errors, refused, malformed answers
            self._passed.add(i)
            self.trace(f"mirror {host} passed over: {exc.message}")
        return None

    def _first(self, kind: str, digest: str, repo: str, call):
        """`call(client, repository)` on each usable mirror, then on the origin: the first answer."""
        for i, client, mrepo in self._mirrors(repo):
            result = self._ask(i, kind, _short(digest), lambda: call(client, mrepo))
            if result is not None:
                self._served(kind, digest, self.routes[i].mirror.host, "mirror")
                return result
        result = call(self.origin, repo)
        self._served(kind, digest, self.origin.host, "origin")
        return result

    # ------------------------------------------------------------------ manifests
    def get_manifest(self, repo: str, ref: str, accept: list[str] | tuple[str, ...] | None = None
                     ) -> tuple[bytes, str, str]:
        """As :meth:`RegistryClient.get_manifest`; asked once per pull (the answer is kept)."""
        key = (repo, ref, tuple(accept or ()))
        if key not in self._manifests:
            self._manifests[key] = self._manifest(repo, ref, accept)
        return self._manifests[key]

    def _manifest(self, repo: str, ref: str, accept) -> tuple[bytes, str, str]:
        def by(reference: str):
            return lambda client, r: client.get_manifest(r, reference, accept)

        if ref.startswith("sha256:"):
            return self._first("manifest", ref, repo, by(ref))
        if not self.routes or repo != self.repo or tuple(accept or mt.MANIFEST_ACCEPT) != tuple(mt.MANIFEST_ACCEPT):
            return self._from_origin(repo, ref, accept)
        try:
            # head_manifest asks with MANIFEST_ACCEPT: the digest of what GET would answer
            digest = self.origin.head_manifest(repo, ref)
        except RegistryError as exc:
            return self._tag_from_mirrors(repo, ref, accept, exc)
        if digest is None:   # no such tag, or no digest announced: the origin's own answer decides
            return self._from_origin(repo, ref, accept)
        return self._first("manifest", digest, repo, by(digest))

    def _from_origin(self, repo: str, ref: str, accept) -> tuple[bytes, str, str]:
        out = self.origin.get_manifest(repo, ref, accept)
        self._served("manifest", out[2], self.origin.host, "origin")
        return out

    def _tag_from_mirrors(self, repo: str, tag: str, accept, origin_error: RegistryError):
        """The origin could not say what `tag` names: the first mirror that can, else the origin's error."""
        self.trace(f"{repo}:{tag}: the origin cannot resolve the tag ({origin_error.message}); asking the mirrors")
        for i, client, mrepo in self._mirrors(repo):
            out = self._ask(i, "manifest", f"{repo}:{tag}",
                            lambda client=client, mrepo=mrepo: client.get_manifest(mrepo, tag, accept))
            if out is not None:
                self._served("manifest", out[2], self.routes[i].mirror.host, "mirror, tag resolved there")
                return out
        raise origin_error

    # ------------------------------------------------------------------ blobs
    def get_blob_bytes(self, repo: str, digest: str, *, max_size: int = MAX_CONFIG) -> bytes:
        """As :meth:`RegistryClient.get_blob_bytes`, mirrors first."""
        return self._first("blob", digest, repo, lambda c, r: c.get_blob_bytes(r, digest, max_size=max_size))

    def download_blob(self, repo: str, digest: str, dest, *, partial_dir=None, size: int | None = None,
                      resume: bool = True, progress=None):
        """As :meth:`RegistryClient.download_blob`, mirrors first. A partial file one source left
        is resumed by the next: the digest check covers the whole file, whoever sent its parts."""
        return self._first("blob", digest, repo, lambda c, r: c.download_blob(
            r, digest, dest, partial_dir=partial_dir, size=size, resume=resume, progress=progress))
