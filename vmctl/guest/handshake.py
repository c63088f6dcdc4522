"""The steps of reaching a guest's SSH server, each failing with `StepFailed` naming itself.

``tcp`` (connect), ``banner`` (an ``SSH-2.0-`` line: QEMU's user-mode forward accepts TCP at once
even before the guest listens, so a connect alone proves nothing), ``hostkey`` (the key the server
proves it holds must be byte-identical to the pinned one, else `HostKeyMismatch` with both
fingerprints: a guest is never trusted on first use) and ``auth`` (vmctl's key only: no agent, no
``~/.ssh``, no passwords). `vmctl.guest.ready` retries them while a guest boots.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from pathlib import Path
from typing import Callable

import paramiko

from vmctl.errors import HostKeyMismatch, UsageError
from vmctl.guest.keys import HOST_KEY_ALGORITHMS, ClientKey, fingerprint, parse_public_line

# paramiko logs failed handshakes at ERROR; while a guest boots that is expected, and the CLI reports
# failures itself. Without a handler Python would print them to stderr (logging.lastResort).
logging.getLogger("paramiko").addHandler(logging.NullHandler())
STEPS = ("address", "tcp", "banner", "hostkey", "auth")

class StepFailed(Exception):
    """One connection step failed (a retryable condition while a guest boots)."""

    def __init__(self, step: str, reason: str, interrupted: bool = False):
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
        self.interrupted = interrupted  # given up early on purpose (see `wait_banner`), retry at once


# ---------------------------------------------------------------------------------------------
# Connection steps


def tcp_connect(host: str, port: int, timeout: float) -> socket.socket:
    """Step ``tcp``: open a TCP connection."""
    try:
        sock = socket.create_connection((host, port), timeout=max(timeout, 0.05))
    except socket.timeout:
        raise StepFailed("tcp", f"no TCP answer from {host}:{port} within {timeout:.1f} s") from None
    except OSError as exc:
        raise StepFailed("tcp", f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def wait_banner(sock: socket.socket, timeout: float, interrupt: Callable[[], bool] | None = None) -> str:
    """Step ``banner``: wait for the server's ``SSH-2.0-`` line without consuming it.

    QEMU's user-mode port forwarding accepts a TCP connection before the guest listens and then
    closes or stalls it, so only the version line proves an SSH server is there. The data is
    peeked, so paramiko reads the same banner afterwards.

    `interrupt`, polled every 0.05 s while nothing arrives, gives up early (a `StepFailed` whose
    reason says so) when it returns true: say, the guest just announced that it listens, and a
    fresh connection gets through sooner than this stalled one.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        r, _, _ = select.select([sock], [], [], remaining if interrupt is None else min(remaining, 0.05))
        if not r:
            if interrupt is not None and time.monotonic() < deadline:
                if interrupt():
                    raise StepFailed("banner", "no SSH banner yet on this connection; the guest says it is ready, so retrying at once",
                                         interrupted=True)
                continue
            break
        try:
            data = sock.recv(8193, socket.MSG_PEEK)
        except OSError as exc:
            raise StepFailed("banner", f"connection failed before an SSH banner: {exc.strerror or exc}") from None
        if not data:
            raise StepFailed("banner", "the port accepted the connection but closed it without an SSH banner")
        lines = data.split(b"\n")
        for line in lines[:-1]:
            if line.startswith(b"SSH-"):
                text = line.rstrip(b"\r").decode("ascii", "replace")
                if line.startswith((b"SSH-2.0-", b"SSH-1.99-")):
                    return text
                raise StepFailed("banner", f"unsupported SSH version line {text[:60]!r}")
        if len(data) > 8192:
            raise StepFailed("banner", "the server sent 8 KiB without an SSH version line")
        # Data without a complete line yet: wait a little for more (peek returns the same bytes).
        time.sleep(0.01)
    hint = f" (it sent {data[:40]!r})" if data else ""
    raise StepFailed("banner", f"no SSH banner within {timeout:.1f} s{hint}")


def _mismatch(where: str, server_type: str, server_blob: bytes | None, pinned_line: str) -> HostKeyMismatch:
    pinned_type, pinned_blob, _ = parse_public_line(pinned_line)
    if server_blob is None:
        got = f"offers no {pinned_type} host key"
    else:
        got = f"presented {server_type} key {fingerprint(server_blob)}"
    return HostKeyMismatch(
        f"{where}: the guest's SSH server {got}, but the pinned host key is {pinned_type} "
        f"{fingerprint(pinned_blob)}: refusing to connect"
    )


Dial = Callable[[str, int, float], socket.socket]   # (host, port, timeout) -> a connected socket


def probe_any_key(host: str, port: int, timeout: float, dial: Dial | None = None) -> tuple[str, bytes] | None:
    """Fetch whatever host key the server offers (only to report a mismatch; never trusted)."""
    try:
        sock = (dial or tcp_connect)(host, port, timeout)
    except StepFailed:
        return None
    t = paramiko.Transport(sock)
    try:
        t.banner_timeout = timeout
        t.start_client(timeout=timeout)
        key = t.get_remote_server_key()
        return key.get_name(), key.asbytes()
    except Exception:  # noqa: BLE001 - a diagnostic only
        return None
    finally:
        t.close()


def handshake(
    sock: socket.socket, host_key_line: str, timeout: float, *, where: str,
    probe: Callable[[], tuple[str, bytes] | None] | None = None,
) -> paramiko.Transport:
    """Step ``hostkey``: key exchange restricted to the pinned key's type; compare the key exactly.

    Raises `HostKeyMismatch` at once on a different key (or when the server has no key of the
    pinned type: then `probe` may fetch the key it does have, for the message).
    """
    pinned_type, pinned_blob, _ = parse_public_line(host_key_line)
    if pinned_type not in HOST_KEY_ALGORITHMS:
        raise UsageError(f"unsupported SSH host key type {pinned_type}")
    t = paramiko.Transport(sock)
    ok = False
    try:
        t.banner_timeout = timeout
        t.handshake_timeout = timeout
        t.auth_timeout = timeout
        t.get_security_options().key_types = HOST_KEY_ALGORITHMS[pinned_type]
        try:
            t.start_client(timeout=timeout)
        except paramiko.ssh_exception.IncompatiblePeer as exc:
            if "host key" in str(exc):
                found = probe() if probe else None
                raise _mismatch(where, found[0] if found else "", found[1] if found else None, host_key_line) from None
            raise StepFailed("hostkey", f"SSH negotiation failed: {exc}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise StepFailed("hostkey", f"SSH key exchange failed: {exc or type(exc).__name__}") from None
        key = t.get_remote_server_key()
        if key.asbytes() != pinned_blob:
            raise _mismatch(where, key.get_name(), key.asbytes(), host_key_line)
        ok = True
        return t
    finally:
        if not ok:
            t.close()


def authenticate(t: paramiko.Transport, user: str, pkey: paramiko.PKey, timeout: float) -> None:
    """Step ``auth``: public key authentication with vmctl's key only."""
    t.auth_timeout = timeout
    try:
        t.auth_publickey(user, pkey)
    except paramiko.BadAuthenticationType as exc:
        raise StepFailed("auth", f"the guest does not accept public keys for {user!r} (it allows: "
                         f"{', '.join(exc.allowed_types) or 'nothing'})") from None
    except paramiko.AuthenticationException:
        raise StepFailed("auth", f"the guest refused vmctl's key for user {user!r}") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise StepFailed("auth", f"authentication failed: {exc or type(exc).__name__}") from None
    if not t.is_authenticated():
        raise StepFailed("auth", f"the guest did not accept vmctl's key for user {user!r}")


def load_pkey(client_key: ClientKey | paramiko.PKey | Path | str) -> paramiko.PKey:
    if isinstance(client_key, paramiko.PKey):
        return client_key
    if isinstance(client_key, ClientKey):
        return client_key.pkey()
    return paramiko.Ed25519Key.from_private_key_file(str(client_key))
