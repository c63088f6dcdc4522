"""Writing a small ISO9660 volume with pycdlib (Joliet + Rock Ridge keep the real file names)."""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path

import pycdlib


def _iso_name(name: str, used: set[str]) -> str:
    """An ISO9660 level-1-safe 8.3 name for ``name`` (Joliet/Rock Ridge carry the real one)."""
    base = re.sub(r"[^A-Z0-9_]", "_", name.upper().replace(".", "_"))[:8] or "FILE"
    candidate, n = base, 0
    while candidate in used:
        n += 1
        candidate = f"{base[:8 - len(str(n))]}{n}"
    used.add(candidate)
    return f"/{candidate}.;1"


def write_iso(path: Path, files: dict[str, bytes], label: str, *, mode: int = 0o600) -> None:
    """Write ``files`` (flat names → contents) as an ISO labelled ``label`` to ``path`` atomically.

    The volume is built in a temporary file in the same directory, fsynced, given ``mode`` and then
    renamed over ``path``, so readers see either the old file or the complete new one.
    """
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label, sys_ident="LINUX")
    used: set[str] = set()
    try:
        for name, data in files.items():
            if "/" in name or not name:
                raise ValueError(f"seed file names must be flat, got {name!r}")
            iso.add_fp(io.BytesIO(data), len(data), _iso_name(name, used), rr_name=name,
                       joliet_path=f"/{name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as out:
                iso.write_fp(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        iso.close()


def read_iso(path: Path) -> tuple[str, dict[str, bytes]]:
    """Return ``(volume label, {rock ridge name: contents})`` of an ISO's root directory."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().rstrip()
        files = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot() or child.is_dir():
                continue
            name = child.rock_ridge.name().decode()
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            files[name] = buf.getvalue()
        return label, files
    finally:
        iso.close()
