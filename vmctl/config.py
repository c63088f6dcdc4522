"""Where vmctl keeps things, and the settings a user can change.

Two setups share one code base:
- ``hosted`` (default): ``qemu:///session``, user-mode networking with ports forwarded on 127.0.0.1,
  data under the user's XDG data dir (root's under /var/lib/vmctl, as Docker's /var/lib/docker);
- ``system`` (bare-metal): ``qemu:///system``, KVM, libvirt networks/bridges, data under /var/lib/vmctl.

Settings are read, lowest priority first, from built-in defaults, the config file
(``$VMCTL_CONFIG``, else ``/etc/vmctl/config.toml`` in system mode or
``$XDG_CONFIG_HOME/vmctl/config.toml``), environment variables (``VMCTL_ROOT``, ``VMCTL_MODE``,
``VMCTL_CONNECT``) and finally command-line options.

Registry mirrors: ``[registries."HOST"] mirrors = ["https://mirror:5000", ...]`` (checked here;
what they mean, and the containers-registries.conf(5) files read besides, is
:mod:`vmctl.registry.mirrors`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from vmctl.errors import UsageError
from vmctl.names import check_name
from vmctl.userfiles import read_toml

MODES = ("hosted", "system")
DEFAULT_URI = {"hosted": "qemu:///session", "system": "qemu:///system"}
DEFAULT_PROFILE = {"hosted": "hosted", "system": "kvm"}
SYSTEM_ROOT = "/var/lib/vmctl"
ACCELERATORS = ("auto", "kvm", "tcg")
USER_NETWORKS = ("auto", "passt", "slirp")
VOLUME_TRANSPORTS = ("auto", "virtiofs", "9p")


def templates_dir() -> Path:
    """Return the directory holding built-in profiles and recipes.

    In an installed wheel that is the data package ``vmctl/_templates`` (setup.py maps the
    repository's top-level ``templates/`` onto it); in a source checkout, ``templates/`` itself.
    """
    here = Path(__file__).resolve().parent
    installed = here / "_templates"
    if installed.is_dir():
        return installed
    return here.parent / "templates"


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


def build_cache_dir() -> Path:
    """Where image builds keep downloaded packages and finished builds (``VMCTL_BUILD_CACHE``).

    Per user, not per data root: every store of a user shares the same downloads and builds.
    """
    explicit = os.environ.get("VMCTL_BUILD_CACHE")
    return Path(explicit) if explicit else _xdg("XDG_CACHE_HOME", ".cache") / "vmctl" / "build"


def user_config_dir() -> Path:
    """Directory of the user's own config, profiles and credentials (never readable by QEMU)."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "vmctl"


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one vmctl invocation."""

    mode: str = "hosted"
    uri: str = "qemu:///session"
    root: Path = field(default_factory=lambda: Path(SYSTEM_ROOT) if os.geteuid() == 0
                       else _xdg("XDG_DATA_HOME", ".local/share") / "vmctl")
    profile: str = "hosted"
    restrict_network: bool = False
    insecure_registries: tuple[str, ...] = ()
    accelerator: str = "auto"          # auto (KVM when the probe proves it works) | kvm | tcg
    user_network: str = "auto"         # auto (passt when libvirt takes it) | passt | slirp
    volume_transport: str = "auto"     # auto (virtio-fs when the daemon can, 9p else) | virtiofs | 9p
    registry_mirrors: tuple[tuple[str, tuple[str, ...]], ...] = ()   # (HOST, mirror URLs), config order
    config_file: Path | None = None
    # the host named by --host, VMCTL_HOST or the config file's `host` (None: the hosts table's
    # default, if any; vmctl.hosts); "local" forces this machine's own store
    host: str | None = None
    # where each setting came from: ("mode", "--mode" | "VMCTL_MODE" | "config file" | "default")
    sources: tuple[tuple[str, str], ...] = ()

    @property
    def paths(self) -> "Paths":
        return Paths(self.root)


@dataclass(frozen=True)
class Paths:
    """The store's layout under one data root. Every path vmctl writes derives from here."""

    root: Path

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def instances(self) -> Path:
        return self.root / "instances"

    @property
    def keys(self) -> Path:
        """vmctl's own SSH key pair: 0700, never readable by QEMU."""
        return self.root / "keys"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def stacks(self) -> Path:
        """What each stack was given (networks, addresses, MACs): ``stacks/<name>.json``."""
        return self.root / "stacks"

    def instance_dir(self, name: str) -> Path:
        return self.instances / check_name(name, "VM name")


def _config_path(mode_hint: str | None) -> Path | None:
    explicit = os.environ.get("VMCTL_CONFIG")
    if explicit:
        return Path(explicit)
    candidates = [user_config_dir() / "config.toml"]
    if mode_hint == "system" or os.geteuid() == 0:
        candidates.append(Path("/etc/vmctl/config.toml"))
    for path in candidates:
        if path.is_file():
            return path
    return None


def _read_config(path: Path | None) -> dict:
    if path is None:
        return {}

    data = read_toml(path, "config file")
    known = {"mode", "connect", "root", "profile", "restrict_network", "insecure_registries", "host",
             "accelerator", "user_network", "volume_transport", "registries"}
    unknown = set(data) - known
    if unknown:
        raise UsageError(f"config file {path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return data


def _registry_mirrors(value, path: Path | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``[registries."HOST"] mirrors = [URL, ...]`` as (HOST, URLs) pairs, every type checked: each
    URL ``http://`` or ``https://`` with a host and no user, query or fragment (one-line errors)."""
    where = f"config file {path}"
    if not isinstance(value, dict):
        raise UsageError(f'{where}: registries must be tables: [registries."HOST"] mirrors = ["https://..."]')
    out = []
    for host, table in value.items():
        key = f'registries."{host}"'
        if not host or any(c.isspace() or c in "/@\\" for c in host):
            raise UsageError(f"{where}: {key}: expected a registry HOST[:PORT]")
        if not isinstance(table, dict):
            raise UsageError(f"{where}: {key} must be a table with mirrors = [...]")
        unknown = sorted(set(table) - {"mirrors"})
        if unknown:
            hint = (f' (quote a host that has dots: [registries."{host}.{unknown[0]}"])'
                    if isinstance(table[unknown[0]], dict) else "")
            raise UsageError(f"{where}: {key}: unknown setting(s) {', '.join(unknown)}{hint}")
        mirrors = table.get("mirrors", [])
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise UsageError(f"{where}: {key}.mirrors must be a list of URLs (strings)")
        for url in mirrors:
            try:
                u = urlparse(url)
                u.port  # noqa: B018 - raises ValueError for a port that is not a number
                ok = (u.scheme in ("http", "https") and bool(u.hostname)
                      and not (u.username or u.password or u.query or u.fragment or u.params))
            except ValueError:
                ok = False
            if not ok or any(c.isspace() for c in url):
                raise UsageError(f"{where}: {key}.mirrors: {url[:80]!r} is not an http:// or https:// URL "
                                 "of a registry")
        out.append((host, tuple(mirrors)))
    return tuple(out)


def load_settings(
    *, mode: str | None = None, uri: str | None = None, root: str | Path | None = None,
    profile: str | None = None, restrict_network: bool | None = None, host: str | None = None,
) -> Settings:
    """Resolve settings from defaults, config file, environment and explicit arguments (highest)."""
    env_mode = os.environ.get("VMCTL_MODE")
    path = _config_path(mode or env_mode)
    cfg = _read_config(path)
    chosen_mode = mode or env_mode or cfg.get("mode") or "hosted"
    if chosen_mode not in MODES:
        raise UsageError(f"invalid mode {chosen_mode!r}: choose one of {', '.join(MODES)}")
    chosen_uri = uri or os.environ.get("VMCTL_CONNECT") or cfg.get("connect") or DEFAULT_URI[chosen_mode]
    if root is not None:
        chosen_root = Path(root)
    elif os.environ.get("VMCTL_ROOT"):
        chosen_root = Path(os.environ["VMCTL_ROOT"])
    elif cfg.get("root"):
        chosen_root = Path(cfg["root"])
    elif chosen_mode == "system" or os.geteuid() == 0:
        # root keeps its store where Docker keeps its own (/var/lib/docker), not under /root: QEMU
        # runs as another user and would need an ACL on root's home to reach the disks
        chosen_root = Path(SYSTEM_ROOT)
    else:
        chosen_root = _xdg("XDG_DATA_HOME", ".local/share") / "vmctl"
    restrict = restrict_network if restrict_network is not None else bool(cfg.get("restrict_network", False))
    accelerator = cfg.get("accelerator", "auto")
    if accelerator not in ACCELERATORS:
        raise UsageError(f"config file {path}: accelerator must be one of {', '.join(ACCELERATORS)}")
    user_network = cfg.get("user_network", "auto")
    if user_network not in USER_NETWORKS:
        raise UsageError(f"config file {path}: user_network must be one of {', '.join(USER_NETWORKS)}")
    volume_transport = cfg.get("volume_transport", "auto")
    if volume_transport not in VOLUME_TRANSPORTS:
        raise UsageError(f"config file {path}: volume_transport must be one of {', '.join(VOLUME_TRANSPORTS)}")
    def origin(flag_value, flag: str, env: str | None, key: str) -> str:
        if flag_value is not None:
            return flag
        if env and os.environ.get(env):
            return env
        return "config file" if key in cfg else "default"

    sources = (
        ("mode", "--mode" if mode else origin(None, "", "VMCTL_MODE", "mode")),
        ("connect", origin(uri, "--connect", "VMCTL_CONNECT", "connect")),
        ("root", origin(root, "--root", "VMCTL_ROOT", "root")),
        ("profile", origin(profile, "--profile", None, "profile")),
        ("restrict_network", origin(restrict_network, "--restrict-network", None, "restrict_network")),
        ("host", origin(host, "--host", "VMCTL_HOST", "host")),
        *((key, "config file" if key in cfg else "default")
          for key in ("insecure_registries", "accelerator", "user_network", "volume_transport", "registries")),
    )
    return Settings(
        sources=sources,
        mode=chosen_mode,
        uri=chosen_uri,
        root=chosen_root.absolute(),
        profile=profile or cfg.get("profile") or DEFAULT_PROFILE[chosen_mode],
        restrict_network=restrict,
        insecure_registries=tuple(cfg.get("insecure_registries", ())),
        accelerator=accelerator,
        user_network=user_network,
        volume_transport=volume_transport,
        registry_mirrors=_registry_mirrors(cfg.get("registries", {}), path),
        config_file=path,
        host=host or os.environ.get("VMCTL_HOST") or _config_host(cfg.get("host"), path),
    )


def _config_host(value, path: Path | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"config file {path}: host must be a host's name (vmctl host ls)")
    return value
