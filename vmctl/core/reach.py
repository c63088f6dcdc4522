"""Reaching a running guest: its address, waiting for it, exec, interactive ssh and copies.

Every verb passes the state machine (the VM must be running; no lock is taken, so several execs
and copies run side by side). Every connection pins the host key vmctl generated for the guest
at create time. Streams are the caller's: core writes to what it is given, never to the
process's own stdout.
"""

from __future__ import annotations

import shlex
from typing import BinaryIO

from vmctl.core.instance import Instance
from vmctl.core.session import Session
from vmctl.core.states import guard
from vmctl.guest.cp import parse_cp_args
from vmctl.guest.keys import ensure_client_key
from vmctl.guest.openssh import ssh_command_line
from vmctl.guest.ssh import GuestSession


def address(session: Session, name: str) -> tuple[str, int]:
    """Where the running VM's SSH server is reached; GuestNotReady when it has no address yet."""
    with guard(session, name, "address") as g:
        return g.instance.address()


def wait(session: Session, name: str, timeout: float, until: str = "ssh") -> tuple[str, int]:
    """Block until SSH answers with the pinned key and accepts vmctl's key (with `until`
    ``cloud-init``: and cloud-init has finished), or raise, naming the step and what the guest said."""
    with guard(session, name, "wait") as g:
        return g.instance.wait_for_ssh(timeout, until)


def _guest(inst: Instance):
    """An unopened `GuestSession` to the VM (use it as a context manager)."""
    host, port = inst.address()
    return GuestSession(host, port, user=inst.record.ssh_user,
                        client_key=ensure_client_key(inst.session.paths.keys), host_key_line=inst.record.host_key,
                        dial=inst.session.dial)


def as_root(argv: list[str], login: str) -> list[str] | str:
    """`argv` to run as root for login user `login`: itself for root, else through ``sudo -n``
    (never prompting), with one clear line when the image has no sudo."""
    if login == "root":
        return argv
    return ("if command -v sudo >/dev/null 2>&1; then exec sudo -n -- " + shlex.join(argv) + "; fi; "
            "echo 'vmctl: this image has no sudo: log in as root (--user root) to run commands as root' >&2; "
            "exit 127")


def exec_(session: Session, name: str, argv: list[str], *, stdout: BinaryIO, stderr: BinaryIO,
          root: bool = False) -> int:
    """Run `argv` in the guest as its login user (as root with `root`), streaming its output to
    `stdout`/`stderr`; return its exit status."""
    with guard(session, name, "exec") as g, _guest(g.instance) as guest:
        command = as_root(argv, g.instance.record.ssh_user) if root else argv
        return guest.run(command, stdin=None, stdout=stdout, stderr=stderr)


def ssh(session: Session, name: str, argv: list[str], *, stdin: BinaryIO, stdout: BinaryIO,
        stderr: BinaryIO, terminal: bool) -> int:
    """An interactive shell on `stdin`/`stdout` (no `argv`; a pty when `terminal`), or `argv`
    with its output streamed (and `stdin` fed to it unless it is a terminal); the exit status."""
    with guard(session, name, "ssh") as g, _guest(g.instance) as guest:
        if argv:
            return guest.run(argv, stdin=None if terminal else stdin, stdout=stdout, stderr=stderr)
        return guest.interactive(None, stdin_fd=stdin.fileno(), stdout_fd=stdout.fileno())


def ssh_command(session: Session, name: str) -> list[str]:
    """An OpenSSH command line that reaches the running VM with the same pinned key and identity."""
    with guard(session, name, "address") as g:
        inst = g.instance
        host, port = inst.address()
    # a VM on a host has no directory here: its pinned key goes to a private temp file
    return ssh_command_line(host, port, inst.record.ssh_user, ensure_client_key(session.paths.keys).path,
                            inst.record.host_key, known_hosts=None if inst.on_host else inst.known_hosts,
                            jump=session.host.jump if session.host is not None else None)


def copy(session: Session, src: str, dst: str):
    """``vmctl cp``: exactly one of `src`/`dst` is ``NAME:PATH``. A download returns its
    `CopyReport` (what the guest sent that was not written, and why); an upload returns None."""

    plan = parse_cp_args(src, dst)
    with guard(session, plan.name, "cp") as g, _guest(g.instance) as guest:
        if plan.upload:
            guest.put(plan.local, plan.remote)
            return None
        guest.get(plan.remote, plan.local)
        return guest.last_report
