"""The cloud image catalog: ``vmctl pull ubuntu:24.04`` fetches the distribution's own cloud image.

The catalog is data: one TOML file per distribution in ``templates/catalog/`` (name, default
user, base URL, checksum algorithm, per version the image path and its checksum list, with
``{arch}`` replaced by the distribution's name for the host architecture). A user may add or
replace entries with files in ``$XDG_CONFIG_HOME/vmctl/catalog/*.toml``.

The base URL of a distribution can be overridden (a mirror, or a local server in tests) with
``VMCTL_CATALOG_MIRROR_<NAME>`` (``VMCTL_CATALOG_MIRROR_UBUNTU=https://mirror.example/ubuntu``);
``VMCTL_CATALOG_CA_FILE`` names a CA bundle to verify such a mirror's certificate.

A pull: fetch the checksum list (``SHA256SUMS``/``SHA512SUMS`` GNU lines ``<hex> [*]<file>``,
Fedora's BSD lines ``SHA256 (<file>) = <hex>``, Alpine's per-file ``.sha512``), find the image's
expected hash in it, download the image to ``<data root>/cache/catalog/<key>.partial`` (resumed
with ``Range`` after an interruption; retried on transient errors), hash it, and only when the hash
matches import it (``cloud_init=True``, the firmware its boot sectors show, the distribution's default user). A
mismatch deletes the download and leaves the store untouched. The import's creation time is the
server's ``Last-Modified``, so the same file gives the same image id on every host.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3

from vmctl import download
from vmctl.config import templates_dir, user_config_dir
from vmctl.errors import IntegrityError, NotFoundError, RegistryError, ResourceError, UsageError
from vmctl.fsutil import lock_file, private_dirs
from vmctl.storage.manifest import host_architecture
from vmctl.storage.refs import parse_name
from vmctl.userfiles import read_toml

CHUNK = 1 << 20
RESERVE = 64 << 20  # free space a catalog download leaves on the data root's file system
MAX_CHECKSUM_LIST = 4 << 20
_HEX = {"sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class Version:
    name: str
    image: str
    checksums: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Distro:
    name: str
    description: str
    user: str
    base_url: str
    algorithm: str
    default: str
    arch: dict
    versions: dict[str, Version] = field(default_factory=dict)

    @property
    def mirror(self) -> str:
        return os.environ.get(f"VMCTL_CATALOG_MIRROR_{self.name.upper().replace('-', '_')}") or self.base_url

    def version(self, tag: str) -> Version | None:
        if tag in self.versions:
            return self.versions[tag]
        for v in self.versions.values():
            if tag in v.aliases:
                return v
        return None


@dataclass(frozen=True)
class Entry:
    """One pullable catalog image: a distribution at a version, for this host's architecture."""

    distro: Distro
    version: Version
    ref: str             # the local NAME:TAG it gets (what the user typed, tag defaulting to latest)

    @property
    def name(self) -> str:
        return self.distro.name

    def _arch(self) -> str:
        host = host_architecture()
        if host not in self.distro.arch:
            raise UsageError(f"{self.distro.name} has no cloud image for {host} in the catalog")
        return self.distro.arch[host]

    def _url(self, path: str) -> str:
        return self.distro.mirror.rstrip("/") + "/" + path.format(arch=self._arch()).lstrip("/")

    @property
    def image_url(self) -> str:
        return self._url(self.version.image)

    @property
    def checksums_url(self) -> str:
        return self._url(self.version.checksums)


def _catalog_dirs() -> list[Path]:
    return [templates_dir() / "catalog", user_config_dir() / "catalog"]


def load_catalog() -> dict[str, Distro]:
    out: dict[str, Distro] = {}
    for d in _catalog_dirs():
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.toml")):
            try:
                data = read_toml(path, "catalog file")
                versions = {
                    str(k): Version(str(k), v["image"], v["checksums"], tuple(v.get("aliases", ())))
                    for k, v in data["versions"].items()
                }
                distro = Distro(
                    name=data["name"], description=data.get("description", ""), user=data["user"],
                    base_url=data["base_url"], algorithm=data.get("algorithm", "sha256"),
                    default=str(data.get("default") or next(iter(versions))), arch=dict(data["arch"]),
                    versions=versions,
                )
            except (tomllib.TOMLDecodeError, KeyError, TypeError, StopIteration) as exc:
                raise UsageError(f"catalog file {path} is malformed ({exc})") from None
            if distro.algorithm not in _HEX:
                raise UsageError(f"catalog file {path}: algorithm must be sha256 or sha512")
            out[distro.name] = distro
    return out


def names() -> list[str]:
    return sorted(load_catalog())


def lookup(text: str) -> Entry | None:
    """The catalog entry for ``NAME[:VERSION]`` (a version alias also works), or None."""
    name, _, tag = text.partition(":")
    distro = load_catalog().get(name)
    if distro is None:
        return None
    version = distro.version(tag or distro.default) if tag != "latest" else distro.version(distro.default)
    if version is None:
        known = ", ".join(distro.versions)
        raise NotFoundError(f"the catalog has no {name} version {tag!r} (known: {known})")
    return Entry(distro, version, f"{name}:{tag or 'latest'}")


def search(term: str) -> list[Distro]:
    term = (term or "").lower()
    return [d for n, d in sorted(load_catalog().items())
            if term in n.lower() or term in d.description.lower()
            or any(term == v.name or term in v.aliases for v in d.versions.values())]


# ------------------------------------------------------------------ checksum lists
def parse_checksums(text: str, algorithm: str) -> dict[str, str]:
    """file name -> lowercase hex, from GNU lines (``<hex> [*]<file>``), BSD lines
    (``SHA256 (<file>) = <hex>``) or a bare ``<hex>``; other lines (PGP armour) are skipped."""
    n = _HEX[algorithm]
    out: dict[str, str] = {}
    bsd = re.compile(rf"^{algorithm.upper()} \((.+)\) = ([0-9a-fA-F]{{{n}}})$")
    gnu = re.compile(rf"^([0-9a-fA-F]{{{n}}})(?:\s+\*?(.+))?$")
    for line in text.splitlines():
        line = line.strip()
        if m := bsd.match(line):
            out[m.group(1)] = m.group(2).lower()
        elif m := gnu.match(line):
            out[(m.group(2) or "").strip().lstrip("./")] = m.group(1).lower()
    return out


def expected_hash(text: str, algorithm: str, filename: str) -> str:
    sums = parse_checksums(text, algorithm)
    if filename in sums:
        return sums[filename]
    if len(sums) == 1 and "" in sums:      # a per-file checksum holding just the hash
        return sums[""]
    raise IntegrityError(f"the checksum list has no {algorithm} entry for {filename}")


# ------------------------------------------------------------------ download
@dataclass
class PullResult:
    image: object
    url: str
    checksums_url: str
    checksum: str
    bytes_downloaded: int


class _Http:
    def __init__(self, retries: int = 4, backoff: float = 0.5):
        self.requests = requests
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Accept-Encoding"] = "identity"
        self.session.headers["User-Agent"] = "vmctl"
        ca = os.environ.get("VMCTL_CATALOG_CA_FILE")
        self.session.verify = ca if ca else True
        self.retries, self.backoff = retries, backoff
        self.downloaded = 0

    def close(self):
        self.session.close()

    def get(self, url: str, **kw):
        proxies = self.requests.utils.get_environ_proxies(url)
        try:
            return self.session.get(url, timeout=(10, 120), stream=True, proxies=proxies, **kw)
        except self.requests.exceptions.SSLError as exc:
            raise RegistryError(f"{urlsplit(url).netloc}: TLS verification failed ({exc.__class__.__name__})") from None
        except (self.requests.exceptions.InvalidSchema, self.requests.exceptions.InvalidURL,
                self.requests.exceptions.TooManyRedirects, self.requests.exceptions.InvalidHeader) as exc:
            # a mirror that redirects to another scheme, in circles, or answers garbage
            raise RegistryError(f"{urlsplit(url).netloc}: refused the mirror's answer ({exc.__class__.__name__})") from None

    def transient(self) -> tuple:
        e = self.requests.exceptions
        return (e.ConnectionError, e.Timeout, e.ChunkedEncodingError, urllib3.exceptions.ProtocolError)

    def text(self, url: str) -> str:
        for attempt in range(self.retries + 1):
            try:
                resp = self.get(url)
                if resp.status_code >= 500 and attempt < self.retries:
                    resp.close()
                    time.sleep(self.backoff * 2 ** attempt)
                    continue
                if resp.status_code == 404:
                    raise NotFoundError(f"{url}: not found (404)")
                if resp.status_code != 200:
                    raise RegistryError(f"{url}: HTTP {resp.status_code}")
                data = resp.raw.read(MAX_CHECKSUM_LIST + 1, decode_content=False)
                resp.close()
                if len(data) > MAX_CHECKSUM_LIST:
                    raise IntegrityError(f"{url}: checksum list larger than {MAX_CHECKSUM_LIST} bytes")
                return data.decode("utf-8", "replace")
            except self.transient() as exc:
                if attempt >= self.retries:
                    raise RegistryError(f"{url}: cannot download ({exc.__class__.__name__})") from None
                time.sleep(self.backoff * 2 ** attempt)
        raise RegistryError(f"{url}: cannot download")  # pragma: no cover

    def download(self, url: str, part: Path, algorithm: str, progress=None) -> tuple[str, int | None]:
        """Complete `part` from `url` (resuming); return (hex hash of the whole file, Last-Modified)."""
        def get(offset: int):
            return self.get(url, headers={"Range": f"bytes={offset}-"} if offset else {})

        def fail(resp):
            resp.close()
            if resp.status_code == 404:
                return NotFoundError(f"{url}: not found (404)")
            return RegistryError(f"{url}: HTTP {resp.status_code}")

        def count(n: int) -> None:
            self.downloaded += n

        result = download.resume_into(
            part, get, algorithm=algorithm, reserve=RESERVE, retries=self.retries,
            backoff=lambda n: self.backoff * 2 ** n, transient=self.transient(), fail=fail, on_bytes=count,
            progress=(lambda done, total: progress("download", done, total)) if progress else None, what=url)
        return result.hexdigest, _http_date(result.headers.get("Last-Modified"))


def _http_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError):
        return None


def pull(store, entry: Entry, *, progress=None) -> PullResult:
    """Download, verify and import `entry` as image ``entry.ref``."""
    url, sums_url = entry.image_url, entry.checksums_url
    algorithm = entry.distro.algorithm
    http = _Http()
    cache = Path(store.data_root) / "cache" / "catalog"
    private_dirs(cache)
    key = hashlib.sha256(url.encode()).hexdigest()[:32]
    part = cache / f"{key}.partial"
    try:
        parse_name(entry.ref)
        filename = urlsplit(url).path.rsplit("/", 1)[-1]
        expected = expected_hash(http.text(sums_url), algorithm, filename)
        with lock_file(cache / f"{key}.lock"):
            resumed = part.exists() and part.stat().st_size > 0
            try:
                actual, modified = http.download(url, part, algorithm, progress)
            except ResourceError:
                part.unlink(missing_ok=True)  # what filled the disk is not worth resuming
                raise
            if actual != expected and resumed:   # stale bytes of an older file: once more, fresh
                part.unlink(missing_ok=True)
                actual, modified = http.download(url, part, algorithm, progress)
            if actual != expected:
                part.unlink(missing_ok=True)
                raise IntegrityError(
                    f"{url}: {algorithm} is {actual}, the checksum list {sums_url} says {expected}; "
                    "the download was deleted and nothing was imported")
            image = store.import_image(
                part, entry.ref, fmt="auto", firmware=None, cloud_init=True, user=entry.distro.user,
                labels={"vmctl.catalog.source": url, f"vmctl.catalog.{algorithm}": expected},
                created=modified if modified is not None else 0,
                created_by="vmctl pull (catalog)", comment=f"{entry.distro.name} {entry.version.name}",
                progress=progress,
            )
            part.unlink(missing_ok=True)
        return PullResult(image, url, sums_url, f"{algorithm}:{expected}", http.downloaded)
    finally:
        http.close()
