"""Reaching guests through a vmctl host's SSH server, as ``ssh -J``.

A guest on a host's private network (a libvirt NAT network, a bridge only the host is on) has an
address only that host can reach. A host added with ``--jump [USER@]HOST[:PORT]`` (a ``qemu+ssh://``
host by default: the same SSH server libvirt's connection goes through) is reached over SSH once
per command, and every connection to one of its guests is a ``direct-tcpip`` channel of that
session, opened by the host's SSH server to the guest's address.

The host is the user's machine, reached as ``ssh`` would reach it, through paramiko's
``SSHClient`` (a maintained implementation of what ``ssh`` does: the user's agent and key files,
``~/.ssh/known_hosts``): its host key must already be in ``~/.ssh/known_hosts`` -- never accepted
on first use (``RejectPolicy``) -- and a key that differs is refused. The guest's own SSH session
then runs inside the channel with its own pinned key and vmctl's client key, as on a direct
connection (`vmctl.guest.handshake`): the host only carries bytes.

A channel is handed to the rest of vmctl as a plain socket (one end of a ``socketpair``, a thread
copying between the other end and the channel), so the connection steps that peek at the banner
and select on the socket work unchanged.
"""

from __future__ import annotations

import getpass
import select
import socket
import threading
from pathlib import Path

import paramiko

from vmctl.errors import HostKeyMismatch, LibvirtUnreachable, UsageError
from vmctl.guest.handshake import StepFailed

CHUNK = 1 << 16
CHANNEL_TIMEOUT = 10.0   # seconds the host's sshd has to connect to a guest


def known_hosts_file() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


class Jump:
    """One SSH session to a host's SSH server (opened at the first `dial`), for its guests."""

    def __init__(self, target: str, *, timeout: float = 20.0, known_hosts: Path | None = None):
        user, _, rest = target.rpartition("@")
        host, _, port = rest.partition(":")
        # no user: ssh's default, the local user's name
        self.user, self.host, self.port = user or getpass.getuser(), host, int(port or 22)
        self.timeout = timeout
        self.known_hosts = known_hosts or known_hosts_file()
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            t = self._client.get_transport() if self._client is not None else None
            if t is None or not t.is_active():   # first use, or the session died (sshd restarted)
                if self._client is not None:
                    self._client.close()
                self._client = self._connect()
                t = self._client.get_transport()
            assert t is not None
            return t

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.known_hosts))
        except FileNotFoundError:
            pass
        except (OSError, paramiko.SSHException) as exc:
            raise UsageError(f"cannot read {self.known_hosts}: {exc}") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, self.port, username=self.user, timeout=self.timeout,
                           banner_timeout=self.timeout, auth_timeout=self.timeout, allow_agent=True,
                           look_for_keys=True)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(
                f"the SSH host key of {self.where} is not the one {self.known_hosts} has for it "
                f"({exc.key.get_name()} {exc.key.fingerprint}); vmctl does not go through it") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyMismatch(
                    f"the SSH host key of {self.where} is not in {self.known_hosts}: vmctl never accepts a host "
                    f"key on first use; check and add it (ssh-keyscan -p {self.port} {self.host})") from None
            # the host is as unreachable as a daemon that does not answer (exit 6), the reason said
            raise LibvirtUnreachable(f"cannot log in to {self.where} (the way to its guests) with this user's "
                                     f"SSH keys: {exc}") from None
        except OSError as exc:
            client.close()
            raise LibvirtUnreachable(f"cannot reach {self.where} (the way to its guests): "
                                     f"{exc.strerror or exc}") from None
        t = client.get_transport()
        if t is not None:
            t.set_keepalive(15)
        return client

    def dial(self, host: str, port: int, timeout: float) -> socket.socket:
        """A socket connected, through the host, to `host`:`port` (as the host sees it); a
        refused or unreachable guest is `StepFailed` ``tcp``, as a direct connection's is."""
        t = self._transport()
        try:
            # not the caller's (short) attempt budget: a channel paramiko gave up on stays open on
            # the host when its answer comes later, and its connection would sit on the guest's
            # sshd; the host's own connect fails fast enough (refused, or no ARP answer)
            chan = t.open_channel("direct-tcpip", (host, int(port)), ("127.0.0.1", 0),
                                  timeout=max(timeout, CHANNEL_TIMEOUT))
        except paramiko.ChannelException as exc:
            raise StepFailed("tcp", f"{self.where} cannot connect to {host}:{port}: {exc.text or exc}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise StepFailed("tcp", f"through {self.where} to {host}:{port}: {exc or type(exc).__name__}") from None
        ours, theirs = socket.socketpair()
        threading.Thread(target=_pump, args=(ours, chan), daemon=True, name=f"jump {host}:{port}").start()
        return theirs

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _pump(sock: socket.socket, chan: paramiko.Channel) -> None:
    """Copy bytes both ways between `sock` and `chan` until both directions ended; then close both."""
    open_ends = {sock, chan}
    try:
        while open_ends:
            ready, _, _ = select.select(list(open_ends), [], [], 30)
            for end in ready:
                data = end.recv(CHUNK)
                other = chan if end is sock else sock
                if data:
                    other.sendall(data)
                    continue
                open_ends.discard(end)   # this side is done sending: tell the other side
                if other is chan:
                    chan.shutdown_write()
                else:
                    sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        chan.close()
        sock.close()
