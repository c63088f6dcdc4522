"""Garbage collection of the image store: what no image references, and what killed processes left.

Mixed into `vmctl.storage.store.ImageStore`. Everything here runs under the store lock and only
ever removes content that no image in the index, no hold and no live work dir references, so
removal can never take a layer an image or a running pull still needs. A damaged index entry
(a manifest or config that cannot be read) stops every deletion: then nobody can tell what is
shared, and ``prune``/``doctor`` report it instead.
"""

from __future__ import annotations

from pathlib import Path

from vmctl.errors import IntegrityError, NotFoundError
from vmctl.storage.index import Index
from vmctl.storage.locks import dead_work_dirs, live_pins, sweep_stale
from vmctl.storage.manifest import LAYER_MEDIA_TYPE
from vmctl.storage.model import PruneResult


class StoreGC:
    """Needs the store's ``lock``, ``layout``, ``blobs``, ``holds``, ``_index``, ``_load``,
    ``_children`` and ``_cache``."""

    def _referenced(self, index: Index) -> tuple[set[str], list[str]]:
        """Every digest the index's images reference (manifests included), and damage found."""
        refs: set[str] = set()
        damaged = []
        for image_id in index.images:
            refs.add(image_id)
            try:
                parsed = self._load(image_id)[0]
            except (NotFoundError, IntegrityError) as exc:
                damaged.append(str(exc))
                continue
            refs.update(d["digest"] for d in parsed.blobs)
        return refs, damaged

    def _collect(self, index: Index, candidates: list[str]) -> int:
        """Delete the content of removed images `candidates` that nothing references any more."""
        refs, damaged = self._referenced(index)
        if damaged:
            return 0  # cannot tell what is shared: keep everything, prune reports it
        refs |= live_pins(self.layout.tmp)
        freed = 0
        for image_id in candidates:
            try:
                parsed = self._load(image_id)[0]
            except (NotFoundError, IntegrityError):
                continue
            for desc in parsed.disk_layers:
                if desc["digest"] not in refs:
                    freed += self.blobs.delete(desc["digest"], LAYER_MEDIA_TYPE)
            for desc in [parsed.config, parsed.kernel, parsed.initrd, *parsed.memory]:
                if desc and desc["digest"] not in refs:
                    freed += self.blobs.delete(desc["digest"])
            if image_id not in refs:
                freed += self.blobs.delete(image_id)
            self._cache.pop(image_id, None)
        return freed

    def prune(self, *, dangling: bool = True) -> PruneResult:
        """Remove unreferenced layers and blobs, and stale temporary files of dead processes.

        With `dangling`, untagged images that nobody holds and no image builds on go first.
        Content pinned by a live work dir (a registry pull in progress) is kept.
        """
        with self.lock:
            index = self._index()
            removed_images: list[str] = []
            if dangling:
                holds = self.holds.all()
                changed = True
                while changed:
                    changed = False
                    for image_id in sorted(index.images):
                        if index.tags_of(image_id) or holds.get(image_id):
                            continue
                        try:
                            if self._children(image_id, index):
                                continue
                        except (NotFoundError, IntegrityError):
                            continue
                        index.drop_image(image_id)
                        removed_images.append(image_id)
                        changed = True
                if removed_images:
                    index.save(self.layout.index)
            temps, freed = sweep_stale(self.layout.tmp)
            freed += self._sweep_dot_files()
            refs, damaged = self._referenced(index)
            if damaged:
                return PruneResult(images=tuple(removed_images), temps=temps, freed=freed,
                                   skipped=tuple(damaged))
            refs |= live_pins(self.layout.tmp)
            refs |= set(self.holds.all())
            layers, blobs = [], []
            for digest in sorted(self.blobs.all_layers()):
                if digest not in refs:
                    freed += self.blobs.delete(digest, LAYER_MEDIA_TYPE)
                    layers.append(digest)
            for digest in sorted(self.blobs.all_blobs()):
                if digest not in refs:
                    freed += self.blobs.delete(digest)
                    blobs.append(digest)
            for image_id in removed_images:
                self._cache.pop(image_id, None)
            return PruneResult(tuple(removed_images), tuple(layers), tuple(blobs), temps, freed)

    def leftovers(self) -> list[tuple[str, str, str]]:
        """What killed processes left in the store, as (kind, subject, detail), without changing
        anything: work dirs of dead processes, temp files of atomic writes, and published blobs or
        layers that no image, hold or live work dir references (a publish cut short)."""

        found = [("stale-work-dir", str(d), "temporary files of a vmctl process that died")
                 for d in dead_work_dirs(self.layout.tmp)]
        found += [("temp-file", str(f), "half-written file of a vmctl process that died")
                  for f in self._dot_files()]
        index = self._index()
        refs, damaged = self._referenced(index)
        if damaged:
            return found + [("damaged-image", d, "cannot tell which blobs are in use") for d in damaged]
        refs |= live_pins(self.layout.tmp) | set(self.holds.all())
        for digest, path in sorted(self.blobs.all_layers().items()):
            if digest not in refs:
                found.append(("orphan-blob", str(path), "a layer no image uses (a publish cut short)"))
        for digest, path in sorted(self.blobs.all_blobs().items()):
            if digest not in refs:
                found.append(("orphan-blob", str(path), "a blob no image uses (a publish cut short)"))
        return found

    def mend(self) -> None:
        """Remove what :meth:`leftovers` lists (under the store lock; images are not touched)."""
        with self.lock:
            sweep_stale(self.layout.tmp)
            self._sweep_dot_files()
            index = self._index()
            refs, damaged = self._referenced(index)
            if damaged:
                return
            refs |= live_pins(self.layout.tmp) | set(self.holds.all())
            for digest in self.blobs.all_layers():
                if digest not in refs:
                    self.blobs.delete(digest, LAYER_MEDIA_TYPE)
            for digest in self.blobs.all_blobs():
                if digest not in refs:
                    self.blobs.delete(digest)

    def _dot_files(self) -> list[Path]:
        dirs = [self.layout.root, self.layout.holds, *[d for d in self.layout.holds.glob("*") if d.is_dir()]]
        return sorted(f for d in dirs for f in d.glob(".*.tmp"))

    def _sweep_dot_files(self) -> int:
        """Leftover ``.name.pid.rand.tmp`` files of atomic writes (only ever made under the lock)."""
        freed = 0
        dirs = [self.layout.root, self.layout.holds, *[d for d in self.layout.holds.glob("*") if d.is_dir()]]
        for d in dirs:
            for f in d.glob(".*.tmp"):
                freed += f.lstat().st_blocks * 512
                f.unlink(missing_ok=True)
        for d in [d for d in self.layout.holds.glob("*") if d.is_dir()]:
            try:
                d.rmdir()  # empty hold dirs of images whose last hold went away in a crash
            except OSError:
                pass
        return freed

    def discard_unreferenced(self, published: list[tuple[str, str | None]]) -> None:
        """Remove blobs an operation published that no image references (its rollback);
        best effort: a failure here must not hide the operation's own error."""
        if not published:
            return
        try:
            with self.lock:
                refs, damaged = self._referenced(self._index())
                if damaged:
                    return
                refs |= live_pins(self.layout.tmp)
                for digest, kind in published:
                    if digest not in refs:
                        self.blobs.delete(digest, kind)
        except Exception:  # noqa: BLE001
            pass
