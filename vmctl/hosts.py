"""The hosts vmctl knows (``vmctl host add/ls/rm/use``), as Docker keeps its contexts.

A host is a libvirt daemon (``qemu+ssh://``, ``qemu+tls://``, ``qemu+tcp://``, or a local
``qemu:///system``) and the data root vmctl keeps on that machine. Everything vmctl puts there
goes through libvirt itself -- image layers and seeds as storage volumes, overlays made by the
host's libvirt, instance records in the domains' metadata -- so vmctl needs nothing on the host
but libvirtd (see ``vmctl/core/hostplace.py``).

The table lives in ``<config dir>/hosts.json`` (0600): ``{"default": NAME|null, "hosts": {NAME:
{...}}}``. It is the user's file and is checked field by field when read (one-line errors).
"""

from __future__ import annotations

import ipaddress
import json
import os
import posixpath
import re
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from vmctl.config import user_config_dir
from vmctl.errors import NotFoundError, UsageError
from vmctl.fsutil import atomic_write
from vmctl.names import check_name

LOCAL = "local"   # --host local: the classic store on this machine, not a host of the table
AUTO = "auto"     # vmctl run --host auto: placement picks one
HOST_MODES = ("hosted", "system")
ACCELERATORS = ("auto", "kvm", "tcg")
SCHEMES = ("qemu", "qemu+ssh", "qemu+tls", "qemu+tcp", "qemu+libssh", "qemu+libssh2", "qemu+unix")
DEFAULT_HOST_ROOT = "/var/lib/vmctl"
MAX_TABLE = 1 << 20   # a hosts.json larger than this is not vmctl's


@dataclass(frozen=True)
class Host:
    """One host: where its libvirt answers, where vmctl keeps its files there, how VMs are reached.

    `address` is the IPv4 address of the host as the client sees it: hosted VMs' forwarded ports
    listen there (instead of 127.0.0.1), and migrations to this host stream to it.
    `memory_mib` caps what vmctl places on the host (None: what libvirt reports)."""

    name: str
    uri: str
    root: str = DEFAULT_HOST_ROOT
    mode: str = "hosted"
    address: str = "127.0.0.1"
    memory_mib: int | None = None
    # vmctl cannot boot its KVM probe guest on another machine: "auto" takes KVM where the host's
    # libvirt offers it; "tcg" for a host whose /dev/kvm does not really run guests
    accelerator: str = "auto"
    # where vmctl reaches the host's guests from, as ``ssh -J``: ``user@host[:port]`` of the host's
    # SSH server (its key pinned in ~/.ssh/known_hosts), or None to connect to them directly
    jump: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def check_uri(uri: str) -> str:
    """A libvirt URI of a QEMU daemon (`SCHEMES`), with no spaces or control characters."""
    if not isinstance(uri, str) or not uri or len(uri) > 1024 or any(ord(c) < 33 for c in uri):
        raise UsageError(f"invalid libvirt URI {str(uri)[:80]!r}")
    scheme = uri.split(":", 1)[0]
    if scheme not in SCHEMES or "://" not in uri:
        raise UsageError(f"invalid libvirt URI {uri!r}: expected {', '.join(s + '://' for s in SCHEMES[1:4])} "
                         "or qemu:///system")
    path = urlparse(uri).path.rstrip("/")
    if path not in ("/system", "/session"):
        raise UsageError(f"invalid libvirt URI {uri!r}: the path must be /system or /session")
    return uri


def check_root(root: str) -> str:
    """An absolute, normalised POSIX path of the host's data root (no ``..``, no control characters)."""
    if not isinstance(root, str) or not root.startswith("/") or any(ord(c) < 32 for c in root) or len(root) > 512:
        raise UsageError(f"invalid host data root {str(root)[:80]!r}: an absolute path is needed")
    norm = posixpath.normpath(root)
    if norm != root.rstrip("/") or ".." in norm.split("/") or norm == "/":
        raise UsageError(f"invalid host data root {root!r}: give it as a plain absolute path")
    return norm


def check_address(address: str) -> str:
    try:
        ip = ipaddress.IPv4Address(address)
    except (ipaddress.AddressValueError, ValueError):
        raise UsageError(f"invalid host address {str(address)[:80]!r}: an IPv4 address is needed") from None
    if ip.is_unspecified or ip.is_multicast:
        raise UsageError(f"invalid host address {address}: not a host's address")
    return str(ip)


SSH_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
SSH_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def check_jump(target: str) -> str:
    """``[user@]host[:port]`` of an SSH server, each part checked (nothing that ssh could read as
    an option or that a shell could split); UsageError otherwise. Without a user, ssh's own
    default applies: the local user's name."""
    text = str(target)
    user, at, rest = text.rpartition("@")
    host, colon, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if ((at and not SSH_USER.fullmatch(user)) or not SSH_HOST.fullmatch(host)
            or (colon and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535))):
        raise UsageError(f"invalid --jump {text[:80]!r}: [USER@]HOST[:PORT] of the host's SSH server")
    return f"{user}{at}{host}" + (f":{int(port)}" if colon else "")


def jump_of(uri: str) -> str | None:
    """The SSH server a ``qemu+ssh://`` URI names (``[user@]host[:port]``, as libvirt's ssh reaches
    it), the default way to the guests of such a host; None for other transports, or when the
    URI's parts are not ones vmctl hands to ssh (then no jump, as with ``--jump none``)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("qemu+ssh", "qemu+libssh", "qemu+libssh2") or not parsed.hostname:
        return None
    try:
        return check_jump((f"{parsed.username}@" if parsed.username else "") + parsed.hostname
                          + (f":{parsed.port}" if parsed.port else ""))
    except (UsageError, ValueError):
        return None


def address_of(uri: str) -> str:
    """The IPv4 address of the URI's host (127.0.0.1 for a local daemon); UsageError if it has none."""
    hostname = urlparse(uri).hostname
    if not hostname:
        return "127.0.0.1"
    try:
        return check_address(hostname)
    except UsageError:
        pass
    try:
        infos = socket.getaddrinfo(hostname, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise UsageError(f"cannot resolve {hostname}: {exc.strerror or exc}; give --address") from None
    return infos[0][4][0]


def make_host(name: str, uri: str, *, root: str | None = None, mode: str | None = None,
              address: str | None = None, memory_mib: int | None = None,
              accelerator: str | None = None, jump: str | None = None) -> Host:
    """A checked `Host` (every field as `read_table` would accept it). `jump` ``none`` (or "")
    reaches guests directly; None takes the ``qemu+ssh://`` URI's SSH server (`jump_of`)."""
    check_name(name, "host name")
    if name in (LOCAL, AUTO):
        raise UsageError(f"{name!r} is reserved (--host {LOCAL}: this machine's store; --host {AUTO}: placement)")
    mode = mode or "hosted"
    if mode not in HOST_MODES:
        raise UsageError(f"invalid host mode {mode!r}: {' or '.join(HOST_MODES)}")
    if memory_mib is not None and (not isinstance(memory_mib, int) or isinstance(memory_mib, bool)
                                   or not 64 <= memory_mib <= 1 << 30):
        raise UsageError("--memory of a host must be between 64 MiB and 1 PiB")
    accelerator = accelerator or "auto"
    if accelerator not in ACCELERATORS:
        raise UsageError(f"invalid accelerator {accelerator!r}: {', '.join(ACCELERATORS)}")
    uri = check_uri(uri)
    if jump is None:
        jump = jump_of(uri)
    elif jump in ("", "none"):
        jump = None
    else:
        jump = check_jump(jump)
    return Host(name=name, uri=uri, root=check_root(root or DEFAULT_HOST_ROOT), mode=mode,
                address=check_address(address) if address else address_of(uri), memory_mib=memory_mib,
                accelerator=accelerator, jump=jump)


@dataclass
class HostTable:
    """The hosts file: hosts by name and the default one."""

    path: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    default: str | None = None

    @classmethod
    def read(cls, path: Path) -> "HostTable":
        """The table at `path` (empty when the file does not exist); UsageError naming the field
        that is wrong."""
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_TABLE + 1)
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        where = f"hosts file {path}"
        if len(raw) > MAX_TABLE:
            raise UsageError(f"{where} is larger than {MAX_TABLE} bytes")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"{where} is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("hosts", {}), dict):
            raise UsageError(f"{where}: expected {{\"default\": ..., \"hosts\": {{...}}}}")
        table = cls(path)
        for name, entry in data.get("hosts", {}).items():
            if not isinstance(entry, dict):
                raise UsageError(f"{where}: host {str(name)[:40]!r} must be an object")
            try:
                host = make_host(name, entry.get("uri"), root=entry.get("root"), mode=entry.get("mode"),
                                 address=entry.get("address") or None, memory_mib=entry.get("memory_mib"),
                                 accelerator=entry.get("accelerator"),
                                 jump=entry.get("jump") or "none")   # as written: absent or null is none
            except UsageError as exc:
                raise UsageError(f"{where}: host {str(name)[:40]!r}: {exc.message}") from None
            table.hosts[name] = host
        default = data.get("default")
        if default is not None and default not in table.hosts:
            raise UsageError(f"{where}: the default host {str(default)[:40]!r} is not in the table")
        table.default = default
        return table

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"default": self.default, "hosts": {n: h.to_json() for n, h in sorted(self.hosts.items())}}
        atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True).encode(), mode=0o600)

    def get(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none; add one with 'vmctl host add NAME URI'"
            raise NotFoundError(f"no such host: {name} (hosts: {known})") from None


def hosts_file() -> Path:
    """``$VMCTL_HOSTS``, else ``<user config dir>/hosts.json``."""
    explicit = os.environ.get("VMCTL_HOSTS")
    if explicit:
        return Path(explicit)
    return user_config_dir() / "hosts.json"
