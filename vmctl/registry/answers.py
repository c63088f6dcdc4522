"""Checking the shape of what a registry answered before anything uses it.

A registry may answer any JSON at all. Every value vmctl reads from a manifest, an index or a
config passes through one of these checks first, so a wrong type is one RegistryError line
(``... : "manifests" is not a list``) instead of an AttributeError deep inside a pull.
"""

from __future__ import annotations

import re

from vmctl.errors import RegistryError

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_ENTRIES = 10_000


def as_dict(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return value


def as_list(value, what: str, *, limit: int = MAX_ENTRIES) -> list:
    if not isinstance(value, list):
        raise RegistryError(f"{what} is not a list")
    if len(value) > limit:
        raise RegistryError(f"{what} has more than {limit} entries")
    return value


def opt_str(doc: dict, key: str, what: str, *, limit: int = 4096) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise RegistryError(f"{what}: {key!r} is not a string")
    return value


def digest(value, what: str) -> str:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise RegistryError(f"{what}: {str(value)[:80]!r} is not a sha256 digest")
    return value


def size(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RegistryError(f"{what}: the size {str(value)[:40]!r} is not a non-negative integer")
    return value


def descriptor(value, what: str) -> dict:
    """A content descriptor: mediaType (a string), a real digest and a size."""
    d = as_dict(value, what)
    media = opt_str(d, "mediaType", what, limit=256)
    return {**d, "mediaType": media, "digest": digest(d.get("digest"), what), "size": size(d.get("size"), what)}


def index_entries(doc: dict, what: str) -> list[dict]:
    """The checked entries of an image index (each a descriptor; platform a dict if present)."""
    out = []
    for i, entry in enumerate(as_list(doc.get("manifests"), f"{what}: \"manifests\"")):
        where = f"{what}: manifests[{i}]"
        desc = descriptor(entry, where)
        platform = entry.get("platform")
        if platform is not None:
            platform = as_dict(platform, f"{where}.platform")
            for key in ("os", "architecture"):
                opt_str(platform, key, f"{where}.platform", limit=64)
        desc["platform"] = platform or {}
        desc["artifactType"] = opt_str(entry, "artifactType", where, limit=256)
        out.append(desc)
    return out
