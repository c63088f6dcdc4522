"""Private files that QEMU can still read.

Disks, seeds and kernels must be readable by their owner and by the user QEMU runs as, nobody else.
libvirt runs QEMU as another user in system mode (Debian: ``libvirt-qemu``; on a root host this also
holds for ``qemu:///session``, which the system daemon serves), so a plain 0700 directory makes QEMU
fail with "Permission denied". Instead of looser modes, vmctl grants that one user access with POSIX
ACLs: search (x) on each directory on the way, read on files QEMU opens read-only. (virt-manager mends
the same problem the same way.) vmctl's secrets (SSH private keys, registry credentials) get no ACL.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from vmctl.errors import ExternalToolError
from vmctl.fsutil import private_dirs

QEMU_CONF = Path("/etc/libvirt/qemu.conf")


@lru_cache(maxsize=None)
def qemu_user(uri: str) -> str | None:
    """Return the user QEMU runs as for `uri` when that differs from the caller, else None.

    A non-root caller's ``qemu:///session`` runs QEMU as the caller (None). The system daemon (and
    root's session, served by it) uses qemu.conf's ``user`` or Debian's default ``libvirt-qemu``.
    """
    if uri.startswith("qemu+unix:///"):
        # The same local daemon reached through an explicit socket ("?socket=..."): QEMU runs as
        # that daemon's user all the same.
        uri = "qemu:///" + uri[len("qemu+unix:///"):]
    if uri.startswith("qemu:///session") and os.geteuid() != 0:
        return None
    if not uri.startswith("qemu://"):
        return None
    user = "libvirt-qemu"
    try:
        for line in QEMU_CONF.read_text().splitlines():
            match = re.match(r'\s*user\s*=\s*"([^"]+)"', line)
            if match:
                user = match.group(1)
    except OSError:
        pass
    if user in ("root", "+0"):
        return None
    try:
        pwd.getpwnam(user.lstrip("+"))
    except KeyError:
        return None
    return user.lstrip("+")


def _setfacl(args: list[str]) -> None:
    tool = shutil.which("setfacl")
    if tool is None:
        raise ExternalToolError("setfacl", "not installed (Debian package 'acl'): cannot share files with QEMU")
    proc = subprocess.run([tool, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExternalToolError("setfacl", proc.stderr.strip() or f"exit {proc.returncode}")


def private_dir(path: Path, user: str | None, *, traverse_only: bool = True) -> Path:
    """Create `path` (and parents) as 0700 and let `user` (QEMU's) search it; return `path`.

    With ``traverse_only`` QEMU may open known names but not list the directory.
    """
    private_dirs(path)
    os.chmod(path, 0o700)
    if user:
        _setfacl(["-m", f"u:{user}:{'x' if traverse_only else 'rx'},m::rwx", str(path)])
    return path


def grant_path_search(path: Path, user: str | None) -> None:
    """Let `user` traverse every existing ancestor of `path` that it cannot already traverse."""
    if not user:
        return
    uid = pwd.getpwnam(user).pw_uid
    for parent in [*reversed(path.parents), path]:
        try:
            st = parent.stat()
        except FileNotFoundError:
            continue
        if st.st_mode & 0o001 or st.st_uid == uid:
            continue
        _setfacl(["-m", f"u:{user}:x", str(parent)])


def qemu_readable(path: Path, user: str | None, *, writable: bool = False) -> None:
    """Make file `path` 0600 and readable (or writable) by QEMU's `user`."""
    os.chmod(path, 0o600)
    if user:
        _setfacl(["-m", f"u:{user}:{'rw' if writable else 'r'},m::rw", str(path)])


def secret_file(path: Path) -> None:
    """Make `path` 0600 with no ACL entries: for keys and credentials."""
    os.chmod(path, 0o600)
    if shutil.which("setfacl"):
        subprocess.run(["setfacl", "-b", str(path)], capture_output=True)
