"""Image references as users type them.

- ``NAME[:TAG]`` (tag defaults to ``latest``); NAME may have ``/``-separated components;
- ``NAME@sha256:<64 hex>``: by digest (the name is checked for validity but the digest decides);
- ``sha256:<hex>`` or a bare hex prefix (at least 4 digits) of an image id.

A new name (a target of import, tag, commit, pull, load) may not be a bare hex string of 4 or
more digits: it would shadow the ID prefix it spells.

A bare word that is both a valid name and a hex string (``beef``) is looked up as a name first, then
as an id prefix, as Docker does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from vmctl.errors import UsageError
from vmctl.names import check_repository, check_tag

DEFAULT_TAG = "latest"
MIN_PREFIX = 4
_HEX = re.compile(r"[0-9a-f]+")
_PATH_SUFFIXES = (".qcow2", ".qcow", ".img", ".raw", ".iso", ".vmdk", ".vdi", ".vhd", ".vhdx")


@dataclass(frozen=True)
class Reference:
    """A parsed reference: exactly one of (repo and tag), (repo and digest), or id_prefix is set."""

    repo: str | None = None
    tag: str | None = None
    digest: str | None = None
    id_prefix: str | None = None  # hex digits, without "sha256:"
    text: str = ""

    @property
    def is_named(self) -> bool:
        return self.repo is not None and self.tag is not None

    def __str__(self) -> str:
        if self.repo and self.digest:
            return f"{self.repo}@{self.digest}"
        if self.repo:
            return f"{self.repo}:{self.tag}"
        return f"sha256:{self.id_prefix}" if self.id_prefix else self.text


def looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~"))
        or text.lower().endswith(_PATH_SUFFIXES)
        or (os.sep in text and os.path.isfile(text))
    )


def _not_a_path(text: str) -> None:
    if looks_like_path(text):
        raise UsageError(
            f"{text!r} looks like a file, not an image reference; "
            f"use 'vmctl image import {text} NAME:TAG' to add it to the store"
        )


def split_name_tag(text: str) -> tuple[str, str]:
    """``NAME[:TAG]`` -> (repo, tag), validated; the tag is after the last ':' following the last '/'."""
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        repo, tag = text[:colon], text[colon + 1:]
    else:
        repo, tag = text, DEFAULT_TAG
    return check_repository(repo), check_tag(tag)


def parse_name(text: str) -> tuple[str, str]:
    """A reference that must name a tag (the target of import / tag / build)."""
    if not isinstance(text, str) or not text:
        raise UsageError("an image name is required (NAME[:TAG])")
    _not_a_path(text)
    if "@" in text:
        raise UsageError(f"{text!r}: a digest cannot be a target; give NAME[:TAG]")
    repo, tag = split_name_tag(text)
    if "/" not in repo and id_prefix_candidate(repo):
        # `vmctl run --image beef` would then mean this name, not the image whose ID starts with
        # beef: a name must never shadow an ID (Docker refuses 64-hex names for the same reason)
        raise UsageError(f"invalid image name {repo!r}: it could be read as an image ID; "
                         "use a name with a letter beyond a-f, or a '/'")
    return repo, tag


def parse_reference(text: str) -> Reference:
    if not isinstance(text, str) or not text:
        raise UsageError("an image reference is required")
    _not_a_path(text)
    if "@" in text:
        name, _, digest = text.partition("@")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise UsageError(f"invalid reference {text!r}: expected NAME@sha256:<64 hex digits>")
        return Reference(repo=check_repository(name), digest=digest, text=text)
    if text.startswith("sha256:"):
        hexpart = text[len("sha256:"):]
        if not _HEX.fullmatch(hexpart) or len(hexpart) > 64:
            raise UsageError(f"invalid image id {text!r}")
        if len(hexpart) < MIN_PREFIX:
            raise UsageError(f"image id prefix {text!r} is too short (at least {MIN_PREFIX} digits)")
        return Reference(id_prefix=hexpart, text=text)
    repo, tag = split_name_tag(text)
    return Reference(repo=repo, tag=tag, text=text)


def id_prefix_candidate(text: str) -> str | None:
    """If a bare reference could also be an id prefix, return the hex digits."""
    if MIN_PREFIX <= len(text) <= 64 and _HEX.fullmatch(text):
        return text
    return None
