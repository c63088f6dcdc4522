"""Waiting until a guest is ready: it has an address and its SSH server lets vmctl in.

Ready means, in order (each attempt walks the steps; a failed step restarts from the first):

``address``  the caller's ``address_fn`` returns (host, port): a DHCP lease, the guest agent or the
             forwarded port, by mode -- this room never asks libvirt itself;
``tcp``      the port accepts a TCP connection;
``banner``   an ``SSH-2.0-`` line arrives (QEMU's user-mode hostfwd accepts TCP before the guest
             listens, then closes or stalls, so a TCP connect alone proves nothing);
``hostkey``  the server proves it holds the pinned host key -- a different key raises
             `HostKeyMismatch` at once, it is never retried nor accepted;
``auth``     vmctl's key is accepted and ``true`` runs (cloud-init may install the key after sshd
             starts, so a refusal is retried until the deadline).

Per-attempt timeouts are short and the pause between attempts grows to at most 0.5 s, so readiness
is noticed soon after it happens. With a serial log, the guest's ``vmctl-guest: ready`` line (printed
once sshd listens) cuts short an attempt stalled in ``banner`` or a pause: QEMU's hostfwd holds a
connection made before the guest listened for up to the whole attempt timeout, while a new one gets
through at once. The line only times the attempts; readiness is still proven by SSH alone. On timeout `GuestNotReady` names the last step that failed and
why; its ``details`` attribute holds the tail of the serial log (with what the log says about the
readiness line and host key fingerprints) for the CLI to print below the one-line message.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import paramiko

from vmctl.errors import GuestNotReady
from vmctl.guest import contract
from vmctl.guest.keys import ClientKey, fingerprint
from vmctl.guest.diagnose import console_findings, explain_auth, root_refused
from vmctl.guest.serial import read_serial, serial_tail
from vmctl.guest.handshake import (
    Dial, StepFailed, authenticate, handshake, load_pkey, probe_any_key, tcp_connect, wait_banner,
)

Progress = Callable[[str, str], None]


def serial_fingerprints(text: str) -> list[str]:
    """SHA256 fingerprints the guest printed (cloud-init's block), newest block only."""
    return [entry["fingerprint"] for entry in contract.parse_fingerprints(text)]


class ReadyLineWatch:
    """Notices new ``vmctl-guest: ready`` lines in a serial log, reading only what was appended.

    `new_ready()` is true once for each ready line written since the previous call (the lines
    already in the log when the watch starts do not count); a log that shrank (a new boot with
    ``append='off'``) is read again from its start.
    """

    def __init__(self, serial_log: Path):
        self.path = serial_log
        self.offset = 0
        self.partial = b""
        self.new_ready()  # skip what is already there

    def new_ready(self) -> bool:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                if size < self.offset:
                    self.offset, self.partial = 0, b""
                if size == self.offset:
                    return False
                fh.seek(self.offset)
                data = fh.read(size - self.offset)
        except OSError:
            return False
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()[-4096:]
        return any(line.strip(b"\r ") == contract.READY_LINE.encode() for line in lines)


def _diagnosis(serial_log: Path | None, host_key_line: str) -> str:
    """A short note on what the serial log says (kernel panic, firmware, DHCP, cloud-init, sshd
    trouble; host key fingerprints against the pinned key), and its tail."""
    if serial_log is None:
        return ""
    text = read_serial(serial_log)
    notes = []
    if not text:
        notes.append(f"serial log {serial_log} is empty or unreadable")
    else:
        notes.extend(console_findings(text))
        prints = serial_fingerprints(text)
        if prints:
            pinned = fingerprint(host_key_line)
            notes.append(
                "its host key fingerprints include the pinned key" if pinned in prints
                else f"its host key fingerprints ({', '.join(prints)}) do not include the pinned key {pinned}"
            )
    tail = serial_tail(serial_log)
    out = "; ".join(notes)
    if tail:
        out += f"\n--- last lines of {serial_log} ---\n{tail}"
    return out


def _not_ready(step: str, reason: str, timeout: float, serial_log: Path | None, host_key_line: str) -> GuestNotReady:
    findings = console_findings(read_serial(serial_log)) if serial_log is not None else []
    said = f" (the console shows {findings[0]})" if findings else ""
    err = GuestNotReady(f"guest not ready after {timeout:g} s: step '{step}' failed: {reason}{said}")
    err.step = step
    err.reason = reason
    err.details = _diagnosis(serial_log, host_key_line)
    return err


def try_once(
    address: tuple[str, int], *, user: str, pkey: paramiko.PKey, host_key_line: str, timeout: float,
    progress: Progress | None = None, interrupt: Callable[[], bool] | None = None, dial: Dial | None = None,
) -> paramiko.Transport:
    """One attempt at steps tcp → banner → hostkey → auth; returns the authenticated transport.

    Raises `StepFailed` (retryable) or `HostKeyMismatch` (final).
    """
    host, port = address
    where = f"{user}@{host}:{port}"

    def note(step: str) -> None:
        if progress is not None:
            progress(step, where)

    note("tcp")
    sock = (dial or tcp_connect)(host, port, timeout)
    t = None
    try:
        note("banner")
        wait_banner(sock, timeout, interrupt)
        note("hostkey")
        t = handshake(sock, host_key_line, timeout, where=where,
                      probe=lambda: probe_any_key(host, port, timeout, dial))
        note("auth")
        authenticate(t, user, pkey, timeout)
        chan = t.open_session(timeout=timeout)
        answer = b""
        try:
            chan.settimeout(timeout)
            chan.exec_command("true")
            chan.shutdown_write()
            try:
                while True:  # what an image prints instead of running it (kept up to 4 KiB)
                    data = chan.recv(4096)
                    if not data:
                        break
                    answer = (answer + data)[:4096]
            except OSError:
                # cloud-init's disable_root entry prints its plea, then sleeps 10 s: the plea is
                # the answer; anything else that stalls is a failed attempt
                if root_refused(answer.decode("utf-8", "replace")) is None:
                    raise
                raise StepFailed("auth", explain_auth(user, answer.decode("utf-8", "replace"), 142)) from None
            status = chan.recv_exit_status()
        finally:
            chan.close()
        if status != 0:
            raise StepFailed("auth", explain_auth(user, answer.decode("utf-8", "replace"), status))
        return t
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if t is not None:
            t.close()
        raise StepFailed("auth", f"logged in, but running a command failed: {exc or type(exc).__name__}") from None
    except BaseException:
        if t is not None:
            t.close()
        sock.close()
        raise


def wait_ready(
    address_fn: Callable[[], tuple[str, int] | None], *, user: str,
    client_key: ClientKey | paramiko.PKey | Path, host_key_line: str, timeout: float,
    serial_log: Path | None = None, progress: Progress | None = None,
    attempt_timeout: float = 3.0, max_pause: float = 0.5, dial: Dial | None = None,
) -> tuple[str, int]:
    """Wait until the guest is ready (see module doc); return its (host, port).

    `progress(step, detail)` is called when a step starts (and with ``"ready"`` at the end).
    Raises `GuestNotReady` (``.step``, ``.reason``, ``.details``) or `HostKeyMismatch`; an
    exception from `address_fn` (say, the VM stopped) propagates at once.
    """
    pkey = load_pkey(client_key)
    deadline = time.monotonic() + timeout
    watch = ReadyLineWatch(serial_log) if serial_log is not None else None
    interrupt = watch.new_ready if watch is not None else None
    pause = 0.05
    last = ("address", "no attempt was made")
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _not_ready(*last, timeout, serial_log, host_key_line)
        if progress is not None:
            progress("address", "")
        address = address_fn()
        if address is None:
            last = ("address", "the guest has no address yet")
        else:
            budget = max(0.05, min(attempt_timeout, deadline - time.monotonic()))
            try:
                t = try_once(address, user=user, pkey=pkey, host_key_line=host_key_line,
                             timeout=budget, progress=progress, interrupt=interrupt, dial=dial)
            except StepFailed as exc:
                last = (exc.step, exc.reason)
                if exc.interrupted:
                    pause = 0.05
                    continue
            else:
                t.close()
                if progress is not None:
                    progress("ready", f"{address[0]}:{address[1]}")
                return address[0], int(address[1])
        _pause(min(pause, deadline - time.monotonic()), interrupt)
        pause = min(pause * 2, max_pause)


def _pause(seconds: float, interrupt: Callable[[], bool] | None) -> None:
    """Sleep `seconds`, or less if `interrupt` turns true (polled every 0.05 s)."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(left if interrupt is None else min(left, 0.05))
        if interrupt is not None and interrupt():
            return
