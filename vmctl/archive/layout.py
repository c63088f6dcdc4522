"""The OCI image layout inside an archive: which members may exist, and what their names mean.

An archive comes from outside (SECURITY.md): a member whose name is not exactly one of the
layout's (``oci-layout``, ``index.json``, ``blobs/sha256/<64 hex>`` and the directories leading
there), that is absolute, climbs with ``..``, is a link or a device, or appears twice, makes
`load` refuse the whole archive.
"""

from __future__ import annotations

import re

from vmctl.errors import IntegrityError

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT = {"imageLayoutVersion": "1.0.0"}
LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
DIRECTORIES = frozenset({"", "blobs", "blobs/sha256"})
_BLOB = re.compile(r"blobs/sha256/([0-9a-f]{64})")
MAX_MEMBERS = 100_000
MAX_METADATA = 4 << 20       # oci-layout, index.json, a manifest or a config held in memory


def member_path(name: str, what: str) -> str:
    """The normalised path of a member (``./a//b`` -> ``a/b``); absolute or ``..`` names refuse."""
    if name.startswith("/"):
        raise IntegrityError(f"{what}: member {name[:80]!r} has an absolute name; refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts or "\0" in name:
        raise IntegrityError(f"{what}: member {name[:80]!r} climbs out of the layout; refused")
    return "/".join(parts)


def blob_digest(path: str) -> str | None:
    """``blobs/sha256/<hex>`` -> ``sha256:<hex>``; None for any other path."""
    m = _BLOB.fullmatch(path)
    return f"sha256:{m.group(1)}" if m else None


def blob_name(digest: str) -> str:
    algo, hexd = digest.split(":", 1)
    return f"blobs/{algo}/{hexd}"


def check_member(path: str, kind: str, what: str) -> str:
    """"layout" | "index" | "blob" | "dir" for an allowed member; IntegrityError for anything else."""
    if kind == "dir":
        if path in DIRECTORIES:
            return "dir"
        raise IntegrityError(f"{what}: directory {path[:80]!r} is not part of an OCI image layout; refused")
    if kind != "file":
        raise IntegrityError(f"{what}: member {path[:80]!r} is a {kind}, not a file; refused")
    if path == LAYOUT_FILE:
        return "layout"
    if path == INDEX_FILE:
        return "index"
    if blob_digest(path):
        return "blob"
    raise IntegrityError(f"{what}: member {path[:80]!r} is not part of an OCI image layout; refused")
