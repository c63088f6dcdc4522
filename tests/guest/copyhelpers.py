"""Checks shared by the guest-copy tests: snapshots of a directory tree, and "nothing escaped"."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def snapshot(root: Path) -> dict:
    """Everything under `root` (not following links): kind, mode, owner, content hash, link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_nlink,
                            hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def assert_contained(dest: Path) -> None:
    """No link under `dest` resolves outside it; no special file, setuid/setgid or g/o-writable mode."""
    real_dest = os.path.realpath(dest)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                resolved = os.path.realpath(p)
                assert resolved == real_dest or resolved.startswith(real_dest + os.sep), \
                    f"{p} -> {os.readlink(p)} leads outside {dest}"
            else:
                assert stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode), f"{p} is a special file"
                assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), f"{p} has mode {st.st_mode:o}"
                assert not st.st_mode & 0o022, f"{p} is group/world-writable ({st.st_mode:o})"


def leftovers(parent: Path) -> list[str]:
    """Staging directories a copy left behind in `parent`."""
    return [p.name for p in parent.iterdir() if ".vmctl-cp-" in p.name]


def make_box(tmp_path: Path) -> Path:
    """tmp/box/{outside/secret, dest/}: a destination, and what a copy into it must never touch."""
    box = tmp_path / "box"
    (box / "outside").mkdir(parents=True)
    (box / "outside" / "secret").write_text("keep me")
    (box / "dest").mkdir()
    return box
