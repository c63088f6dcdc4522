"""What the image store hands out: immutable records, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SHORT = 12


def short_id(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:SHORT]


@dataclass(frozen=True)
class Image:
    """One image of the store, resolved: its identity, metadata and the files QEMU opens."""

    id: str                          # "sha256:<64 hex>", the digest of the manifest
    short_id: str                    # first 12 hex digits
    repo_tags: tuple[str, ...]       # "repo:tag", sorted
    config: dict                     # the image config (FORMAT.md)
    manifest: dict
    layer_digests: tuple[str, ...]   # disk layers, base first
    layers: tuple[Path, ...]         # their files, base first
    kernel: Path | None
    initrd: Path | None
    size: int                        # bytes of all content it references (layers, blobs, manifest)
    created: str                     # RFC 3339
    memory: tuple[Path, ...] = ()    # a checkpoint's memory chunks, stream order (FORMAT.md)

    @property
    def top_layer(self) -> Path:
        """The file an instance overlay uses as its backing file (format qcow2)."""
        return self.layers[-1]

    @property
    def checkpoint(self) -> dict | None:
        """The saved running machine this image carries (``vmctl commit --checkpoint``), or None."""
        return self.config.get("checkpoint")

    @property
    def boot(self) -> dict:
        return self.config["boot"]

    @property
    def boot_kind(self) -> str:
        return self.config["boot"]["kind"]

    @property
    def cmdline(self) -> str | None:
        return self.config["boot"].get("cmdline")

    @property
    def firmware(self) -> str | None:
        return self.config["boot"].get("firmware")

    @property
    def architecture(self) -> str:
        return self.config["architecture"]

    @property
    def defaults(self) -> dict:
        return self.config["defaults"]

    @property
    def cloud_init(self) -> bool:
        return bool(self.config.get("cloud_init"))

    @property
    def user(self) -> str | None:
        return self.config.get("user")

    @property
    def labels(self) -> dict:
        return self.config.get("labels", {})

    @property
    def parent(self) -> str | None:
        return self.config.get("parent")

    @property
    def name(self) -> str:
        """The first tag, or the short id for an untagged image (for messages)."""
        return self.repo_tags[0] if self.repo_tags else self.short_id


@dataclass(frozen=True)
class ImageRow:
    """One line of ``image ls``: one per tag, and one (repo/tag None) per untagged image."""

    id: str
    short_id: str
    repo: str | None
    tag: str | None
    size: int
    created: str
    holders: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoveResult:
    untagged: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()      # image ids
    freed: int = 0                     # bytes


@dataclass(frozen=True)
class PruneResult:
    images: tuple[str, ...] = ()       # dangling image ids removed
    layers: tuple[str, ...] = ()       # layer digests removed
    blobs: tuple[str, ...] = ()        # blob digests removed
    temps: int = 0                     # stale temporary entries removed
    freed: int = 0
    skipped: tuple[str, ...] = ()      # reasons content was kept although it looked unused


@dataclass(frozen=True)
class UsageRow:
    kind: str          # "images", "instances", "snapshots"
    count: int
    active: int        # held images / instances given as active / snapshots
    size: int          # bytes allocated on disk
    reclaimable: int   # bytes that removing everything inactive would free


@dataclass(frozen=True)
class DiskUsage:
    images: UsageRow
    instances: UsageRow
    snapshots: UsageRow
    temporary: int = 0  # bytes in the store's tmp/ (work in progress or leftovers)
    rows: tuple[UsageRow, ...] = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "rows", (self.images, self.instances, self.snapshots))
