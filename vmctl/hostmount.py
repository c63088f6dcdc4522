"""Read-only bind mounts on the host: how a read-only volume is shared by virtio-fs.

libvirt 9.0 refuses ``<readonly/>`` on virtio-fs, and virtiofsd 7.2 has no read-only mode, so
vmctl shares a read-only bind mount of the volume's directory instead (made in the VM's own
directory, where only vmctl looks): the host kernel refuses every write, whatever the guest does.
Only root may mount, and only for a daemon on this host; elsewhere read-only volumes use 9p.

Anything that deletes a VM's directory releases the mounts under it first (`release_under`), so a
removal can never reach into the user's directory (and being read-only, it could not write there).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from vmctl.errors import ExternalToolError

MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_points(mountinfo: str | None = None) -> list[str]:
    """Every mount point of this mount namespace (mountinfo's fifth field, unescaped)."""
    text = MOUNTINFO.read_text() if mountinfo is None else mountinfo
    return [_unescape(line.split()[4]) for line in text.splitlines() if len(line.split()) > 4]


def is_mounted(path: Path) -> bool:
    return os.path.realpath(path) in mount_points()


def can_bind() -> bool:
    """Whether this process may make bind mounts (root; a container without CAP_SYS_ADMIN fails
    at the mount itself, said in one line)."""
    return os.geteuid() == 0


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExternalToolError(f"{' '.join(args[:2])}: {(proc.stderr or proc.stdout).strip()[:300]}")


def bind_read_only(source: Path, target: Path) -> None:
    """Mount `source` read-only at `target` (made if missing); nothing when already mounted. A
    bind whose remount to read-only fails is undone: a writable one is never left."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    if is_mounted(target):
        return
    # not --rbind: mounts below the volume's directory are not part of what it shares
    _run(["mount", "--bind", "--", str(source), str(target)])
    try:
        _run(["mount", "-o", "remount,bind,ro", "--", str(target)])
    except ExternalToolError:
        _run(["umount", "--", str(target)])
        raise


def release_under(directory: Path) -> None:
    """Unmount every mount point inside `directory`, deepest first (before it is deleted)."""
    root = os.path.realpath(directory)
    inside = [p for p in mount_points() if p.startswith(root + os.sep)]
    for point in sorted(inside, key=len, reverse=True):
        _run(["umount", "--", point])
