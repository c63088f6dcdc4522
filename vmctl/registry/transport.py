"""HTTP to one registry: scheme, authentication, tokens, retries, redirects and bounded reads.

The registry and everything it names (token realms, redirect targets, upload locations) are
untrusted (SECURITY.md). This module is where that is enforced, so the API verbs in
:mod:`vmctl.registry.client` cannot forget it:

- **Credentials** go only to the registry itself (same scheme, host and port as its API), and
  to a ``Bearer`` token realm only over HTTPS; a plain-HTTP realm is accepted only for a registry
  the user marked insecure, and only on that registry's own host name. A realm that breaks the
  rule is refused with an AuthError before anything is sent to it.
- **Redirects** are followed here, never by ``requests``: at most `MAX_REDIRECTS`, only to
  ``http``/``https``, never from HTTPS down to plain HTTP (unless insecure, same host), a missing
  ``Location`` is an error, and no credential follows a redirect to another host.
- **Bodies** are always streamed and read with a cap (:meth:`Transport.read`): an error page, a
  token answer, a manifest or a tag page larger than its cap is refused without being held in
  memory. Compressed answers are refused (vmctl asks for ``identity``).
- **Retries**: connection errors, timeouts, truncated bodies, 5xx and 429 are retried a bounded
  number of times with exponential backoff (``Retry-After`` honoured, capped); 4xx never are.
- **TLS** is verified (system CAs or `ca_file`); ``insecure`` skips verification and allows plain
  HTTP (HTTPS is tried first), as Docker does for its insecure registries.

``requests`` runs with ``trust_env=False`` so a ``~/.netrc`` can never replace the credentials;
proxies from the environment are still honoured, per request.
"""

from __future__ import annotations

import base64
import json
import re
import time
import warnings
from urllib.parse import urlencode, urljoin, urlparse

import requests
import urllib3

from vmctl import __version__
from vmctl.errors import AuthError, NotFoundError, RegistryError, UsageError
from vmctl.registry.auth import Credentials

CHUNK = 1 << 20
MAX_REDIRECTS = 5
MAX_ERROR_BODY = 64 << 10
MAX_TOKEN_BODY = 256 << 10
MAX_JSON_BODY = 4 << 20
_REDIRECTS = (301, 302, 303, 307, 308)
_TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")   # printable ASCII: it goes into a header

TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
)


class Unreachable(RegistryError):
    """The registry could not be reached (after the retries, if any): worth retrying a transfer."""


def short_reason(exc: BaseException) -> str:
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
    header = header.strip()[:4096]
    scheme, _, rest = header.partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)\s*=\s*"([^"]*)"', rest)}
    for k, v in re.findall(r'(\w+)\s*=\s*([^",\s]+)', rest):
        params.setdefault(k.lower(), v)
    return scheme.lower(), params


def split_url(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of `url` exactly as requests/urllib3 will connect, refusing anything
    two URL parsers could read differently: a user-info part, backslashes, spaces or control
    characters in the authority (``http://evil\\@registry/`` goes to *evil* for urllib3 but
    names *registry* for `urllib.parse`)."""
    try:
        parsed = urlparse(url)
        u = urllib3.util.parse_url(url)
    except (ValueError, urllib3.exceptions.LocationParseError):
        raise RegistryError(f"malformed URL {url[:80]!r}") from None
    authority = parsed.netloc
    if (not authority or "@" in authority or "\\" in url
            or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in authority)):
        raise RegistryError(f"refusing the URL {url[:80]!r}: its host part is ambiguous")
    host = (u.host or "").lower().strip("[]")
    if host != (parsed.hostname or "").lower() or not host:
        raise RegistryError(f"refusing the URL {url[:80]!r}: its host part is ambiguous")
    return (parsed.scheme or "").lower(), host, u.port


def ascii_int(text: str | None) -> int | None:
    """A header's non-negative decimal number, or None (``"١٢"`` is not a number here)."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else None


class Transport:
    """One registry host's HTTP side. Not thread-safe (one `requests.Session`)."""

    def __init__(self, host: str, *, insecure: bool = False, ca_file=None,
                 credentials: Credentials | None = None, timeout: tuple[float, float] = (10.0, 120.0),
                 retries: int = 4, backoff: float = 0.5, user_agent: str | None = None,
                 scheme: str | None = None):
        """`scheme` ("http" or "https") fixes how the registry is reached, as a mirror's URL does;
        None: HTTPS, or for an `insecure` registry HTTPS first, then plain HTTP."""
        if not host or "/" in host:
            raise UsageError(f"invalid registry host {host!r}")
        if scheme not in (None, "http", "https"):
            raise UsageError(f"invalid registry scheme {scheme!r}: http or https")
        self.host = host
        self.insecure = insecure
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = requests.Session()
        self.session.trust_env = False
        self._ca_file = str(ca_file) if ca_file else None
        self.session.verify = False if insecure else (self._ca_file or True)
        self.session.headers["User-Agent"] = user_agent or f"vmctl/{__version__}"
        # Blob bytes must arrive exactly as stored, and bodies must be countable: no compression.
        self.session.headers["Accept-Encoding"] = "identity"
        self._base: str | None = f"{scheme}://{host}" if scheme else None
        self.auth_kind: str | None = None      # None until challenged, then "basic" or "bearer"
        self._tokens: dict[str, str] = {}
        self.sleep = time.sleep

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ where
    @property
    def base_url(self) -> str:
        if self._base is None:
            self._base = self._probe_scheme()
        return self._base

    @property
    def hostname(self) -> str:
        return (urlparse(f"//{self.host}").hostname or "").lower().strip("[]")

    def _probe_scheme(self) -> str:
        https = f"https://{self.host}"
        if not self.insecure:
            return https
        try:
            resp = self.send("GET", f"{https}/v2/", headers={}, timeout=(self.timeout[0], 15))
            resp.close()
            return https
        except requests.exceptions.RequestException:
            return f"http://{self.host}"

    def is_registry(self, url: str) -> bool:
        """Whether `url` is the registry's own API origin (scheme, host and port), as urllib3
        will connect to it."""
        try:
            return split_url(url) == split_url(self.base_url)
        except RegistryError:
            return False

    def url(self, path_or_url: str, *, came_from: str | None = None) -> str:
        """An absolute URL for an API path, a Location or a redirect, checked: http(s) only, and
        no step down from HTTPS to plain HTTP except for an insecure registry's own host."""
        if not isinstance(path_or_url, str) or any(c in path_or_url for c in "\r\n\0"):
            raise RegistryError(f"{self.host}: the registry named a malformed URL")
        base = came_from or self.base_url + "/"
        try:
            url = urljoin(base, path_or_url)
            scheme = urlparse(url).scheme
        except ValueError:
            raise RegistryError(f"{self.host}: the registry named a malformed URL {path_or_url[:80]!r}") from None
        if scheme not in ("http", "https"):
            raise RegistryError(f"{self.host}: refusing to follow the registry to a non-HTTP URL "
                                f"({scheme or 'no scheme'}:)")
        try:
            _, host, _ = split_url(url)
        except RegistryError as exc:
            raise RegistryError(f"{self.host}: {exc}") from None
        if scheme == "http" and urlparse(base).scheme == "https":
            if not (self.insecure and host == self.hostname):
                raise RegistryError(f"{self.host}: refusing to follow the registry from HTTPS to plain HTTP "
                                    f"({host})")
        return url

    def send(self, method: str, url: str, **kw) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        kw.setdefault("proxies", requests.utils.get_environ_proxies(url))
        kw["allow_redirects"] = False
        kw["stream"] = True
        with warnings.catch_warnings():
            if self.insecure:
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            try:
                return self.session.request(method, url, **kw)
            except ValueError as exc:
                # requests parses a redirect's Location even when it does not follow it
                # (Response.next): a malformed one raises there
                if isinstance(exc, requests.exceptions.RequestException):
                    raise
                raise RegistryError(f"{self.host}: the registry answered with a malformed URL ({exc})") from None

    def delay(self, attempt: int, resp: requests.Response | None = None) -> float:
        if resp is not None:
            ra = ascii_int(resp.headers.get("Retry-After"))
            if ra is not None:
                return min(float(ra), 30.0)
        return min(self.backoff * (2 ** attempt), 30.0)

    def unreachable(self, exc: BaseException) -> RegistryError:
        """SSL failures are final (a wrong certificate does not heal); the rest are Unreachable."""
        if isinstance(exc, requests.exceptions.SSLError):
            return RegistryError(
                f"{self.host}: TLS verification failed ({short_reason(exc)}); give the registry's CA "
                "certificate, or use --insecure for a registry without a trusted certificate"
            )
        if isinstance(exc, requests.exceptions.InvalidHeader):
            return RegistryError(f"{self.host}: the registry sent a malformed header")
        return Unreachable(f"{self.host}: cannot reach the registry: {short_reason(exc)}")

    # ------------------------------------------------------------------ bodies
    def read(self, resp: requests.Response, limit: int, what: str) -> bytes:
        """The whole body of `resp`, refusing more than `limit` bytes (never holding more)."""
        try:
            enc = resp.headers.get("Content-Encoding", "identity").strip().lower()
            if enc not in ("", "identity"):
                raise RegistryError(f"{what}: the registry sent a {enc[:20]}-compressed answer though "
                                    "vmctl asked for none")
            declared = ascii_int(resp.headers.get("Content-Length"))
            if declared is not None and declared > limit:
                raise RegistryError(f"{what}: the answer is {declared} bytes, more than the {limit} vmctl accepts")
            try:
                data = resp.raw.read(limit + 1, decode_content=False)
            except TRANSIENT as exc:
                raise self.unreachable(exc) from None
        finally:
            resp.close()
        if len(data) > limit:
            raise RegistryError(f"{what}: the answer is larger than the {limit} bytes vmctl accepts")
        return data

    def read_json(self, resp: requests.Response, limit: int, what: str, kind: type = dict):
        """A capped JSON body that must be of `kind` (a RegistryError otherwise)."""
        data = self.read(resp, limit, what)
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"{what}: the registry's answer is not JSON") from None
        if not isinstance(doc, kind):
            raise RegistryError(f"{what}: the registry's answer is not a JSON {kind.__name__}")
        return doc

    def fail(self, resp: requests.Response, what: str) -> RegistryError:
        """The typed, one-line error for a response that is not a success (body read capped)."""
        detail = ""
        code = resp.status_code
        try:
            body = json.loads(self.read(resp, MAX_ERROR_BODY, what) or b"{}")
            errors = body.get("errors") if isinstance(body, dict) else None
            if isinstance(errors, list):
                detail = "; ".join(
                    f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors[:5]
                    if isinstance(e, dict) and isinstance(e.get("code", ""), str)
                    and isinstance(e.get("message", ""), str)
                )[:300]
        except (RegistryError, ValueError, UnicodeDecodeError, OSError,
                requests.exceptions.RequestException, urllib3.exceptions.HTTPError):
            pass
        finally:
            resp.close()
        if code == 401:
            if self.credentials is None:
                return self.login_required()
            return self.wrong_credentials() if self.auth_kind != "bearer" else AuthError(
                f"{self.host}: {what}: access denied for {self.credentials.username}"
                + (f" ({detail})" if detail else ""))
        if code == 403:
            return AuthError(f"{self.host}: {what}: access denied" + (f" ({detail})" if detail else ""))
        if code == 404:
            return NotFoundError(f"{self.host}: {what}: " + (detail or "not found"))
        return RegistryError(f"{self.host}: {what}: HTTP {code}" + (f" ({detail})" if detail else ""))

    def login_required(self) -> AuthError:
        return AuthError(f"{self.host}: login required: vmctl login {self.host}")

    def wrong_credentials(self) -> AuthError:
        return AuthError(f"{self.host}: wrong user name or password")

    # ------------------------------------------------------------------ auth
    def _basic(self) -> str:
        raw = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _auth_header(self, scope: str) -> dict[str, str]:
        if self.auth_kind == "basic" and self.credentials:
            return {"Authorization": self._basic()}
        if self.auth_kind == "bearer" and scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        return {}

    def _answer_challenge(self, header: str, scope: str, sent_auth: bool) -> None:
        """Prepare credentials for a retry after a 401, or raise AuthError when there is no point."""
        scheme, params = parse_challenge(header or "")
        if scheme == "basic":
            if self.credentials is None:
                raise self.login_required()
            if sent_auth and self.auth_kind == "basic":
                raise self.wrong_credentials()
            self.auth_kind = "basic"
            return
        if scheme == "bearer" and params.get("realm"):
            self.auth_kind = "bearer"
            scopes = [s for s in scope.split(" ") if s]
            if params.get("scope"):
                scopes += [s for s in params["scope"].split(" ") if s and s not in scopes]
            self._tokens[scope] = self._fetch_token(params, scopes[:16])
            return
        raise RegistryError(f"{self.host}: unsupported authentication challenge {header[:80]!r}")

    def _check_realm(self, realm: str) -> tuple[str, bool]:
        """(`realm`, whether it is the registry's own host) for a token service that may get
        the credentials: HTTPS anywhere, plain HTTP only on an insecure registry's own host."""
        try:
            scheme, host, _ = split_url(realm)
        except RegistryError:
            scheme, host = "", ""
        if scheme not in ("http", "https") or any(c in realm for c in "\r\n\0 "):
            raise RegistryError(f"{self.host}: the registry named a malformed token service {realm[:80]!r}")
        same_host = host == self.hostname
        if scheme == "http" and not (self.insecure and same_host):
            raise AuthError(
                f"{self.host}: refusing the token service http://{host}: it is not HTTPS"
                + ("" if self.insecure else " (plain HTTP is only allowed for an insecure registry's own host)")
                + "; no credentials were sent")
        return realm, same_host

    def _fetch_token(self, params: dict[str, str], scopes: list[str]) -> str:
        realm, own_host = self._check_realm(params["realm"])
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in scopes]
        headers = {}
        if self.credentials:
            query.append(("account", self.credentials.username))
            headers["Authorization"] = self._basic()
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        # "insecure" is about the registry the user named: a token service on another host gets
        # the credentials only over TLS that is verified as usual
        verify = self.session.verify if own_host else (self._ca_file or True)
        try:
            resp = self.send("GET", url, headers=headers, verify=verify)
        except requests.exceptions.RequestException as exc:
            raise self.unreachable(exc) from None
        if resp.status_code == 401:
            resp.close()
            raise self.wrong_credentials() if self.credentials else self.login_required()
        if resp.status_code != 200:
            resp.close()
            raise RegistryError(f"{self.host}: token service answered HTTP {resp.status_code}")
        body = self.read_json(resp, MAX_TOKEN_BODY, f"{self.host}: token service")
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise RegistryError(f"{self.host}: token service gave no usable token")
        return token

    # ------------------------------------------------------------------ one request
    def request(self, method: str, path: str, *, scope: str = "", headers: dict | None = None,
                data=None, retry: bool = True) -> requests.Response:
        """Send one API request with auth, challenges, bounded retries and checked redirects.

        `data` may be bytes or a zero-argument callable making a fresh body for every attempt.
        Returns the final (non-redirect) response whatever its status; callers map errors with
        :meth:`fail` and read bodies with :meth:`read`.
        """
        url = self.url(path)
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._attempts(method, url, scope, headers, data, retry)
            if resp.status_code not in _REDIRECTS:
                return resp
            location = resp.headers.get("Location")
            code = resp.status_code
            resp.close()
            if not location:
                raise RegistryError(f"{self.host}: {method} {urlparse(url).path[:80]} answered HTTP {code} "
                                    "without a Location")
            url = self.url(location, came_from=url)
            if code in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, data = "GET", None
        raise RegistryError(f"{self.host}: more than {MAX_REDIRECTS} redirects")

    def _attempts(self, method: str, url: str, scope: str, headers: dict | None, data, retry: bool):
        attempt = 0
        challenged = False
        while True:
            h = dict(headers or {})
            # credentials only ever go to the registry itself, never to a host a Location names
            auth = self._auth_header(scope) if self.is_registry(url) else {}
            h.update(auth)
            body = data() if callable(data) else data
            try:
                resp = self.send(method, url, headers=h, data=body)
            except (requests.exceptions.SSLError, requests.exceptions.InvalidHeader,
                    requests.exceptions.InvalidURL) as exc:
                raise self.unreachable(exc) from None
            except TRANSIENT as exc:
                if retry and attempt < self.retries:
                    self.sleep(self.delay(attempt))
                    attempt += 1
                    continue
                raise self.unreachable(exc) from None
            if resp.status_code == 401 and not challenged and self.is_registry(url):
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                self._answer_challenge(challenge, scope, bool(auth))
                challenged = True
                continue
            if (resp.status_code >= 500 or resp.status_code == 429) and retry and attempt < self.retries:
                delay = self.delay(attempt, resp)
                resp.close()
                self.sleep(delay)
                attempt += 1
                continue
            return resp
