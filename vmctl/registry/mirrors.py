"""Registry mirrors for pulls: which hosts may serve an image in place of the registry it names.

Three sources, highest priority first; the first one that configures a registry decides its mirrors
(an entry without mirrors there switches off the mirrors of the sources below it):

1. vmctl's config (:mod:`vmctl.config`): ``[registries."HOST"] mirrors = ["https://mirror:5000", …]``.
   A URL's scheme is how the mirror is reached (``http://`` is plain HTTP, as the user chose;
   ``https://`` is verified TLS unless the mirror's host is in ``insecure_registries``); its path,
   if any, is the namespace the registry's repositories live under on the mirror.
2. the user's containers-registries.conf(5): ``$XDG_CONFIG_HOME/containers/registries.conf``;
3. ``/etc/containers/registries.conf``.

``$VMCTL_REGISTRIES_CONF`` (paths separated by ``:``, highest priority first; empty for none)
replaces 2 and 3, as ``$CONTAINERS_REGISTRIES_CONF`` (one file) does for podman. Podman reads only
the user's file once it exists; vmctl reads both, the user's winning registry by registry.

From registries.conf vmctl takes the ``[[registry]]`` tables: ``prefix`` (``host[:port]``,
``host[:port]/namespace…`` or ``*.domain``; default: ``location``; the longest match in a file
wins, as in podman), ``location``, ``insecure``, ``mirror-by-digest-only``, and their
``[[registry.mirror]]`` tables' ``location``, ``insecure`` and ``pull-from-mirror`` (``all``,
``digest-only``: only for pulls by digest, ``tag-only``). A ``location`` other than the prefix
(podman's redirection) is tried after the mirrors, as one more mirror: vmctl always falls back to
the registry the reference names. Not used: ``blocked``, prefixes with a tag or digest, search
registries, aliases and the ``registries.conf.d`` drop-in directories.

How the mirrors are used (verification, fallback, credentials) is :mod:`vmctl.registry.mirrored`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from vmctl.errors import UsageError
from vmctl.registry.refs import DOCKER_HUB_API, DOCKER_HUB_NAMES, RegistryRef, check_repo, normalize_host
from vmctl.userfiles import read_toml

PULL_MODES = ("all", "digest-only", "tag-only")


@dataclass(frozen=True)
class Mirror:
    """One place a registry's images may be pulled from instead."""

    host: str                 # HOST[:PORT]: what credentials are looked up by
    namespace: str            # repository path on the mirror that stands for the rule's prefix
    scheme: str | None        # "http"/"https" from a URL; None: HTTPS (insecure: HTTPS, then HTTP)
    insecure: bool            # plain HTTP and unverified TLS allowed
    pull: str = "all"         # which pulls may use it: PULL_MODES
    source: str = ""          # the file that configured it

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.host in DOCKER_HUB_NAMES else self.host

    @property
    def location(self) -> str:
        """As the user wrote it (a URL from vmctl's config, host/path from registries.conf)."""
        where = "/".join(p for p in (self.host, self.namespace) if p)
        return f"{self.scheme}://{where}" if self.scheme else where

    def serves(self, by_digest: bool) -> bool:
        return self.pull == "all" or self.pull == ("digest-only" if by_digest else "tag-only")


@dataclass(frozen=True)
class MirrorRule:
    """The mirrors of every image whose name starts with `prefix` (``HOST[/NS…]`` or ``*.domain``)."""

    prefix: str
    mirrors: tuple[Mirror, ...]
    source: str

    def match_length(self, ref: RegistryRef) -> int:
        """How much of `ref`'s name the prefix covers (0: it does not match)."""
        if self.prefix.startswith("*."):
            hostname = ref.host.rsplit(":", 1)[0] if not ref.host.endswith("]") else ref.host
            return len(self.prefix) if hostname.endswith(self.prefix[1:]) else 0
        name = f"{ref.host}/{ref.repo}"
        return len(self.prefix) if name == self.prefix or name.startswith(self.prefix + "/") else 0

    def repo_on(self, mirror: Mirror, ref: RegistryRef) -> str:
        """The repository of `ref` on `mirror`: the prefix's part of the name replaced by the
        mirror's namespace (``docker.io/library/debian`` -> ``library/debian`` on a host-only mirror)."""
        covered = ref.host if self.prefix.startswith("*.") else self.prefix
        rest = f"{ref.host}/{ref.repo}"[len(covered):].strip("/")
        return "/".join(p for p in (mirror.namespace, rest) if p)


@dataclass(frozen=True)
class Route:
    """Where one pull may ask a mirror: the mirror and the repository there."""

    mirror: Mirror
    repo: str


# ------------------------------------------------------------------ where the files are
def registries_conf_paths() -> list[Path]:
    """The containers-registries.conf(5) files read, highest priority first (module doc)."""
    explicit = os.environ.get("VMCTL_REGISTRIES_CONF")
    if explicit is not None:
        return [Path(p) for p in explicit.split(os.pathsep) if p]
    if os.environ.get("CONTAINERS_REGISTRIES_CONF"):
        return [Path(os.environ["CONTAINERS_REGISTRIES_CONF"])]
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [config_home / "containers" / "registries.conf", Path("/etc/containers/registries.conf")]


# ------------------------------------------------------------------ vmctl's config
def _url_mirror(url: str, insecure_hosts: tuple[str, ...], source: str) -> Mirror:
    """A mirror from a URL of vmctl's config (config.py checked its shape already)."""
    u = urlparse(url)
    host = normalize_host(u.netloc)
    namespace = u.path.strip("/")
    if namespace:
        check_repo(namespace)
    insecure = u.scheme == "http" or host in insecure_hosts
    return Mirror(host, namespace, u.scheme, insecure, "all", source)


def config_rules(settings) -> list[MirrorRule]:
    """The rules of vmctl's own config (``settings.registry_mirrors``)."""
    source = str(getattr(settings, "config_file", None) or "config")
    insecure_hosts = tuple(getattr(settings, "insecure_registries", ()) or ())
    rules = []
    for host, urls in getattr(settings, "registry_mirrors", ()) or ():
        try:
            prefix = normalize_host(host)
            mirrors = tuple(_url_mirror(u, insecure_hosts, source) for u in urls)
        except UsageError as exc:
            raise UsageError(f"config file {source}: registries.\"{host}\": {exc.message}") from None
        rules.append(MirrorRule(prefix, mirrors, source))
    return rules


# ------------------------------------------------------------------ registries.conf
def _string(table: dict, key: str, where: str, default: str = "") -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise UsageError(f"{where}: {key} must be a string")
    return value.strip()


def _bool(table: dict, key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} must be true or false")
    return value


def _split_location(text: str, where: str) -> tuple[str, str]:
    """``host[:port][/namespace…]`` -> (host, namespace); a UsageError naming `where` otherwise."""
    if "://" in text or "@" in text or any(c.isspace() for c in text):
        raise UsageError(f"{where}: location {text[:80]!r} must be host[:port][/namespace] (no scheme, tag or digest)")
    host, _, namespace = text.partition("/")
    try:
        host = normalize_host(host)
        if namespace:
            check_repo(namespace.strip("/"))
    except UsageError as exc:
        raise UsageError(f"{where}: location {text[:80]!r}: {exc.message}") from None
    return host, namespace.strip("/")


def _prefix(text: str, where: str) -> str | None:
    """The normalized prefix, or None for one vmctl does not use (a tag or digest in it)."""
    if text.startswith("*."):
        return text if "/" not in text and ":" not in text else None
    host, _, path = text.partition("/")
    if ":" in path or "@" in path:
        return None
    host, namespace = _split_location(text, where)
    return "/".join(p for p in (host, namespace) if p)


def _tables(value, refusal: str) -> list[dict]:
    """`value` when it is an array of TOML tables, else UsageError(`refusal`)."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise UsageError(refusal)
    return value


def read_registries_conf(path: Path) -> list[MirrorRule]:
    """The rules of one containers-registries.conf(5) file ([] if it does not exist).

    Keys vmctl uses are type-checked (one-line UsageError naming the file and the table); the
    rest of the format is left alone.
    """
    if not path.is_file():
        return []
    doc = read_toml(path, "registries.conf")
    entries = _tables(doc.get("registry", []), f"{path}: registry must be [[registry]] tables")
    rules = []
    for i, entry in enumerate(entries, 1):
        where = f"{path}: [[registry]] {i}"
        location = _string(entry, "location", where)
        prefix = _prefix(_string(entry, "prefix", where, location), where)
        insecure = _bool(entry, "insecure", where)
        digest_only = _bool(entry, "mirror-by-digest-only", where)
        raw = _tables(entry.get("mirror", []), f"{where}: mirror must be [[registry.mirror]] tables")
        mirrors = []
        for j, table in enumerate(raw, 1):
            mwhere = f"{where}, [[registry.mirror]] {j}"
            mloc = _string(table, "location", mwhere)
            if not mloc:
                raise UsageError(f"{mwhere}: location is missing")
            host, namespace = _split_location(mloc, mwhere)
            pull = _string(table, "pull-from-mirror", mwhere) or "all"
            if pull not in PULL_MODES:
                raise UsageError(f"{mwhere}: pull-from-mirror must be one of {', '.join(PULL_MODES)}")
            mirrors.append(Mirror(host, namespace, None, _bool(table, "insecure", mwhere),
                                  "digest-only" if digest_only else pull, str(path)))
        if prefix is None:
            continue
        if not prefix and not location:
            raise UsageError(f"{where}: give a location or a prefix")
        if location and not prefix.startswith("*."):
            host, namespace = _split_location(location, where)
            if "/".join(p for p in (host, namespace) if p) != prefix:
                mirrors.append(Mirror(host, namespace, None, insecure, "all", str(path)))
        rules.append(MirrorRule(prefix, tuple(mirrors), str(path)))
    return rules


# ------------------------------------------------------------------ answers
def all_rules(settings) -> list[list[MirrorRule]]:
    """Every source's rules, highest priority first: vmctl's config, then each registries.conf."""
    return [config_rules(settings)] + [read_registries_conf(p) for p in registries_conf_paths()]


def routes_for(ref: RegistryRef, settings) -> list[Route]:
    """The mirrors a pull of `ref` may ask, in order (the registry itself is not among them).

    The first source with a matching rule decides (its longest match); a mirror whose
    ``pull-from-mirror`` excludes this kind of reference (by tag or by digest) is left out.
    """
    for rules in all_rules(settings):
        best = max(rules, key=lambda r: r.match_length(ref), default=None)
        if best is not None and best.match_length(ref):
            return [Route(m, best.repo_on(m, ref)) for m in best.mirrors if m.serves(bool(ref.digest))]
    return []


def configured(settings) -> list[MirrorRule]:
    """The rules in effect, for ``vmctl info``: a prefix a higher source configured hides the
    same prefix below it."""
    seen: set[str] = set()
    out = []
    for rules in all_rules(settings):
        for rule in rules:
            if rule.prefix not in seen and rule.mirrors:
                out.append(rule)
            seen.add(rule.prefix)
    return out
