"""The OCI distribution API verbs (Docker registry v2): ping, manifests, blobs, tags, catalog, login.

It knows nothing about libvirt, the store or the CLI: it moves bytes and verifies them. Everything
about HTTP — where credentials may go, redirects, retries, bounded reads — is the transport's
(:mod:`vmctl.registry.transport`); this module is what is asked and what is checked in the answer:

- Verification: a blob download is written to ``PARTIAL_DIR/<hex>.partial``, hashed as it arrives
  and renamed to its destination only when the sha256 matches (a mismatch removes the partial file
  and raises IntegrityError); a manifest fetched by digest must hash to that digest, and one fetched
  by tag must hash to the ``Docker-Content-Digest`` the registry announced.
- Resumption: downloads resume with ``Range`` from the last byte received; chunked uploads ask
  the registry how much it has (``GET`` on the upload URL) and continue from there.
- Answers are checked before use: JSON of the right types, digests that are digests, sizes that
  are numbers, a ``Location`` where one is needed; anything else is a one-line RegistryError.
- Listings (tags, catalog) follow ``Link`` pages on the same registry only, at most `MAX_PAGES`
  pages and `MAX_LISTED` names.
- Errors: 401 -> AuthError ("wrong user name or password" or "login required"), 403 -> AuthError
  with the registry's message, 404 -> NotFoundError, anything else -> RegistryError carrying the
  registry's own error message from its JSON body. All one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import urlencode, urlparse

from vmctl import download
from vmctl.errors import IntegrityError, RegistryError, UsageError
from vmctl.fsutil import fsync_dir, lock_file, private_dirs
from vmctl.registry import mediatypes as mt
from vmctl.registry.auth import AuthStore, Credentials
from vmctl.registry.refs import normalize_host
from vmctl.registry.transport import CHUNK, MAX_JSON_BODY, TRANSIENT, Transport, Unreachable, ascii_int, short_reason

MAX_MANIFEST = MAX_JSON_BODY
MAX_CONFIG = 4 << 20
MAX_PAGES = 1000
MAX_LISTED = 100_000
MAX_LISTED_BYTES = 8 << 20    # all names of one listing together
MAX_NAME = 255                # a repository path (the distribution spec's limit); tags are 128
DEFAULT_UPLOAD_CHUNK = 32 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

Progress = Callable[[int, int | None], None]  # (bytes done, total or None)


class _Retry(Exception):
    """A transient failure inside a transfer loop (carries the original exception)."""


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise UsageError(f"invalid digest {str(digest)[:80]!r}: expected sha256:<64 lowercase hex digits>")
    return digest


def _next_link(header: str) -> str | None:
    m = re.search(r'<([^>]{1,2048})>\s*;\s*rel="?next"?', header[:8192])
    return m.group(1) if m else None  # checked by Transport.url before it is followed


class _Window:
    """`length` bytes of an open file from `offset`, readable once, counting what is read.

    Having ``__len__`` makes requests send a Content-Length instead of chunked encoding.
    """

    def __init__(self, fh: BinaryIO, offset: int, length: int, on_bytes: Callable[[int], None]):
        fh.seek(offset)
        self.fh, self.left, self.on_bytes = fh, length, on_bytes

    def __len__(self) -> int:
        return self.left

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.fh.read(min(n, CHUNK))
        self.left -= len(data)
        if data:
            self.on_bytes(len(data))
        return data


class RegistryClient:
    """One registry host. Not thread-safe (one HTTP session); use one client per thread."""

    def __init__(self, host: str, *, insecure: bool = False, ca_file: str | os.PathLike | None = None,
                 credentials: Credentials | None = None, timeout: tuple[float, float] = (10.0, 120.0),
                 retries: int = 4, backoff: float = 0.5, upload_chunk: int = DEFAULT_UPLOAD_CHUNK,
                 user_agent: str | None = None, scheme: str | None = None):
        self.transport = Transport(host, insecure=insecure, ca_file=ca_file, credentials=credentials,
                                   timeout=timeout, retries=retries, backoff=backoff, user_agent=user_agent,
                                   scheme=scheme)
        self.host = host
        self.insecure = insecure
        self.credentials = credentials
        self.retries = retries
        self.upload_chunk = upload_chunk
        # Body bytes of blobs actually sent / received (what "only the new layer" is measured with).
        self.bytes_uploaded = 0
        self.bytes_downloaded = 0

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    def _request(self, method: str, path: str, **kw):
        return self.transport.request(method, path, **kw)

    def _fail(self, resp, what: str) -> RegistryError:
        return self.transport.fail(resp, what)

    def _sleep(self, seconds: float) -> None:
        self.transport.sleep(seconds)

    @staticmethod
    def _pull(repo: str) -> str:
        return f"repository:{repo}:pull"

    @staticmethod
    def _push(repo: str) -> str:
        return f"repository:{repo}:pull,push"

    def _announced(self, resp, what: str) -> str | None:
        """The ``Docker-Content-Digest`` header, checked to be a digest when present."""
        value = resp.headers.get("Docker-Content-Digest")
        if value is None or value == "":
            return None
        if not _DIGEST.fullmatch(value.strip()):
            raise RegistryError(f"{self.host}: {what}: the registry announced a malformed digest {value[:80]!r}")
        return value.strip()

    def _location(self, resp, what: str) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.host}: {what}: the registry gave no upload Location")
        return self.transport.url(location)

    # ------------------------------------------------------------------ API: base
    def ping(self) -> dict:
        """``GET /v2/`` (authenticating if the registry asks); returns what the registry said."""
        resp = self._request("GET", "/v2/")
        if resp.status_code != 200:
            raise self._fail(resp, "ping")
        api = resp.headers.get("Docker-Distribution-API-Version", "")[:64]
        resp.close()
        return {"url": self.base_url, "api_version": api, "auth": self.transport.auth_kind}

    def check_login(self) -> None:
        """Verify the credentials: AuthError if the registry refuses them."""
        if self.credentials is None:
            raise UsageError("no credentials to check")
        self.ping()

    # ------------------------------------------------------------------ API: manifests
    def get_manifest(self, repo: str, ref: str, accept: list[str] | tuple[str, ...] | None = None
                     ) -> tuple[bytes, str, str]:
        """Fetch a manifest: (bytes, media type, digest), the digest verified against the bytes."""
        headers = {"Accept": ", ".join(accept or mt.MANIFEST_ACCEPT)}
        what = f"{repo}@{ref}" if ref.startswith("sha256:") else f"{repo}:{ref}"
        resp = self._request("GET", f"/v2/{repo}/manifests/{ref}", scope=self._pull(repo), headers=headers)
        if resp.status_code != 200:
            raise self._fail(resp, what)
        announced = self._announced(resp, what)
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()[:128]
        data = self.transport.read(resp, MAX_MANIFEST, f"{self.host}/{what}: manifest")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ref.startswith("sha256:") and digest != ref:
            raise IntegrityError(f"{self.host}/{repo}@{ref}: manifest content is {digest}")
        if announced and announced != digest:
            raise IntegrityError(
                f"{self.host}/{repo}:{ref}: manifest content is {digest}, the registry announced {announced}")
        if media_type in ("", "application/json", "text/plain", "application/octet-stream"):
            try:
                doc = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                doc = None
            inner = doc.get("mediaType") if isinstance(doc, dict) else None
            if isinstance(inner, str):
                media_type = inner[:128]
        return data, media_type, digest

    def head_manifest(self, repo: str, ref: str) -> str | None:
        """The digest of manifest `ref`, or None if the registry does not have it."""
        resp = self._request("HEAD", f"/v2/{repo}/manifests/{ref}", scope=self._pull(repo),
                             headers={"Accept": ", ".join(mt.MANIFEST_ACCEPT)})
        if resp.status_code == 404:
            resp.close()
            return None
        if resp.status_code != 200:
            raise self._fail(resp, f"{repo}:{ref}")
        resp.close()
        return self._announced(resp, f"{repo}:{ref}")

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str = mt.OCI_MANIFEST) -> str:
        """Upload manifest `data` as tag (or digest) `ref`; return its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ref.startswith("sha256:") and ref != digest:
            raise UsageError(f"manifest digest is {digest}, not {ref}")
        resp = self._request("PUT", f"/v2/{repo}/manifests/{ref}", scope=self._push(repo),
                             headers={"Content-Type": media_type}, data=data)
        if resp.status_code not in (200, 201):
            raise self._fail(resp, f"put manifest {repo}:{ref}")
        resp.close()
        announced = self._announced(resp, f"put manifest {repo}:{ref}")
        if announced and announced != digest:
            raise IntegrityError(f"{self.host}/{repo}: registry stored the manifest as {announced}, not {digest}")
        return digest

    # ------------------------------------------------------------------ API: blobs
    def blob_size(self, repo: str, digest: str) -> int | None:
        """``HEAD`` a blob: its size (-1 when not given), or None if the repository does not have it."""
        check_digest(digest)
        resp = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=self._pull(repo))
        resp.close()
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._fail(resp, f"blob {digest}")
        length = ascii_int(resp.headers.get("Content-Length"))
        return -1 if length is None else length

    def blob_exists(self, repo: str, digest: str) -> bool:
        return self.blob_size(repo, digest) is not None

    def get_blob_bytes(self, repo: str, digest: str, *, max_size: int = MAX_CONFIG) -> bytes:
        """A small blob (a config) in memory, verified against its digest."""
        check_digest(digest)
        resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", scope=self._pull(repo))
        if resp.status_code != 200:
            raise self._fail(resp, f"blob {digest}")
        data = self.transport.read(resp, max_size, f"{self.host}/{repo}: blob {digest}")
        self.bytes_downloaded += len(data)
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(f"{self.host}/{repo}: blob {digest} does not match its digest (got {actual})")
        return data

    def download_blob(self, repo: str, digest: str, dest: str | os.PathLike, *,
                      partial_dir: str | os.PathLike | None = None, size: int | None = None,
                      resume: bool = True, progress: Progress | None = None) -> Path:
        """Download blob `digest` to `dest`, which appears only once the content is verified.

        Bytes go to ``partial_dir/<hex>.partial`` (default: next to `dest`), which survives a killed
        process: with `resume`, the next call hashes what is there and asks for the rest with
        ``Range``; a registry that ignores Range just sends everything again. `size`, when known
        (from the manifest), bounds what is accepted. A digest mismatch removes the partial file and
        raises IntegrityError; `dest` is then untouched.
        """
        check_digest(digest)
        dest = Path(dest)
        pdir = Path(partial_dir) if partial_dir is not None else dest.parent
        private_dirs(pdir)
        hexd = digest.split(":", 1)[1]
        part = pdir / f"{hexd}.partial"
        with lock_file(pdir / f"{hexd}.lock"):
            if dest.exists():  # another process finished this blob while we waited for the lock
                return dest
            for fresh in ((False, True) if resume else (True,)):
                if fresh:
                    part.unlink(missing_ok=True)
                try:
                    resumed, actual = self._fetch_into(repo, digest, part, size, progress)
                except IntegrityError:
                    part.unlink(missing_ok=True)
                    raise
                if actual == digest:
                    os.replace(part, dest)
                    fsync_dir(dest.parent)
                    return dest
                part.unlink(missing_ok=True)
                if not resumed:
                    break  # a fresh download was wrong: the registry serves bad content
            raise IntegrityError(
                f"{self.host}/{repo}: blob {digest} does not match its digest (got {actual}); "
                "nothing was stored"
            )

    def _fetch_into(self, repo: str, digest: str, part: Path, size: int | None,
                    progress: Progress | None) -> tuple[bool, str]:
        """Complete `part` from the registry; return (whether old bytes were reused, sha256 of part)."""
        path = f"/v2/{repo}/blobs/{digest}"

        def get(offset: int):
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            return self._request("GET", path, scope=self._pull(repo), headers=headers)

        def count(n: int) -> None:
            self.bytes_downloaded += n

        result = download.resume_into(
            part, get, size=size, retries=self.retries, backoff=self.transport.delay, sleep=self._sleep,
            transient=TRANSIENT, fail=lambda resp: self._fail(resp, f"blob {digest}"), on_bytes=count,
            progress=progress, what=f"{self.host}/{repo}: the download of {digest}",
            retry_status=False)  # the transport retried 5xx and 429 already
        return result.reused, "sha256:" + result.hexdigest

    def upload_blob(self, repo: str, digest: str, source: str | os.PathLike | BinaryIO,
                    size: int | None = None, *, progress: Progress | None = None,
                    mount_from: str | None = None) -> str:
        """Make blob `digest` exist in `repo`; return "exists", "mounted" or "uploaded".

        `source` is a file path or a seekable binary file. Nothing is sent when the blob is there
        already (``HEAD``), or when it can be mounted from repository `mount_from` on the same
        registry. Otherwise: ``POST`` an upload, then one ``PUT ?digest=`` for blobs up to
        `upload_chunk` bytes, or ``PATCH`` chunks (resumed from the registry's own count after a
        transient failure) then ``PUT ?digest=``. The registry checks the digest itself.
        """
        check_digest(digest)
        if self.blob_exists(repo, digest):
            return "exists"
        own = not hasattr(source, "read")
        fh = open(source, "rb") if own else source  # noqa: SIM115 - closed below
        try:
            if size is None:
                size = os.fstat(fh.fileno()).st_size
            location = None
            if mount_from and mount_from != repo:
                scope = f"{self._push(repo)} {self._pull(mount_from)}"
                q = urlencode({"mount": digest, "from": mount_from})
                resp = self._request("POST", f"/v2/{repo}/blobs/uploads/?{q}", scope=scope)
                if resp.status_code == 201:
                    resp.close()
                    return "mounted"
                if resp.status_code != 202:
                    raise self._fail(resp, f"mount {digest}")
                resp.close()
                location = self._location(resp, f"mount {digest}")
            return self._upload(repo, digest, fh, size, location, progress)
        finally:
            if own:
                fh.close()

    def _upload(self, repo: str, digest: str, fh: BinaryIO, size: int, location: str | None,
                progress: Progress | None) -> str:
        scope = self._push(repo)
        offset = 0
        failures = 0

        def count(n: int) -> None:
            nonlocal sent
            sent += n
            self.bytes_uploaded += n
            if progress:
                progress(min(sent, size), size)

        def restart(at: int) -> Callable[[int], None]:
            nonlocal sent
            sent = at
            return count

        sent = 0
        while True:
            try:
                if location is None:
                    resp = self._request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope,
                                         headers={"Content-Length": "0"})
                    if resp.status_code != 202:
                        raise self._fail(resp, f"start upload of {digest}")
                    resp.close()
                    location = self._location(resp, f"upload of {digest}")
                    offset = sent = 0
                if size - offset > self.upload_chunk:
                    while size - offset > 0:
                        n = min(self.upload_chunk, size - offset)
                        resp = self._request(
                            "PATCH", location, scope=scope, retry=False,
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Range": f"{offset}-{offset + n - 1}",
                                     "Content-Length": str(n)},
                            data=lambda: _Window(fh, offset, n, restart(offset)))
                        if resp.status_code >= 500 or resp.status_code in (408, 429):
                            resp.close()
                            raise _Retry(f"HTTP {resp.status_code}")
                        if resp.status_code != 202:
                            raise self._fail(resp, f"upload of {digest}")
                        resp.close()
                        if resp.headers.get("Location"):
                            location = self._location(resp, f"upload of {digest}")
                        offset += n
                    body, length = b"", 0
                else:
                    start = offset
                    body, length = (lambda: _Window(fh, start, size - start, restart(start))), size - offset
                url = self.transport.url(location)
                url += ("&" if "?" in url else "?") + urlencode({"digest": digest})
                resp = self._request("PUT", url, scope=scope, retry=False, data=body, headers={
                    "Content-Type": "application/octet-stream", "Content-Length": str(length)})
                if resp.status_code >= 500 or resp.status_code in (408, 429):
                    resp.close()
                    raise _Retry(f"HTTP {resp.status_code}")
                if resp.status_code != 201:
                    raise self._fail(resp, f"upload of {digest}")
                resp.close()
                announced = self._announced(resp, f"upload of {digest}")
                if announced and announced != digest:
                    raise IntegrityError(f"{self.host}/{repo}: registry stored {announced}, not {digest}")
                return "uploaded"
            except (_Retry, RegistryError, *TRANSIENT) as exc:
                if isinstance(exc, RegistryError) and not isinstance(exc, Unreachable):
                    raise
                failures += 1
                if failures > self.retries:
                    raise RegistryError(f"{self.host}/{repo}: upload of {digest} failed: {short_reason(exc)}") from None
                self._sleep(self.transport.delay(failures - 1))
                if self.blob_exists(repo, digest):
                    return "uploaded"
                location, offset = self._upload_status(location, scope)

    def _upload_status(self, location: str | None, scope: str) -> tuple[str | None, int]:
        """Where an interrupted upload stands: (location, next offset), or (None, 0) to restart."""
        if location is None:
            return None, 0
        try:
            resp = self._request("GET", location, scope=scope)
        except RegistryError:
            return None, 0
        resp.close()
        if resp.status_code != 204:
            return None, 0
        # distribution says "0-0" both for nothing and for one byte received; this client never
        # sends a 1-byte chunk (such blobs go in one PUT), so "0-0" means nothing.
        m = re.fullmatch(r"(?:bytes=)?0-(\d{1,19})", resp.headers.get("Range", ""), re.ASCII)
        end = int(m.group(1)) if m else 0
        try:
            nxt = self._location(resp, "upload status") if resp.headers.get("Location") else location
        except RegistryError:
            return None, 0
        return nxt, (end + 1 if end > 0 else 0)

    # ------------------------------------------------------------------ API: listing
    def _paged(self, path: str, key: str, scope: str, what: str, page: int) -> list[str]:
        out: list[str] = []
        url: str | None = f"{path}?{urlencode({'n': page})}"
        seen: set[str] = set()
        listed = 0
        for _ in range(MAX_PAGES):
            resp = self._request("GET", url, scope=scope)
            if resp.status_code != 200:
                raise self._fail(resp, what)
            link = resp.headers.get("Link", "")
            body = self.transport.read_json(resp, MAX_JSON_BODY, f"{self.host}: {what}")
            items = body.get(key)
            if items is None:
                items = []
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise RegistryError(f"{self.host}: {what}: {key!r} is not a list of names")
            if any(len(i) > MAX_NAME for i in items):
                raise RegistryError(f"{self.host}: {what}: a name longer than {MAX_NAME} characters")
            out += items
            listed += sum(len(i) for i in items)
            if len(out) > MAX_LISTED or listed > MAX_LISTED_BYTES:
                raise RegistryError(f"{self.host}: {what}: more than {MAX_LISTED} names or "
                                    f"{MAX_LISTED_BYTES >> 20} MiB of them; giving up")
            nxt = _next_link(link)
            if not nxt or not items:
                return out
            nxt_url = self.transport.url(nxt, came_from=self.transport.url(url))
            if not self.transport.is_registry(nxt_url):
                raise RegistryError(f"{self.host}: {what}: the next page is on another host "
                                    f"({urlparse(nxt_url).netloc}); refused")
            if nxt_url in seen:
                raise RegistryError(f"{self.host}: {what}: the pages go round in a circle")
            seen.add(nxt_url)
            url = nxt_url
        raise RegistryError(f"{self.host}: {what}: more than {MAX_PAGES} pages; giving up")

    def list_tags(self, repo: str, *, page: int = 1000) -> list[str]:
        return self._paged(f"/v2/{repo}/tags/list", "tags", self._pull(repo), f"tags of {repo}", page)

    def catalog(self, *, page: int = 1000) -> list[str]:
        """Every repository of the registry (many public registries refuse this: 401/404)."""
        return self._paged("/v2/_catalog", "repositories", "registry:catalog:*", "catalog", page)


def login(host: str, username: str, password: str, *, insecure: bool = False,
          ca_file: str | None = None, store: AuthStore | None = None) -> Credentials:
    """Check `username`/`password` against the registry at `host`, then store them.

    Raises AuthError (wrong credentials) or RegistryError (unreachable) and stores nothing then.
    """
    host = normalize_host(host)
    creds = Credentials(username, password, "login")
    client = RegistryClient(host, insecure=insecure, ca_file=ca_file, credentials=creds)
    try:
        client.check_login()
    finally:
        client.close()
    store = store or AuthStore()
    store.save(host, username, password)
    return Credentials(username, password, str(store.path))


