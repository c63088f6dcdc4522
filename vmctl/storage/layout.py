"""Where the image store keeps things under ``<root>/images`` (see FORMAT.md), and their modes.

Directories are 0700. When QEMU runs as another user (``qemu_user``), that user gets a search-only
ACL (``x``) on the directories it must traverse to open a layer, kernel or initrd by name, and read
ACLs on those files; it can list nothing and write nothing. Index, holds, lock and temporary files get
no ACL at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vmctl import perms
from vmctl.storage.digest import hex_of


@dataclass(frozen=True)
class Layout:
    root: Path  # <data root>/images

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def index(self) -> Path:
        return self.root / "index.json"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    @property
    def holds(self) -> Path:
        return self.root / "holds"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def blob(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    def layer(self, digest: str) -> Path:
        return self.layers / layer_name(digest)

    def ensure(self, qemu_user: str | None) -> None:
        """Create the layout (idempotent), with QEMU's search ACLs where it needs them. The data
        root itself is vmctl's too: 0700 (0710 with QEMU's ACL), never world-readable."""
        perms.private_dir(self.root.parent, qemu_user)
        perms.private_dir(self.root, qemu_user)
        perms.private_dir(self.root / "blobs", qemu_user)
        perms.private_dir(self.blobs, qemu_user)
        perms.private_dir(self.layers, qemu_user)
        for private in (self.holds, self.tmp):
            private.mkdir(mode=0o700, exist_ok=True)


def layer_name(digest: str) -> str:
    """The file name of a layer: ``<hex>.qcow2``; also the relative backing name children use."""
    return f"{hex_of(digest)}.qcow2"


def publish_mode(path: Path, qemu_user: str | None) -> None:
    """Make a published file read-only: 0400 for the owner, plus a read ACL for QEMU's user.

    With an ACL the group bits are the ACL mask, so the mode shows 0440 while the owning group
    itself gets nothing.
    """
    if qemu_user:
        perms.qemu_readable(path, qemu_user)
        os.chmod(path, 0o440)  # mask r--: the ACL entry grants read, nothing grants write
    else:
        os.chmod(path, 0o400)
