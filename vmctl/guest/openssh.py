"""The equivalent OpenSSH command line, for users who want the real ``ssh`` with the same pinning."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from vmctl.errors import UsageError
from vmctl.fsutil import atomic_write, private_dirs
from vmctl.guest.channels import command_text
from vmctl.guest.keys import HOST_KEY_ALGORITHMS, parse_public_line


def known_hosts_line(host: str, port: int, host_key_line: str) -> str:
    keytype, blob, _ = parse_public_line(host_key_line)

    pattern = host if int(port) == 22 else f"[{host}]:{int(port)}"
    return f"{pattern} {keytype} {base64.b64encode(blob).decode('ascii')}"


def ssh_command_line(
    host: str, port: int, user: str, key_path: str | Path, host_key_line: str, *,
    known_hosts: str | Path | None = None, command: list[str] | str | None = None, tty: bool | None = None,
    jump: str | None = None,
) -> list[str]:
    """An OpenSSH ``ssh`` command line equivalent to `GuestSession` (for users who want real ssh).

    The pinned key is written to `known_hosts` (default: a new private temp file that the caller
    may remove) and ``StrictHostKeyChecking=yes`` makes ssh refuse any other key. No config file,
    agent, other identities or password prompts are used for the guest; `jump` (``[USER@]HOST[:PORT]``)
    goes through a vmctl host's SSH server first.
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
        private_dirs(known_hosts.parent)
        atomic_write(known_hosts, line.encode(), mode=0o600)
    argv = [
        "ssh", "-F", "/dev/null", "-p", str(int(port)), "-l", user, "-i", str(key_path),
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ForwardAgent=no",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
        "-o", f"HostKeyAlgorithms={','.join(HOST_KEY_ALGORITHMS[keytype])}",
        "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
        "-o", "PubkeyAuthentication=yes",
    ]
    if jump is not None:
        # through the host's SSH server (checked [USER@]HOST[:PORT], vmctl.hosts.check_jump): that
        # hop is plain ssh with the user's own keys and known_hosts, as `ssh -J` always is
        argv += ["-J", jump]
    if tty is True:
        argv.append("-t")
    elif tty is False:
        argv.append("-T")
    argv += ["--", host]
    if command is not None:
        argv.append(command_text(command))
    return argv
