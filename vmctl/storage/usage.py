"""``vmctl df``: space used by images, instances and snapshots.

Sizes are bytes allocated on disk (``st_blocks``), so sparse files count for what they hold. Image
content shared by several images is counted once. Snapshot accounting belongs to whoever stores
snapshots: pass a callable returning ``(count, active, size, reclaimable)``.
"""

from __future__ import annotations

from typing import Callable, Iterable

from vmctl.storage.locks import tree_bytes
from vmctl.storage.model import DiskUsage, UsageRow

SnapshotUsage = Callable[[], tuple[int, int, int, int]]


def _allocated(path) -> int:
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def disk_usage(store, *, active_instances: Iterable[str] | None = None,
               snapshots: SnapshotUsage | None = None) -> DiskUsage:
    """Usage rows. `active_instances` (names of running/defined-and-wanted instances), when given,
    makes the instances' reclaimable bytes the size of all the others."""
    images = store.images()
    holds = store.all_holds()
    files = {**{d: p for d, p in store.blobs.all_layers().items()},
             **{d: p for d, p in store.blobs.all_blobs().items()}}
    sizes = {d: _allocated(p) for d, p in files.items()}
    total = sum(sizes.values())
    kept: set[str] = set()
    for im in images:
        if im.id in holds:
            kept.add(im.id)
            kept.update(d["digest"] for d in [im.manifest["config"], *im.manifest["layers"]])
    kept_bytes = sum(sizes.get(d, 0) for d in kept)
    image_row = UsageRow("images", len(images), sum(1 for im in images if im.id in holds),
                         total, total - kept_bytes)

    inst_root = store.data_root / "instances"
    count = active = size = reclaim = 0
    active_set = set(active_instances) if active_instances is not None else None
    try:
        dirs = [d for d in inst_root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    except FileNotFoundError:
        dirs = []
    for d in dirs:
        used = tree_bytes(d)
        count += 1
        size += used
        if active_set is None or d.name in active_set:
            active += 1
        else:
            reclaim += used
    inst_row = UsageRow("instances", count, active, size, reclaim)

    if snapshots is not None:
        s_count, s_active, s_size, s_reclaim = snapshots()
        snap_row = UsageRow("snapshots", s_count, s_active, s_size, s_reclaim)
    else:
        snap_row = UsageRow("snapshots", 0, 0, 0, 0)
    return DiskUsage(image_row, inst_row, snap_row, temporary=tree_bytes(store.layout.tmp))
