"""An OCI distribution (Docker registry v2) client: ping and auth, manifests, blobs, tags, catalog.

It knows nothing about libvirt, the store or the CLI: it moves bytes and verifies them.

- Auth: the registry's ``WWW-Authenticate`` challenge decides. ``Basic`` sends the credentials with
  every request once the registry asked for them; ``Bearer`` runs the token flow (``GET realm?
  service=&scope=repository:NAME:pull,push``, with the credentials as Basic when there are any) and
  caches one token per scope, fetching a fresh one once when a token is refused (expired).
- Retries: connection errors, timeouts, truncated bodies, 5xx and 429 are retried a bounded number of
  times with exponential backoff (``Retry-After`` honoured, capped); 4xx answers never are.
  Downloads resume with ``Range`` from the last byte received; chunked uploads ask the registry how
  much it has (``GET`` on the upload URL) and continue from there.
- Verification: a blob download is written to ``PARTIAL_DIR/<hex>.partial``, hashed as it arrives and
  renamed to its destination only when the sha256 matches (a mismatch removes the partial file and
  raises IntegrityError); a manifest fetched by digest must hash to that digest, and one fetched by
  tag must hash to the ``Docker-Content-Digest`` the registry announced.
- TLS: verified by default (the system CAs, or `ca_file`). ``insecure=True`` skips verification and
  allows plain HTTP: HTTPS is tried first and HTTP used when the server does not speak TLS, as
  Docker does for its insecure registries.
- Errors: 401 -> AuthError ("wrong user name or password" or "login required"), 403 -> AuthError
  with the registry's message, 404 -> NotFoundError, anything else -> RegistryError carrying the
  registry's own error message from its JSON body. All one line.

``requests`` runs with ``trust_env=False`` so a ``~/.netrc`` can never replace the credentials; proxies
from the environment are still honoured, per request.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator
from urllib.parse import urlencode, urljoin, urlparse

import requests
import urllib3

from vmctl.fsutil import fsync_dir
from vmctl.errors import AuthError, IntegrityError, NotFoundError, RegistryError, UsageError
from vmctl.registry import mediatypes as mt
from vmctl.registry.auth import Credentials

CHUNK = 1 << 20
MAX_MANIFEST = 4 << 20
DEFAULT_UPLOAD_CHUNK = 32 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

Progress = Callable[[int, int | None], None]  # (bytes done, total or None)

_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
)


class _Retry(Exception):
    """A transient failure inside a transfer loop (carries the original exception)."""


class _Unreachable(RegistryError):
    """The registry could not be reached (after the retries, if any): worth retrying a transfer."""


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise UsageError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex digits>")
    return digest


def _short(exc: BaseException) -> str:
    """A one-line reason from a requests/urllib3 exception (they nest and repeat themselves)."""
    text = str(exc)
    for pattern in (r"\[SSL: [A-Z_]+\] ([^(]*?)\s*\(", r"\[Errno -?\d+\] ([^'\")]+)",
                    r"(Connection refused|timed out|Connection reset by peer|Connection aborted)"):
        m = re.search(pattern, text)
        if m:
            return m.group(1).strip().rstrip(".")
    return " ".join(text.split())[:200]


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("bearer", {"realm": "x", "service": "y"})."""
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)\s*=\s*"([^"]*)"', rest)}
    for k, v in re.findall(r'(\w+)\s*=\s*([^",\s]+)', rest):
        params.setdefault(k.lower(), v)
    return scheme.lower(), params


def _next_link(resp: requests.Response) -> str | None:
    link = resp.headers.get("Link", "")
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    return m.group(1) if m else None


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


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path`, and remove the file when done.

    Removing a lock file is safe with the usual check: after locking, the holder makes sure the
    name still points at the inode it locked (else someone removed it meanwhile: try again).
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


class RegistryClient:
    """One registry host. Not thread-safe (one `requests.Session`); use one client per thread."""

    def __init__(self, host: str, *, insecure: bool = False, ca_file: str | os.PathLike | None = None,
                 credentials: Credentials | None = None, timeout: tuple[float, float] = (10.0, 120.0),
                 retries: int = 4, backoff: float = 0.5, upload_chunk: int = DEFAULT_UPLOAD_CHUNK,
                 user_agent: str | None = None):
        if not host or "/" in host:
            raise UsageError(f"invalid registry host {host!r}")
        self.host = host
        self.insecure = insecure
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.upload_chunk = upload_chunk
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = False if insecure else (str(ca_file) if ca_file else True)
        try:
            from vmctl import __version__ as version
        except ImportError:  # pragma: no cover
            version = "0"
        self.session.headers["User-Agent"] = user_agent or f"vmctl/{version}"
        # Blob bytes must arrive exactly as stored: no transparent gzip from a proxy.
        self.session.headers["Accept-Encoding"] = "identity"
        self._base: str | None = None
        self._auth_kind: str | None = None      # None until challenged, then "basic" or "bearer"
        self._bearer: dict[str, str] = {}
        self._tokens: dict[str, str] = {}
        self._sleep = time.sleep
        # Body bytes of blobs actually sent / received (what "only the new layer" is measured with).
        self.bytes_uploaded = 0
        self.bytes_downloaded = 0

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        if self._base is None:
            self._base = self._probe_scheme()
        return self._base

    def _probe_scheme(self) -> str:
        https = f"https://{self.host}"
        if not self.insecure:
            return https
        try:
            resp = self._send("GET", f"{https}/v2/", headers={}, timeout=(self.timeout[0], 15))
            resp.close()
            return https
        except requests.exceptions.RequestException:
            return f"http://{self.host}"

    def _send(self, method: str, url: str, **kw) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        kw.setdefault("proxies", requests.utils.get_environ_proxies(url))
        with warnings.catch_warnings():
            if self.insecure:
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            return self.session.request(method, url, **kw)

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return urljoin(self.base_url + "/", path_or_url)

    def _delay(self, attempt: int, resp: requests.Response | None = None) -> float:
        if resp is not None:
            ra = resp.headers.get("Retry-After", "")
            if ra.isdigit():
                return min(float(ra), 30.0)
        return min(self.backoff * (2 ** attempt), 30.0)

    def _unreachable(self, exc: BaseException) -> RegistryError:
        """SSL failures are final (a wrong certificate does not heal); the rest are _Unreachable."""
        if isinstance(exc, requests.exceptions.SSLError):
            return RegistryError(
                f"{self.host}: TLS verification failed ({_short(exc)}); give the registry's CA "
                "certificate, or use --insecure for a registry without a trusted certificate"
            )
        return _Unreachable(f"{self.host}: cannot reach the registry: {_short(exc)}")

    # ------------------------------------------------------------------ auth
    def _auth_header(self, scope: str) -> dict[str, str]:
        if self._auth_kind == "basic" and self.credentials:
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        if self._auth_kind == "bearer" and scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        return {}

    def _answer_challenge(self, header: str, scope: str, sent_auth: bool) -> None:
        """Prepare credentials for a retry after a 401, or raise AuthError when there is no point."""
        scheme, params = parse_challenge(header or "")
        if scheme == "basic":
            if self.credentials is None:
                raise self._login_required()
            if sent_auth and self._auth_kind == "basic":
                raise self._wrong_credentials()
            self._auth_kind = "basic"
            return
        if scheme == "bearer" and params.get("realm"):
            self._auth_kind = "bearer"
            self._bearer = params
            scopes = [s for s in scope.split(" ") if s]
            if params.get("scope"):
                scopes += [s for s in params["scope"].split(" ") if s and s not in scopes]
            self._tokens[scope] = self._fetch_token(params, scopes)
            return
        raise RegistryError(f"{self.host}: unsupported authentication challenge {header!r}")

    def _fetch_token(self, params: dict[str, str], scopes: list[str]) -> str:
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in scopes]
        headers = {}
        if self.credentials:
            query.append(("account", self.credentials.username))
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        realm = params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        try:
            resp = self._send("GET", url, headers=headers)
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from None
        if resp.status_code == 401:
            raise self._wrong_credentials() if self.credentials else self._login_required()
        if resp.status_code != 200:
            raise RegistryError(f"{self.host}: token service answered HTTP {resp.status_code}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise RegistryError(f"{self.host}: token service gave no token")
        return token

    def _login_required(self) -> AuthError:
        return AuthError(f"{self.host}: login required: vmctl login {self.host}")

    def _wrong_credentials(self) -> AuthError:
        return AuthError(f"{self.host}: wrong user name or password")

    # ------------------------------------------------------------------ one request
    def _request(self, method: str, path: str, *, scope: str = "", headers: dict | None = None,
                 data=None, stream: bool = False, retry: bool = True) -> requests.Response:
        """Send one API request with auth, challenge handling and bounded retries.

        `data` may be bytes or a zero-argument callable making a fresh body for every attempt.
        Returns the final response whatever its status (callers map errors with :meth:`_fail`).
        """
        attempt = 0
        challenged = False
        while True:
            url = self._url(path)
            h = dict(headers or {})
            # credentials only ever go to the registry itself, never to a host a Location names
            auth = self._auth_header(scope) if urlparse(url).netloc == urlparse(self.base_url).netloc else {}
            h.update(auth)
            body = data() if callable(data) else data
            try:
                resp = self._send(method, url, headers=h, data=body, stream=stream)
            except requests.exceptions.SSLError as exc:
                raise self._unreachable(exc) from None
            except _TRANSIENT as exc:
                if retry and attempt < self.retries:
                    self._sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise self._unreachable(exc) from None
            if resp.status_code == 401 and not challenged:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                self._answer_challenge(challenge, scope, bool(auth))
                challenged = True
                continue
            if (resp.status_code >= 500 or resp.status_code == 429) and retry and attempt < self.retries:
                delay = self._delay(attempt, resp)
                resp.close()
                self._sleep(delay)
                attempt += 1
                continue
            return resp

    def _fail(self, resp: requests.Response, what: str) -> RegistryError:
        """The typed, one-line error for a response that is not a success."""
        detail = ""
        try:
            body = json.loads(resp.content[:65536] or b"{}")
            errors = body.get("errors") if isinstance(body, dict) else None
            if errors:
                detail = "; ".join(
                    f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors
                    if isinstance(e, dict)
                )
        except (ValueError, AttributeError, OSError, requests.exceptions.RequestException,
                urllib3.exceptions.HTTPError):
            pass
        finally:
            resp.close()
        code = resp.status_code
        if code == 401:
            if self.credentials is None:
                return self._login_required()
            return self._wrong_credentials() if self._auth_kind != "bearer" else AuthError(
                f"{self.host}: {what}: access denied for {self.credentials.username}"
                + (f" ({detail})" if detail else ""))
        if code == 403:
            return AuthError(f"{self.host}: {what}: access denied" + (f" ({detail})" if detail else ""))
        if code == 404:
            return NotFoundError(f"{self.host}: {what}: " + (detail or "not found"))
        return RegistryError(f"{self.host}: {what}: HTTP {code}" + (f" ({detail})" if detail else ""))

    @staticmethod
    def _pull(repo: str) -> str:
        return f"repository:{repo}:pull"

    @staticmethod
    def _push(repo: str) -> str:
        return f"repository:{repo}:pull,push"

    # ------------------------------------------------------------------ API: base
    def ping(self) -> dict:
        """``GET /v2/`` (authenticating if the registry asks); returns what the registry said."""
        resp = self._request("GET", "/v2/")
        if resp.status_code != 200:
            raise self._fail(resp, "ping")
        api = resp.headers.get("Docker-Distribution-API-Version", "")
        resp.close()
        return {"url": self.base_url, "api_version": api, "auth": self._auth_kind}

    def check_login(self) -> None:
        """Verify the credentials: AuthError if the registry refuses them."""
        if self.credentials is None:
            raise UsageError("no credentials to check")
        self.ping()

    # ------------------------------------------------------------------ API: manifests
    def _read_capped(self, resp, limit: int, what: str) -> bytes:
        """The whole body of `resp`, refusing more than `limit` bytes (a hostile server's answer)."""
        try:
            data = resp.raw.read(limit + 1, decode_content=True)
        except _TRANSIENT as exc:
            raise self._unreachable(exc) from None
        finally:
            resp.close()
        if len(data) > limit:
            raise IntegrityError(f"{what} is larger than {limit} bytes")
        return data

    def get_manifest(self, repo: str, ref: str, accept: list[str] | tuple[str, ...] | None = None
                     ) -> tuple[bytes, str, str]:
        """Fetch a manifest: (bytes, media type, digest), the digest verified against the bytes."""
        headers = {"Accept": ", ".join(accept or mt.MANIFEST_ACCEPT)}
        resp = self._request("GET", f"/v2/{repo}/manifests/{ref}", scope=self._pull(repo),
                             headers=headers, stream=True)
        if resp.status_code != 200:
            raise self._fail(resp, f"{repo}:{ref}" if not ref.startswith("sha256:") else f"{repo}@{ref}")
        data = self._read_capped(resp, MAX_MANIFEST, f"{self.host}/{repo}: manifest")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ref.startswith("sha256:") and digest != ref:
            raise IntegrityError(f"{self.host}/{repo}@{ref}: manifest content is {digest}")
        announced = resp.headers.get("Docker-Content-Digest", "")
        if announced.startswith("sha256:") and announced != digest:
            raise IntegrityError(
                f"{self.host}/{repo}:{ref}: manifest content is {digest}, the registry announced {announced}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type in ("", "application/json", "text/plain", "application/octet-stream"):
            try:
                media_type = json.loads(data).get("mediaType") or media_type
            except (ValueError, AttributeError):
                pass
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
        return resp.headers.get("Docker-Content-Digest") or None

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
        announced = resp.headers.get("Docker-Content-Digest", "")
        if announced.startswith("sha256:") and announced != digest:
            raise IntegrityError(f"{self.host}/{repo}: registry stored the manifest as {announced}, not {digest}")
        return digest

    # ------------------------------------------------------------------ API: blobs
    def blob_size(self, repo: str, digest: str) -> int | None:
        """``HEAD`` a blob: its size, or None if the repository does not have it."""
        _check_digest(digest)
        resp = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=self._pull(repo))
        resp.close()
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._fail(resp, f"blob {digest}")
        length = resp.headers.get("Content-Length", "")
        return int(length) if length.isdigit() else -1

    def blob_exists(self, repo: str, digest: str) -> bool:
        return self.blob_size(repo, digest) is not None

    def get_blob_bytes(self, repo: str, digest: str, *, max_size: int = 16 << 20) -> bytes:
        """A small blob (a config) in memory, verified against its digest."""
        _check_digest(digest)
        resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", scope=self._pull(repo), stream=True)
        if resp.status_code != 200:
            raise self._fail(resp, f"blob {digest}")
        data = self._read_capped(resp, max_size, f"{self.host}/{repo}: blob {digest}")
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
        _check_digest(digest)
        dest = Path(dest)
        pdir = Path(partial_dir) if partial_dir is not None else dest.parent
        pdir.mkdir(parents=True, exist_ok=True)
        hexd = digest.split(":", 1)[1]
        part = pdir / f"{hexd}.partial"
        with _flock(pdir / f"{hexd}.lock"):
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
        h = hashlib.sha256()
        done = 0
        if part.exists():
            if size is not None and part.stat().st_size > size:
                part.unlink()
            else:
                with open(part, "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        h.update(chunk)
                        done += len(chunk)
        reused = done > 0
        if progress and done:
            progress(done, size)
        failures = 0
        path = f"/v2/{repo}/blobs/{digest}"
        while size is None or done < size:
            headers = {"Range": f"bytes={done}-"} if done else {}
            try:
                resp = self._request("GET", path, scope=self._pull(repo), headers=headers, stream=True)
                if resp.status_code == 416 and done:
                    resp.close()
                    break  # we already have everything the registry has: verify it
                if resp.status_code not in (200, 206):
                    raise self._fail(resp, f"blob {digest}")
                if resp.status_code == 206:
                    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                    if not m or int(m.group(1)) != done:
                        resp.close()
                        raise IntegrityError(f"{self.host}: bad Content-Range for blob {digest}")
                elif done:  # the registry ignored Range: start over
                    h, done = hashlib.sha256(), 0
                    with open(part, "wb"):
                        pass
                with open(part, "ab") as fh:
                    try:
                        for chunk in resp.raw.stream(CHUNK, decode_content=False):
                            fh.write(chunk)
                            h.update(chunk)
                            done += len(chunk)
                            self.bytes_downloaded += len(chunk)
                            if size is not None and done > size:
                                raise IntegrityError(
                                    f"{self.host}/{repo}: blob {digest} is larger than the {size} bytes announced")
                            if progress:
                                progress(done, size)
                    finally:
                        fh.flush()
                        os.fsync(fh.fileno())
                        resp.close()
                if size is None or done >= size:
                    break
                raise _Retry(f"blob {digest} ended after {done} of {size} bytes")
            except (_Retry, *_TRANSIENT) as exc:
                failures += 1
                if failures > self.retries:
                    raise RegistryError(
                        f"{self.host}/{repo}: download of {digest} interrupted ({_short(exc)}); "
                        "run the same command again to resume") from None
                self._sleep(self._delay(failures - 1))
        return reused, "sha256:" + h.hexdigest()

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
        _check_digest(digest)
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
                location = resp.headers.get("Location")
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
                    location = resp.headers["Location"]
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
                        location = resp.headers.get("Location", location)
                        offset += n
                    body, length = b"", 0
                else:
                    start = offset
                    body, length = (lambda: _Window(fh, start, size - start, restart(start))), size - offset
                url = self._url(location)
                url += ("&" if "?" in url else "?") + urlencode({"digest": digest})
                resp = self._request("PUT", url, scope=scope, retry=False, data=body, headers={
                    "Content-Type": "application/octet-stream", "Content-Length": str(length)})
                if resp.status_code >= 500 or resp.status_code in (408, 429):
                    resp.close()
                    raise _Retry(f"HTTP {resp.status_code}")
                if resp.status_code != 201:
                    raise self._fail(resp, f"upload of {digest}")
                resp.close()
                announced = resp.headers.get("Docker-Content-Digest", "")
                if announced.startswith("sha256:") and announced != digest:
                    raise IntegrityError(f"{self.host}/{repo}: registry stored {announced}, not {digest}")
                return "uploaded"
            except (_Retry, RegistryError, *_TRANSIENT) as exc:
                if isinstance(exc, RegistryError) and not isinstance(exc, _Unreachable):
                    raise
                failures += 1
                if failures > self.retries:
                    raise RegistryError(f"{self.host}/{repo}: upload of {digest} failed: {_short(exc)}") from None
                self._sleep(self._delay(failures - 1))
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
        m = re.fullmatch(r"(?:bytes=)?0-(\d+)", resp.headers.get("Range", ""))
        end = int(m.group(1)) if m else 0
        return resp.headers.get("Location", location), (end + 1 if end > 0 else 0)

    # ------------------------------------------------------------------ API: listing
    def _paged(self, path: str, key: str, scope: str, what: str, page: int) -> list[str]:
        out: list[str] = []
        url: str | None = f"{path}?{urlencode({'n': page})}"
        while url:
            resp = self._request("GET", url, scope=scope)
            if resp.status_code != 200:
                raise self._fail(resp, what)
            try:
                items = resp.json().get(key) or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{self.host}: {what}: answer is not JSON") from None
            finally:
                resp.close()
            out += [i for i in items if isinstance(i, str)]
            nxt = _next_link(resp)
            url = None if not nxt or not items else nxt
        return out

    def list_tags(self, repo: str, *, page: int = 1000) -> list[str]:
        return self._paged(f"/v2/{repo}/tags/list", "tags", self._pull(repo), f"tags of {repo}", page)

    def catalog(self, *, page: int = 1000) -> list[str]:
        """Every repository of the registry (many public registries refuse this: 401/404)."""
        return self._paged("/v2/_catalog", "repositories", "registry:catalog:*", "catalog", page)


def registry_url_host(url: str) -> str:
    """``https://host:5000/v2/`` -> ``host:5000``."""
    return urlparse(url).netloc
