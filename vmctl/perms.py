"""Private files that QEMU can still read.

Disks, seeds and kernels must be readable by their owner and by the user QEMU runs as, nobody else.
libvirt runs QEMU as another user in system mode (Debian: ``libvirt-qemu``; on a root host this also
holds for ``qemu:///session``, which the system daemon serves), so a plain 0700 directory makes QEMU
fail with "Permission denied". Instead of looser modes, vmctl grants that one user access with POSIX
ACLs: search (x) on vmctl's own directories, read on files QEMU opens read-only. Directories above the
data root are not vmctl's: if QEMU cannot pass one, vmctl says so and names the fix instead of
changing it (root's default data root is /var/lib/vmctl, so no ACL ever lands on /root). vmctl's
secrets (SSH private keys, registry credentials) get no ACL.
"""

from __future__ import annotations

import os
import grp
import pwd
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from vmctl.errors import ExternalToolError, UsageError
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
    """Create `path` (and missing parents) 0700 and let `user` (QEMU's) search them; return `path`.

    Every directory made here is vmctl's own, so each gets the ACL; the mask is exactly what the
    entry grants, so the mode reads 0710 (0750 with ``traverse_only=False``, where QEMU may also
    list the directory) and the owning group gets nothing.
    """
    made = []
    p = Path(path)
    while not p.exists():
        made.append(p)
        p = p.parent
    private_dirs(path)
    grant = "x" if traverse_only else "rx"
    # A chmod of a directory with an ACL sets its mask: chmod 0700 would take QEMU's search right
    # away until setfacl gives it back, and every vmctl process opens the store -- a VM starting
    # meanwhile was refused its image ("Cannot access backing file ... Permission denied", seen
    # with two `vmctl run`s at once). A directory already as this leaves it is not chmod'ed: the
    # setfacl below rewrites its ACL in one xattr write, which never drops the entry.
    if not (user and _already_private(Path(path), grant)):
        os.chmod(path, 0o700)
    if user:
        for d in [path, *made[1:]]:
            bits = grant if d == path else "x"
            _setfacl(["-m", f"u:{user}:{bits},m::{bits}", str(d)])
    return path


def _already_private(d: Path, grant: str) -> bool:
    """`d` has an access ACL, nothing for others, and a mask (the group bits) of exactly `grant`:
    the state `private_dir` leaves it in."""
    try:
        if "system.posix_acl_access" not in os.listxattr(d):
            return False
        mode = d.stat().st_mode & 0o777
    except OSError:
        return False
    return mode & 0o707 == 0o700 and (mode >> 3) & 7 == sum(_BITS[b] for b in grant)


def volume_dir(path: Path, user: str | None) -> Path:
    """Create a stack's named volume directory (vmctl's own, under the stack's ``.vmctl/``): 0700,
    with read, write and search for QEMU's `user` (virtio-9p runs as that user) and search on the
    ``.vmctl`` directories above it that vmctl made; an existing one is left as it is."""
    if Path(path).is_dir():
        return path
    private_dir(path, user)
    if user:
        _setfacl(["-m", f"u:{user}:rwx,m::rwx", "-d", "-m", f"u:{user}:rwx,m::rwx", str(path)])
    return path


def _acl_allows(d: Path, user: str, bits: str) -> bool | None:
    """What `d`'s POSIX ACL says about `user` having every permission in `bits` ("rwx" letters;
    None: no entry for that user)."""
    try:
        if "system.posix_acl_access" not in os.listxattr(d):
            return None
    except OSError:
        return None
    tool = shutil.which("getfacl")
    if tool is None:
        return None
    out = subprocess.run([tool, "--absolute-names", "-p", "-n", str(d)], capture_output=True, text=True).stdout
    uid = str(pwd.getpwnam(user).pw_uid)
    entry = mask = None
    for line in out.splitlines():
        parts = line.split("#", 1)[0].strip().split(":")
        if len(parts) == 3 and parts[0] == "user" and parts[1] == uid:
            entry = parts[2]
        elif len(parts) == 3 and parts[0] == "mask":
            mask = parts[2]
    if entry is None:
        return None
    return all(b in entry and (mask is None or b in mask) for b in bits)


_BITS = {"r": 4, "w": 2, "x": 1}


def can_access(d: Path, user: str, bits: str) -> bool:
    """Whether `user` has every permission in `bits` ("rwx" letters) on `d` (mode bits, groups
    and POSIX ACLs)."""
    pw = pwd.getpwnam(user)
    st = d.stat()
    want = sum(_BITS[b] for b in bits)
    if pw.pw_uid == 0:
        return True
    if st.st_uid == pw.pw_uid:
        return (st.st_mode >> 6) & want == want
    by_acl = _acl_allows(d, user, bits)
    if by_acl is not None:
        return by_acl
    groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    if st.st_gid in groups:
        return (st.st_mode >> 3) & want == want
    return st.st_mode & want == want


def can_search(d: Path, user: str) -> bool:
    """Whether `user` may traverse directory `d` (mode bits, groups and POSIX ACLs)."""
    return can_access(d, user, "x")


def require_path_search(path: Path, user: str | None) -> None:
    """Refuse, naming the directory and the fix, when QEMU's `user` cannot reach `path`.

    vmctl puts ACLs only on its own directories (the data root and below); a parent it does not
    own (a home directory, a 0700 temp dir) is the user's to open, or the data root's to move.
    """
    if not user:
        return
    for parent in reversed(Path(path).parents):
        if parent.exists() and not can_search(parent, user):
            raise UsageError(
                f"QEMU runs as {user} and cannot reach {path} through {parent}; use a data root it "
                f"can reach (--root, VMCTL_ROOT; /var/lib/vmctl is root's default) or let it pass: "
                f"setfacl -m u:{user}:x {parent}")


def require_shared_dir(path: Path, user: str | None, *, writable: bool) -> None:
    """Refuse, naming the fix, a directory QEMU's `user` could not serve to the guest (virtio-9p
    runs inside QEMU, as that user): it must reach it, list and read it (and write, unless
    read-only). vmctl never changes the permissions of a user's own directory."""
    if not user:
        return
    require_path_search(path, user)
    bits = "rwx" if writable else "rx"
    if not can_access(Path(path), user, bits):
        raise UsageError(
            f"QEMU runs as {user} and cannot {'read and write' if writable else 'read'} {path} "
            f"(9p is served by QEMU itself); let it: setfacl -m u:{user}:{bits} {path}")


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
