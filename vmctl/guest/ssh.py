"""One SSH session to a running guest, with paramiko: exec, copy, interactive shell.

The connection is built by hand from a socket and a ``paramiko.Transport`` rather than through
``SSHClient``, so nothing implicit happens (see `vmctl.guest.handshake` for the steps and the host
key pinning). Copies live in `vmctl.guest.files` (mixed into `GuestSession`), channel plumbing in
`vmctl.guest.channels`, the OpenSSH equivalent command line in `vmctl.guest.openssh`.
"""

from __future__ import annotations

import errno
import io
import os
import select
import signal
import sys
import tarfile
import termios
import threading
import tty
from pathlib import Path
from typing import BinaryIO, Callable

import paramiko

from vmctl.errors import ExternalToolError, GuestNotReady, IntegrityError
from vmctl.guest.channels import CHUNK, CappedBuffer, command_text, drain, settle
from vmctl.guest.files import FileCopy
from vmctl.guest.handshake import (
    Dial,
    StepFailed,
    authenticate,
    handshake,
    load_pkey,
    probe_any_key,
    tcp_connect,
    wait_banner,
)
from vmctl.guest.keys import ClientKey

# ---------------------------------------------------------------------------------------------


class GuestSession(FileCopy):
    """An authenticated SSH connection to one guest; use as a context manager.

    ``sftp``: None = use SFTP when the server offers it; False = always the exec fallback;
    True = require SFTP.
    """

    def __init__(
        self, host: str, port: int = 22, *, user: str, client_key: ClientKey | paramiko.PKey | Path | str,
        host_key_line: str, connect_timeout: float = 10.0, timeout: float = 30.0,
        sftp: bool | None = None, dial: Dial | None = None,
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
        self.dial = dial or tcp_connect   # through a host's SSH server for a guest behind it (guest.jump)

    # -- lifetime --------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def open(self) -> "GuestSession":
        """Connect, verify the pinned host key and authenticate (raises GuestNotReady/HostKeyMismatch)."""
        if self._transport is not None:
            return self
        pkey = load_pkey(self.client_key)
        try:
            sock = self.dial(self.host, self.port, self.connect_timeout)
            try:
                wait_banner(sock, self.connect_timeout)
                t = handshake(sock, self.host_key_line, self.connect_timeout, where=self.where,
                              probe=lambda: probe_any_key(self.host, self.port, self.connect_timeout, self.dial))
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
        command = command_text(argv)
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
            err_thread = drain(chan.recv_stderr, sink(err))
            while True:
                data = chan.recv(CHUNK)
                if not data:
                    break
                sink(out)(data)
            err_thread.join()
            status = chan.recv_exit_status()
            if feeder is not None:
                feeder.join(timeout=0.2)
            settle(chan)
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
        errbuf = CappedBuffer()
        failure: BaseException | None = None
        try:
            chan.exec_command(command)
            err_thread = drain(chan.recv_stderr, errbuf)
            out_thread = None
            if consume is None:
                out_thread = drain(chan.recv, None)
            try:
                if feed is not None:
                    feed(chan)
                chan.shutdown_write()
                if consume is not None:
                    consume(chan)
            except (OSError, EOFError, paramiko.SSHException, tarfile.TarError) as exc:
                failure = exc  # the remote side probably stopped: report its status first
                if consume is not None:
                    out_thread = drain(chan.recv, None)  # let the remote side finish writing
            if out_thread is not None:
                out_thread.join()
            err_thread.join()
            status = chan.recv_exit_status()
            settle(chan)
        finally:
            chan.close()
        if status != 0:
            detail = errbuf.text() or "no message"
            raise ExternalToolError("guest", f"{what} failed (exit {255 if status < 0 else status}): {detail}")
        if failure is not None:
            if isinstance(failure, tarfile.TarError):
                raise IntegrityError(f"{what}: the guest sent an unsafe or broken tar stream: {failure}")
            raise ExternalToolError("guest", f"{what} failed: {failure}")

    # -- interactive ----------------------------------------------------------------------

    def interactive(self, command: list[str] | str | None = None, *, stdin_fd: int | None = None,
                    stdout_fd: int | None = None) -> int:
        """An interactive shell (or `command`) for ``vmctl ssh``; returns the exit status.

        With a terminal on stdin: a pty of the terminal's size (kept in step on SIGWINCH) and the
        local terminal in raw mode, restored on return.
        """
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
                chan.exec_command(command_text(command))
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
            settle(chan)
        finally:
            if old_attrs is not None:
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, old_attrs)
            if old_handler is not None:
                signal.signal(signal.SIGWINCH, old_handler)
            chan.close()
        return 255 if status < 0 else status
