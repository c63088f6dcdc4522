"""One SSH session to a running guest, with paramiko: exec, copy, interactive shell.

The connection is built by hand from a socket and a ``paramiko.Transport`` rather than through
``SSHClient``, so nothing implicit happens: no agent, no ``~/.ssh`` keys or known_hosts, no password
or keyboard-interactive auth. The host key algorithm is restricted to the pinned key's type and the
key the server proves it holds must be byte-identical to the pinned one, else `HostKeyMismatch`
(with both fingerprints) -- a guest is never trusted on first use.

Each connection step (``tcp``, ``banner``, ``hostkey``, ``auth``) fails with `StepFailed` naming the
step, which `vmctl.guest.ready` retries and `GuestSession` turns into `GuestNotReady`.

Copies use SFTP when the server offers it (OpenSSH cloud images) and otherwise fall back to plain
exec channels (dropbear on vmctl's tiny busybox guest has no SFTP server): ``cat > path`` /
``cat < path`` for files, ``tar`` streams for directories. Both follow ``docker cp``: a destination
that is an existing directory receives the source under its own name; otherwise the destination
names the copy. Modes are kept. Nothing from the guest is trusted when writing on the host: remote
names are checked, tar members go through a filter that refuses absolute paths, ``..``, links that
escape, and device files.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import posixpath
import select
import shlex
import signal
import socket
import stat
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable

import paramiko

from vmctl.errors import (
    ConflictError,
    ExternalToolError,
    GuestNotReady,
    HostKeyMismatch,
    IntegrityError,
    NotFoundError,
    UsageError,
)
from vmctl.guest.keys import HOST_KEY_ALGORITHMS, ClientKey, fingerprint, parse_public_line

CHUNK = 64 * 1024
# paramiko logs failed handshakes at ERROR; while a guest boots that is expected, and the CLI reports
# failures itself. Without a handler Python would print them to stderr (logging.lastResort).
logging.getLogger("paramiko").addHandler(logging.NullHandler())
STEPS = ("address", "tcp", "banner", "hostkey", "auth")


class StepFailed(Exception):
    """One connection step failed (a retryable condition while a guest boots)."""

    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


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


def wait_banner(sock: socket.socket, timeout: float) -> str:
    """Step ``banner``: wait for the server's ``SSH-2.0-`` line without consuming it.

    QEMU's user-mode port forwarding accepts a TCP connection before the guest listens and then
    closes or stalls it, so only the version line proves an SSH server is there. The data is
    peeked, so paramiko reads the same banner afterwards.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        r, _, _ = select.select([sock], [], [], remaining)
        if not r:
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


def _probe_any_key(host: str, port: int, timeout: float) -> tuple[str, bytes] | None:
    """Fetch whatever host key the server offers (only to report a mismatch; never trusted)."""
    try:
        sock = tcp_connect(host, port, timeout)
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


def _load_pkey(client_key: ClientKey | paramiko.PKey | Path | str) -> paramiko.PKey:
    if isinstance(client_key, paramiko.PKey):
        return client_key
    if isinstance(client_key, ClientKey):
        return client_key.pkey()
    return paramiko.Ed25519Key.from_private_key_file(str(client_key))


def _command(argv: list[str] | tuple[str, ...] | str) -> str:
    if isinstance(argv, str):
        if not argv.strip():
            raise UsageError("empty command")
        return argv
    argv = list(argv)
    if not argv:
        raise UsageError("empty command")
    return shlex.join(argv)


def _rq(path: str) -> str:
    """Quote a remote path for the guest's shell; a leading '-' can never become an option."""
    if path.startswith("-"):
        path = "./" + path
    return shlex.quote(path)


def _check_name(name: str, where: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ExternalToolError("guest", f"refusing unsafe file name {name!r} in {where}")
    return name


def _tar_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """Extraction policy for tar streams from a guest: tarfile's ``data`` filter (no absolute
    names, no ``..``, hard links only inside, no devices, no ownership), except that symlinks may
    point anywhere (``/etc/localtime``) -- nothing is ever written through a link because every
    member's resolved path must stay inside the destination -- and permission bits are kept
    (setuid/setgid/sticky dropped, as for every download)."""
    if member.isdev() or member.isfifo():
        return None
    if member.issym():
        member = tarfile.tar_filter(member, dest)
        return member.replace(uid=None, gid=None, uname=None, gname=None, deep=False)
    filtered = tarfile.data_filter(member, dest)
    if filtered is not None and (filtered.isdir() or filtered.isreg()):
        # keep permission bits as they were (the data filter drops group/other write and directory
        # modes); like every download, only setuid/setgid/sticky are dropped
        filtered = filtered.replace(mode=member.mode & 0o777, deep=False)
    return filtered


class _ChannelWriter(io.RawIOBase):
    def __init__(self, chan: paramiko.Channel):
        self.chan = chan

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.chan.sendall(bytes(b))
        return len(b)


class _ChannelReader(io.RawIOBase):
    def __init__(self, chan: paramiko.Channel):
        self.chan = chan

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.chan.recv(len(b))
        b[: len(data)] = data
        return len(data)


def _drain(read: Callable[[int], bytes], sink: Callable[[bytes], None] | None) -> threading.Thread:
    def loop() -> None:
        while True:
            data = read(CHUNK)
            if not data:
                return
            if sink is not None:
                sink(data)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    return th


def _settle(chan: paramiko.Channel, timeout: float = 2.0) -> None:
    """Close a channel after the server closed its side (bounded wait).

    Closing first while the remote process is still exiting races in dropbear: the next channel
    opened on the connection is sometimes refused or closed at once ("Unable to open channel").
    """
    deadline = time.monotonic() + timeout
    while not chan.closed and time.monotonic() < deadline:
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            break
        time.sleep(0.005)
    chan.close()


class _Capped:
    """Keeps the last bytes of a stream (remote stderr for error messages)."""

    def __init__(self, limit: int = 16384):
        self.limit = limit
        self.data = b""

    def __call__(self, chunk: bytes) -> None:
        self.data = (self.data + chunk)[-self.limit :]

    def text(self) -> str:
        return " ".join(self.data.decode("utf-8", "replace").split())


# ---------------------------------------------------------------------------------------------


class GuestSession:
    """An authenticated SSH connection to one guest; use as a context manager.

    ``sftp``: None = use SFTP when the server offers it; False = always the exec fallback;
    True = require SFTP.
    """

    def __init__(
        self, host: str, port: int = 22, *, user: str, client_key: ClientKey | paramiko.PKey | Path | str,
        host_key_line: str, connect_timeout: float = 10.0, timeout: float = 30.0,
        sftp: bool | None = None,
    ):
        self.host = host
        self.port = int(port)
        self.user = user
        self.client_key = client_key
        self.host_key_line = host_key_line.strip()
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.sftp_mode = sftp
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_tried = False

    # -- lifetime --------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def open(self) -> "GuestSession":
        """Connect, verify the pinned host key and authenticate (raises GuestNotReady/HostKeyMismatch)."""
        if self._transport is not None:
            return self
        pkey = _load_pkey(self.client_key)
        try:
            sock = tcp_connect(self.host, self.port, self.connect_timeout)
            try:
                wait_banner(sock, self.connect_timeout)
                t = handshake(sock, self.host_key_line, self.connect_timeout, where=self.where,
                              probe=lambda: _probe_any_key(self.host, self.port, self.connect_timeout))
            except BaseException:
                sock.close()
                raise
            try:
                authenticate(t, self.user, pkey, self.connect_timeout)
            except BaseException:
                t.close()
                raise
        except StepFailed as exc:
            err = GuestNotReady(f"{self.where}: {exc.step} failed: {exc.reason}")
            err.step = exc.step
            err.details = ""
            raise err from None
        t.set_keepalive(15)
        self._transport = t
        return self

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # noqa: BLE001
                pass
            self._sftp = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def __enter__(self) -> "GuestSession":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def transport(self) -> paramiko.Transport:
        if self._transport is None:
            self.open()
        assert self._transport is not None
        return self._transport

    def _channel(self) -> paramiko.Channel:
        try:
            return self.transport.open_session(timeout=self.timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ExternalToolError("ssh", f"{self.where}: cannot open a session: {exc or type(exc).__name__}") from None

    # -- exec ------------------------------------------------------------------------------

    def run(
        self, argv: list[str] | str, stdin: bytes | BinaryIO | None = None,
        stdout: BinaryIO | None = None, stderr: BinaryIO | None = None,
    ) -> int:
        """Run a command; stream its stdout/stderr as they come; return its exit status.

        A list is quoted with ``shlex.join`` for the remote shell; a string is passed as shell
        text. ``stdin`` may be bytes or a binary file (sent, then EOF); None sends EOF at once.
        ``stdout``/``stderr`` default to this process's (binary) streams. A command killed by a
        signal, or a server that reports no status, gives 255 like OpenSSH's client.
        """
        command = _command(argv)
        out = stdout if stdout is not None else sys.stdout.buffer
        err = stderr if stderr is not None else sys.stderr.buffer

        def sink(stream: BinaryIO) -> Callable[[bytes], None]:
            def write(data: bytes) -> None:
                stream.write(data)
                flush = getattr(stream, "flush", None)
                if flush:
                    flush()
            return write

        chan = self._channel()
        try:
            chan.exec_command(command)
            feeder = None
            if stdin is None:
                chan.shutdown_write()
            else:
                feeder = threading.Thread(target=self._feed, args=(chan, stdin), daemon=True)
                feeder.start()
            err_thread = _drain(chan.recv_stderr, sink(err))
            while True:
                data = chan.recv(CHUNK)
                if not data:
                    break
                sink(out)(data)
            err_thread.join()
            status = chan.recv_exit_status()
            if feeder is not None:
                feeder.join(timeout=0.2)
            _settle(chan)
        finally:
            chan.close()
        return 255 if status < 0 else status

    @staticmethod
    def _feed(chan: paramiko.Channel, stdin: bytes | BinaryIO) -> None:
        try:
            if isinstance(stdin, (bytes, bytearray, memoryview)):
                chan.sendall(bytes(stdin))
            else:
                read = getattr(stdin, "read1", None) or stdin.read
                while True:
                    data = read(CHUNK)
                    if not data:
                        break
                    chan.sendall(data)
            chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the remote command stopped reading: its status tells the story

    def output(self, argv: list[str] | str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run a command and return (status, stdout, stderr) as bytes."""
        out, err = io.BytesIO(), io.BytesIO()
        status = self.run(argv, stdin=stdin, stdout=out, stderr=err)
        return status, out.getvalue(), err.getvalue()

    def _exec_checked(self, command: str, what: str, *, feed: Callable[[paramiko.Channel], None] | None = None,
                      consume: Callable[[paramiko.Channel], None] | None = None) -> None:
        """Run `command`, feeding its stdin and/or consuming its stdout; raise if it fails."""
        chan = self._channel()
        errbuf = _Capped()
        failure: BaseException | None = None
        try:
            chan.exec_command(command)
            err_thread = _drain(chan.recv_stderr, errbuf)
            out_thread = None
            if consume is None:
                out_thread = _drain(chan.recv, None)
            try:
                if feed is not None:
                    feed(chan)
                chan.shutdown_write()
                if consume is not None:
                    consume(chan)
            except (OSError, EOFError, paramiko.SSHException, tarfile.TarError) as exc:
                failure = exc  # the remote side probably stopped: report its status first
                if consume is not None:
                    out_thread = _drain(chan.recv, None)  # let the remote side finish writing
            if out_thread is not None:
                out_thread.join()
            err_thread.join()
            status = chan.recv_exit_status()
            _settle(chan)
        finally:
            chan.close()
        if status != 0:
            detail = errbuf.text() or "no message"
            raise ExternalToolError("guest", f"{what} failed (exit {255 if status < 0 else status}): {detail}")
        if failure is not None:
            if isinstance(failure, tarfile.TarError):
                raise IntegrityError(f"{what}: the guest sent an unsafe or broken tar stream: {failure}")
            raise ExternalToolError("guest", f"{what} failed: {failure}")

    # -- sftp detection ---------------------------------------------------------------------

    def sftp(self) -> paramiko.SFTPClient | None:
        """The SFTP client, or None when the server has no SFTP (or the fallback was chosen)."""
        if self.sftp_mode is False:
            return None
        if self._sftp is not None or self._sftp_tried:
            return self._sftp
        self._sftp_tried = True
        chan = None
        try:
            chan = self.transport.open_session(timeout=self.timeout)
            chan.settimeout(self.timeout)
            chan.invoke_subsystem("sftp")
            client = paramiko.SFTPClient(chan)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if chan is not None:
                _settle(chan)
            if self.sftp_mode:
                raise ExternalToolError("sftp", f"{self.where}: the guest offers no SFTP: {exc}") from None
            return None
        self._sftp = client
        return client

    # -- remote file system queries ------------------------------------------------------

    def _remote_stat(self, path: str) -> tuple[str | None, int | None]:
        """('dir' | 'file' | None, permission bits or None) of a remote path (symlinks followed)."""
        sftp = self.sftp()
        if sftp is not None:
            try:
                st = sftp.stat(path)
            except FileNotFoundError:
                return None, None
            except OSError as exc:
                raise ExternalToolError("sftp", f"stat {path}: {exc}") from None
            kind = "dir" if stat.S_ISDIR(st.st_mode or 0) else "file"
            return kind, stat.S_IMODE(st.st_mode or 0)
        q = _rq(path)
        script = (f"if [ -d {q} ]; then printf 'd '; elif [ -e {q} ]; then printf 'f '; else printf 'n '; fi; "
                  f"stat -c %a {q} 2>/dev/null || echo")
        status, out, err = self.output(script)
        words = out.decode("ascii", "replace").split()
        if status != 0 or not words or words[0] not in ("d", "f", "n"):
            raise ExternalToolError("guest", f"cannot inspect {path}: {' '.join(err.decode(errors='replace').split()) or out!r}")
        kind = {"d": "dir", "f": "file", "n": None}[words[0]]
        mode = int(words[1], 8) if len(words) > 1 and words[1].isdigit() else None
        return kind, mode

    # -- put ---------------------------------------------------------------------------------

    def put(self, local: str | Path, remote: str, mode: int | None = None) -> str:
        """Copy a local file or directory (recursively) to the guest; return the remote path written.

        Like ``docker cp``: if `remote` is an existing directory the source goes inside it under its
        own name. Modes are kept (`mode` overrides a file's mode).
        """
        local = Path(local)
        try:
            lst = local.stat()
        except FileNotFoundError:
            raise NotFoundError(f"local path {local} does not exist") from None
        kind, _ = self._remote_stat(remote)
        name = local.resolve().name if local.name in ("", ".", "..") else local.name
        if kind == "dir":
            target = posixpath.join(remote, name)
        elif remote.endswith("/"):
            raise NotFoundError(f"guest directory {remote} does not exist")
        else:
            target = remote
        if stat.S_ISDIR(lst.st_mode):
            tkind, _ = self._remote_stat(target) if target != remote else (kind, None)
            if tkind == "file":
                raise ConflictError(f"cannot copy directory {local} over the guest file {target}")
            self._put_dir(local, target)
        elif stat.S_ISREG(lst.st_mode):
            self._put_file(local, target, stat.S_IMODE(lst.st_mode) if mode is None else mode)
        else:
            raise UsageError(f"{local} is neither a regular file nor a directory")
        return target

    def _put_file(self, local: Path, target: str, mode: int) -> None:
        sftp = self.sftp()
        if sftp is not None:
            try:
                with open(local, "rb") as fh:
                    sftp.putfo(fh, target, file_size=os.fstat(fh.fileno()).st_size)
                sftp.chmod(target, mode)
            except OSError as exc:
                raise ExternalToolError("sftp", f"writing {target}: {exc}") from None
            return

        def feed(chan: paramiko.Channel) -> None:
            with open(local, "rb") as fh:
                while True:
                    data = fh.read(CHUNK)
                    if not data:
                        break
                    chan.sendall(data)

        q = _rq(target)
        self._exec_checked(f"cat > {q} && chmod {mode:04o} {q}", f"writing {target}", feed=feed)

    def _put_dir(self, local: Path, target: str) -> None:
        sftp = self.sftp()
        if sftp is not None:
            self._sftp_put_tree(sftp, local, target)
            return

        def feed(chan: paramiko.Channel) -> None:
            with tarfile.open(fileobj=_ChannelWriter(chan), mode="w|", format=tarfile.GNU_FORMAT) as tf:
                tf.add(str(local), arcname=".", recursive=True, filter=_owner_free)

        q = _rq(target)
        self._exec_checked(f"mkdir -p {q} && tar -x -p -o -f - -C {q}", f"unpacking into {target}", feed=feed)

    def _sftp_put_tree(self, sftp: paramiko.SFTPClient, local: Path, target: str) -> None:
        try:
            dmode = stat.S_IMODE(local.stat().st_mode)
            try:
                sftp.mkdir(target, 0o700)
            except OSError:
                if not stat.S_ISDIR(sftp.stat(target).st_mode or 0):
                    raise
            for entry in sorted(os.scandir(local), key=lambda e: e.name):
                dest = posixpath.join(target, entry.name)
                if entry.is_symlink():
                    try:
                        sftp.remove(dest)
                    except OSError:
                        pass
                    sftp.symlink(os.readlink(entry.path), dest)
                elif entry.is_dir():
                    self._sftp_put_tree(sftp, Path(entry.path), dest)
                elif entry.is_file():
                    with open(entry.path, "rb") as fh:
                        sftp.putfo(fh, dest, file_size=os.fstat(fh.fileno()).st_size)
                    sftp.chmod(dest, stat.S_IMODE(entry.stat().st_mode))
            sftp.chmod(target, dmode)
        except OSError as exc:
            raise ExternalToolError("sftp", f"copying {local} to {target}: {exc}") from None

    # -- get ---------------------------------------------------------------------------------

    def get(self, remote: str, local: str | Path) -> Path:
        """Copy a guest file or directory (recursively) to the host; return the local path written."""
        local = Path(local)
        kind, rmode = self._remote_stat(remote)
        if kind is None:
            raise NotFoundError(f"guest path {remote} does not exist")
        name = posixpath.basename(posixpath.normpath(remote))
        if local.is_dir():
            if name in ("", ".", "..", "/"):
                target = local
            else:
                target = local / _check_name(name, remote)
        elif str(local).endswith("/"):
            raise NotFoundError(f"local directory {local} does not exist")
        else:
            target = local
        if kind == "dir":
            if target.exists() and not target.is_dir():
                raise ConflictError(f"cannot copy guest directory {remote} over the file {target}")
            self._get_dir(remote, target)
        else:
            self._get_file(remote, target, rmode)
        return target

    def _get_file(self, remote: str, target: Path, mode: int | None) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                sftp = self.sftp()
                if sftp is not None:
                    try:
                        sftp.getfo(remote, fh)
                    except OSError as exc:
                        raise ExternalToolError("sftp", f"reading {remote}: {exc}") from None
                else:
                    def consume(chan: paramiko.Channel) -> None:
                        while True:
                            data = chan.recv(CHUNK)
                            if not data:
                                break
                            fh.write(data)
                    self._exec_checked(f"cat < {_rq(remote)}", f"reading {remote}", consume=consume)
            os.chmod(tmp, (mode if mode is not None else 0o644) & 0o777)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def _get_dir(self, remote: str, target: Path) -> None:
        sftp = self.sftp()
        if sftp is not None:
            self._sftp_get_tree(sftp, remote, target)
            return
        target.mkdir(parents=True, exist_ok=True)

        def consume(chan: paramiko.Channel) -> None:
            reader = io.BufferedReader(_ChannelReader(chan), CHUNK)
            with tarfile.open(fileobj=reader, mode="r|") as tf:
                tf.extractall(str(target), filter=_tar_filter)

        self._exec_checked(f"tar -c -f - -C {_rq(remote)} .", f"packing {remote}", consume=consume)

    def _sftp_get_tree(self, sftp: paramiko.SFTPClient, remote: str, target: Path) -> None:
        try:
            st = sftp.stat(remote)
            target.mkdir(exist_ok=True, mode=0o700)
            for attr in sftp.listdir_attr(remote):
                name = _check_name(attr.filename, remote)
                src = posixpath.join(remote, name)
                dest = target / name
                m = attr.st_mode or 0
                if stat.S_ISLNK(m):
                    link = sftp.readlink(src)
                    if dest.is_symlink() or dest.exists():
                        dest.unlink()
                    os.symlink(link, dest)
                elif stat.S_ISDIR(m):
                    if dest.is_symlink():
                        dest.unlink()
                    self._sftp_get_tree(sftp, src, dest)
                elif stat.S_ISREG(m):
                    if dest.is_symlink():
                        dest.unlink()
                    self._get_file(src, dest, stat.S_IMODE(m))
            os.chmod(target, stat.S_IMODE(st.st_mode or 0o755) & 0o777)
        except OSError as exc:
            raise ExternalToolError("sftp", f"copying {remote} to {target}: {exc}") from None

    # -- interactive ----------------------------------------------------------------------

    def interactive(self, command: list[str] | str | None = None, *, stdin_fd: int | None = None,
                    stdout_fd: int | None = None) -> int:
        """An interactive shell (or `command`) for ``vmctl ssh``; returns the exit status.

        With a terminal on stdin: a pty of the terminal's size (kept in step on SIGWINCH) and the
        local terminal in raw mode, restored on return.
        """
        import termios
        import tty

        stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        stdout_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
        is_tty = os.isatty(stdin_fd)
        chan = self._channel()
        old_attrs = None
        old_handler = None

        def size() -> tuple[int, int]:
            for fd in (stdout_fd, stdin_fd):
                try:
                    sz = os.get_terminal_size(fd)
                    if sz.columns and sz.lines:
                        return sz.columns, sz.lines
                except OSError:
                    continue
            return 80, 24

        try:
            if is_tty:
                cols, rows = size()
                chan.get_pty(term=os.environ.get("TERM", "xterm"), width=cols, height=rows)
            chan.set_combine_stderr(True)
            if command is None:
                chan.invoke_shell()
            else:
                chan.exec_command(_command(command))
            if is_tty:
                old_attrs = termios.tcgetattr(stdin_fd)
                tty.setraw(stdin_fd)
                try:
                    old_handler = signal.signal(signal.SIGWINCH, lambda *_: chan.resize_pty(*size()))
                except ValueError:  # not the main thread
                    old_handler = None
            watch = [chan, stdin_fd]
            while True:
                r, _, _ = select.select(watch, [], [], 1.0)
                if chan in r:
                    data = chan.recv(CHUNK)
                    if not data:
                        break
                    view = memoryview(data)
                    while view:
                        n = os.write(stdout_fd, view)
                        view = view[n:]
                if stdin_fd in r:
                    try:
                        data = os.read(stdin_fd, 4096)
                    except OSError as exc:
                        if exc.errno != errno.EIO:
                            raise
                        data = b""
                    if data:
                        chan.sendall(data)
                    else:
                        chan.shutdown_write()
                        watch = [chan]
            status = chan.recv_exit_status()
            _settle(chan)
        finally:
            if old_attrs is not None:
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, old_attrs)
            if old_handler is not None:
                signal.signal(signal.SIGWINCH, old_handler)
            chan.close()
        return 255 if status < 0 else status


def _owner_free(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# ---------------------------------------------------------------------------------------------


def known_hosts_line(host: str, port: int, host_key_line: str) -> str:
    keytype, blob, _ = parse_public_line(host_key_line)
    import base64

    pattern = host if int(port) == 22 else f"[{host}]:{int(port)}"
    return f"{pattern} {keytype} {base64.b64encode(blob).decode('ascii')}"


def ssh_command_line(
    host: str, port: int, user: str, key_path: str | Path, host_key_line: str, *,
    known_hosts: str | Path | None = None, command: list[str] | str | None = None, tty: bool | None = None,
) -> list[str]:
    """An OpenSSH ``ssh`` command line equivalent to `GuestSession` (for users who want real ssh).

    The pinned key is written to `known_hosts` (default: a new private temp file that the caller
    may remove) and ``StrictHostKeyChecking=yes`` makes ssh refuse any other key. No config file,
    agent, other identities or password prompts are used.
    """
    keytype, _, _ = parse_public_line(host_key_line)
    if keytype not in HOST_KEY_ALGORITHMS:
        raise UsageError(f"unsupported SSH host key type {keytype}")
    line = known_hosts_line(host, port, host_key_line) + "\n"
    if known_hosts is None:
        fd, name = tempfile.mkstemp(prefix="vmctl-known_hosts-")
        with os.fdopen(fd, "w") as fh:
            fh.write(line)
        known_hosts = name
    else:
        known_hosts = Path(known_hosts)
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        tmp = known_hosts.with_name(f".{known_hosts.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(line)
        os.replace(tmp, known_hosts)
    argv = [
        "ssh", "-F", "/dev/null", "-p", str(int(port)), "-l", user, "-i", str(key_path),
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ForwardAgent=no",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
        "-o", f"HostKeyAlgorithms={','.join(HOST_KEY_ALGORITHMS[keytype])}",
        "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
        "-o", "PubkeyAuthentication=yes",
    ]
    if tty is True:
        argv.append("-t")
    elif tty is False:
        argv.append("-T")
    argv += ["--", host]
    if command is not None:
        argv.append(_command(command))
    return argv
