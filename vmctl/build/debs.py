"""Debian packages for a build: download with ``apt-get download`` into a reusable cache, extract.

Only Debian's own repositories (as configured in apt) are used. A package already in the cache is
reused without touching the network; delete the cache directory to pick up newer versions.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from vmctl.build.tools import require, run
from vmctl.errors import ExternalToolError, UsageError
from vmctl.fsutil import private_dirs

_PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_APT_QUIET = ["-q", "-o", "APT::Sandbox::User=root"]


def _check_name(package: str) -> None:
    if not _PKG_RE.match(package):
        raise UsageError(f"invalid Debian package name {package!r}")


def resolve_kernel_package(meta: str) -> str:
    """Resolve a kernel metapackage (``linux-image-amd64``) to its versioned image package.

    Uses ``apt-cache depends``; a name that already is a versioned image is returned unchanged.
    """
    _check_name(meta)
    if re.match(r"^linux-image-\d", meta):
        return meta
    out = run([require("apt-cache", "apt"), "depends", meta])
    for line in out.splitlines():
        m = re.match(r"^\s*Depends:\s*(linux-image-\d\S*)", line)
        if m:
            return m.group(1)
    raise ExternalToolError("apt-cache", f"{meta} depends on no linux-image-<version> package")


def cached_deb(debs_dir: Path, package: str) -> Path | None:
    """Return the newest cached ``.deb`` of ``package`` in ``debs_dir``, if any."""
    found = [p for p in debs_dir.glob(f"{package}_*.deb") if p.name.split("_", 1)[0] == package]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def download(packages: list[str], debs_dir: Path) -> dict[str, Path]:
    """Return ``{package: .deb path}``, downloading with ``apt-get download`` what is not cached.

    Downloads land in a temporary directory inside ``debs_dir`` and are moved in when complete, so
    an interrupted download never leaves a truncated ``.deb`` in the cache.
    """
    for p in packages:
        _check_name(p)
    private_dirs(debs_dir)
    result = {p: cached_deb(debs_dir, p) for p in packages}
    missing = [p for p, deb in result.items() if deb is None]
    if missing:
        with tempfile.TemporaryDirectory(dir=debs_dir, prefix=".dl-") as tmp:
            run([require("apt-get", "apt"), *_APT_QUIET, "download", *missing], cwd=Path(tmp))
            for deb in Path(tmp).glob("*.deb"):
                os.replace(deb, debs_dir / deb.name)
        for p in missing:
            result[p] = cached_deb(debs_dir, p)
            if result[p] is None:
                raise ExternalToolError("apt-get", f"download of {p} produced no .deb")
    return result  # type: ignore[return-value]


def extract(deb: Path, extract_root: Path) -> Path:
    """Extract ``deb`` with ``dpkg-deb -x`` once into ``extract_root/<deb stem>`` and return it."""
    target = extract_root / deb.name.removesuffix(".deb")
    if target.is_dir():
        return target
    extract_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=extract_root, prefix=".x-"))
    try:
        run([require("dpkg-deb", "dpkg"), "-x", str(deb), str(tmp)])
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent extraction that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
