"""Disks and images: the qemu-img wrapper (:mod:`.qemu_img`) and the image store (:mod:`.store`).

The on-disk format is described in FORMAT.md next to this file.
"""

from vmctl.storage.manifest import RECIPE_LABEL
from vmctl.storage.model import DiskUsage, Image, ImageRow, PruneResult, RemoveResult, UsageRow
from vmctl.storage.refs import Reference, parse_name, parse_reference
from vmctl.storage.store import ImageStore

__all__ = [
    "ImageStore", "Image", "ImageRow", "RemoveResult", "PruneResult", "UsageRow", "DiskUsage",
    "Reference", "parse_reference", "parse_name", "RECIPE_LABEL",
]
