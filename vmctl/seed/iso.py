"""Writing a small ISO9660 volume with pycdlib (Joliet + Rock Ridge keep the real file names)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pycdlib

from vmctl.fsutil import atomic_write


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

    A seed is a few KiB: the volume is built in memory, then written through a temporary file
    that has ``mode`` from the start and is renamed over ``path`` (`vmctl.fsutil.atomic_write`).
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
        image = io.BytesIO()
        iso.write_fp(image)
        atomic_write(path, image.getvalue(), mode=mode)
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
