"""The image store's face: import, resolve, tag, remove, hold, verify. Garbage collection
(prune, leftovers of killed processes) is `vmctl.storage.gc`, the registry's and archives' write
path (verified ingest, manifests) `vmctl.storage.ingest`; both are mixed into `ImageStore`.

Crash safety in one paragraph: slow work (convert, hash, download) happens in a flocked work dir
under ``tmp/`` without the store lock. Publishing takes the store lock and goes bottom-up: content
files are renamed to their digest names first, the manifest blob next, and the index last (one
atomic rename), so the index never names anything missing. Removal goes top-down: the index first,
then files no image references any more. A crash in between leaves only unreferenced files, which
``prune`` removes (and which nothing else ever looks at).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from vmctl import faults, perms
from vmctl.errors import ConflictError, IntegrityError, InUseError, NotFoundError, UsageError
from vmctl.storage import qemu_img
from vmctl.storage.blobs import Blobs
from vmctl.storage.bootsector import firmware_choice
from vmctl.storage.digest import canonical_json, check_digest, of_file
from vmctl.storage.gc import StoreGC
from vmctl.storage.holds import Holds, check_holder
from vmctl.storage.importer import Progress, prepare_base_layer, prepare_overlay_layer
from vmctl.storage.index import Index
from vmctl.storage.ingest import StoreIngest
from vmctl.storage.layout import Layout
from vmctl.storage.locks import StoreLock, WorkDir
from vmctl.storage.manifest import (
    CONFIG_MEDIA_TYPE,
    FIRMWARES,
    INITRD_MEDIA_TYPE,
    KERNEL_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    MEMORY_MEDIA_TYPE,
    RECIPE_LABEL,
    ParsedManifest,
    build_config,
    build_manifest,
    descriptor,
    host_architecture,
    normalize_created,
    normalize_defaults,
    normalize_labels,
    parse_manifest,
    validate_config,
)
from vmctl.storage.model import Image, ImageRow, RemoveResult, short_id
from vmctl.storage.refs import id_prefix_candidate, parse_name, parse_reference
from vmctl.storage.usage import disk_usage


BUILD_KEY_LABEL = "vmctl.build.key"   # a Vmfile step's cache key, on the image that step made


class ImageStore(StoreGC, StoreIngest):
    """The images under ``<data root>/images``.

    `qemu_user` is the user QEMU runs as when that is not the caller (``perms.qemu_user(uri)``):
    it gets read access to layers, kernels and initrds through ACLs, nothing else.
    """

    def __init__(self, data_root: Path, qemu_user: str | None = None):
        self.layout = Layout(Path(data_root) / "images")
        self.data_root = Path(data_root)
        self.qemu_user = qemu_user
        self.layout.ensure(qemu_user)
        self.lock = StoreLock(self.layout.lock)
        self.blobs = Blobs(self.layout, qemu_user)
        self.holds = Holds(self.layout.holds)
        self._cache: dict[str, tuple[ParsedManifest, dict, bytes]] = {}

    @classmethod
    def from_settings(cls, settings) -> "ImageStore":
        return cls(settings.root, perms.qemu_user(settings.uri))

    # ------------------------------------------------------------------ reading
    def _index(self) -> Index:
        return Index.load(self.layout.index)

    def _load(self, image_id: str) -> tuple[ParsedManifest, dict, bytes]:
        cached = self._cache.get(image_id)
        if cached:
            return cached
        try:
            raw = self.blobs.read(image_id)
        except FileNotFoundError:
            raise NotFoundError(f"image {short_id(image_id)} is in the index but its manifest is missing") from None
        parsed = parse_manifest(raw)
        try:
            config = json.loads(self.blobs.read(parsed.config["digest"]))
        except FileNotFoundError:
            raise IntegrityError(f"image {short_id(image_id)}: its config blob is missing") from None
        validate_config(config, parsed)
        self._cache[image_id] = (parsed, config, raw)
        return self._cache[image_id]

    def _image(self, image_id: str, index: Index) -> Image:
        parsed, config, raw = self._load(image_id)
        size = len(raw) + sum(d["size"] for d in parsed.blobs)
        return Image(
            id=image_id,
            short_id=short_id(image_id),
            repo_tags=tuple(index.tags_of(image_id)),
            config=config,
            manifest=parsed.raw,
            layer_digests=tuple(d["digest"] for d in parsed.disk_layers),
            layers=tuple(self.layout.layer(d["digest"]) for d in parsed.disk_layers),
            kernel=self.layout.blob(parsed.kernel["digest"]) if parsed.kernel else None,
            initrd=self.layout.blob(parsed.initrd["digest"]) if parsed.initrd else None,
            size=size,
            created=config["created"],
            memory=tuple(self.layout.blob(d["digest"]) for d in parsed.memory),
        )

    def _resolve_id(self, ref: str, index: Index) -> str:
        r = parse_reference(ref)
        if r.digest:
            if r.digest in index.images:
                return r.digest
            raise NotFoundError(f"no image {ref} in the store")
        if r.is_named:
            found = index.lookup(r.repo, r.tag)
            if found:
                return found
            prefix = id_prefix_candidate(ref)
            if prefix is None:
                raise NotFoundError(
                    f"no image {r.repo}:{r.tag} in the store (see 'vmctl image ls'; "
                    "'vmctl image import' or 'vmctl pull' adds one)"
                )
        else:
            prefix = r.id_prefix
        matches = sorted(i for i in index.images if i[len("sha256:"):].startswith(prefix))
        if not matches:
            raise NotFoundError(f"no image {ref} in the store")
        if len(matches) > 1:
            shown = ", ".join(short_id(m) for m in matches[:8])
            raise UsageError(f"image id prefix {ref!r} is ambiguous: it matches {shown}")
        return matches[0]

    def resolve(self, ref: str) -> Image:
        """Find an image by ``NAME[:TAG]``, ``NAME@sha256:...``, ``sha256:...`` or an id prefix."""
        index = self._index()
        return self._image(self._resolve_id(ref, index), index)

    def get(self, image_id: str) -> Image:
        index = self._index()
        check_digest(image_id)
        if image_id not in index.images:
            raise NotFoundError(f"no image {image_id} in the store")
        return self._image(image_id, index)

    def exists(self, ref: str) -> bool:
        try:
            self.resolve(ref)
        except NotFoundError:
            return False
        return True

    def images(self) -> list[Image]:
        index = self._index()
        out = []
        for image_id in index.images:
            try:
                out.append(self._image(image_id, index))
            except (NotFoundError, IntegrityError):
                continue  # damaged entries are shown by inspect/doctor, not by listings
        return sorted(out, key=lambda im: (im.created, im.id), reverse=True)

    def list(self) -> list[ImageRow]:
        """Rows for ``image ls``: newest first; one per tag, one per untagged image."""
        holds = self.holds.all()
        rows = []
        for im in self.images():
            held = tuple(holds.get(im.id, ()))
            if not im.repo_tags and BUILD_KEY_LABEL in im.labels:
                continue   # a build step's intermediate image, as Docker hides its own
            if not im.repo_tags:
                rows.append(ImageRow(im.id, im.short_id, None, None, im.size, im.created, held))
            for ref in im.repo_tags:
                repo, tag = ref.rsplit(":", 1)
                rows.append(ImageRow(im.id, im.short_id, repo, tag, im.size, im.created, held))
        return rows

    def find_by_label(self, key: str, value: str | None = None) -> list[Image]:
        """Images whose config has label `key` (equal to `value` when given), newest first."""
        return [
            im for im in self.images()
            if key in im.labels and (value is None or im.labels[key] == str(value))
        ]

    def find_build_step(self, key: str) -> Image | None:
        """The image a Vmfile build made for the step whose cache key is `key`, if any."""
        found = self.find_by_label(BUILD_KEY_LABEL, key)
        return found[0] if found else None

    def find_build(self, recipe_digest: str) -> Image | None:
        found = self.find_by_label(RECIPE_LABEL, recipe_digest)
        return found[0] if found else None

    def children(self, image_id: str) -> list[Image]:
        """Images built on top of `image_id` (its layers are a proper prefix of theirs)."""
        index = self._index()
        return [self._image(c, index) for c in self._children(image_id, index)]

    def _children(self, image_id: str, index: Index) -> list[str]:
        base = [d["digest"] for d in self._load(image_id)[0].disk_layers]
        out = []
        for other in index.images:
            if other == image_id:
                continue
            try:
                parsed, config, _ = self._load(other)
            except (NotFoundError, IntegrityError):
                continue
            layers = [d["digest"] for d in parsed.disk_layers]
            if (len(layers) > len(base) and layers[: len(base)] == base) or config.get("parent") == image_id:
                out.append(other)
        return sorted(out)

    def holders(self, ref: str) -> list[str]:
        return self.holds.holders(self.resolve(ref).id)

    def all_holds(self) -> dict[str, list[str]]:
        """image id -> holders (for doctor: find holds whose instance no longer exists)."""
        return self.holds.all()

    def inspect(self, ref: str) -> dict:
        index = self._index()
        image_id = self._resolve_id(ref, index)
        im = self._image(image_id, index)
        parsed = self._load(image_id)[0]

        def blob_info(desc, path):
            return {"digest": desc["digest"], "size": desc["size"], "path": str(path)} if desc else None

        repos = sorted({t.rsplit(":", 1)[0] for t in im.repo_tags})
        return {
            "id": im.id,
            "short_id": im.short_id,
            "repo_tags": list(im.repo_tags),
            "repo_digests": [f"{r}@{im.id}" for r in repos],
            "created": im.created,
            "size": im.size,
            "architecture": im.architecture,
            "boot": im.boot,
            "defaults": im.defaults,
            "cloud_init": im.cloud_init,
            "user": im.user,
            "labels": im.labels,
            "parent": im.parent,
            "history": im.config.get("history", []),
            "layers": [blob_info(d, self.layout.layer(d["digest"])) for d in parsed.disk_layers],
            "kernel": blob_info(parsed.kernel, im.kernel),
            "initrd": blob_info(parsed.initrd, im.initrd),
            "checkpoint": im.checkpoint,
            "memory": [blob_info(d, p) for d, p in zip(parsed.memory, im.memory)],
            "top_layer": str(im.top_layer),
            "holders": self.holds.holders(image_id),
            "children": self._children(image_id, index),
            "manifest": im.manifest,
            "config": im.config,
        }

    # ------------------------------------------------------------------ tags and holds
    def tag(self, src_ref: str, dst: str) -> Image:
        repo, tag = parse_name(dst)
        with self.lock:
            index = self._index()
            image_id = self._resolve_id(src_ref, index)
            index.tag(repo, tag, image_id)
            index.save(self.layout.index)
            return self._image(image_id, index)

    def untag(self, ref: str) -> str:
        """Remove one tag (the image stays, perhaps untagged); return the id it pointed at."""
        repo, tag = parse_name(ref)
        with self.lock:
            index = self._index()
            previous = index.untag(repo, tag)
            if previous is None:
                raise NotFoundError(f"no image {repo}:{tag} in the store")
            index.save(self.layout.index)
            return previous

    def hold(self, ref: str, holder: str) -> Image:
        """Keep an image alive for `holder` (``instance:web1``); idempotent."""
        check_holder(holder)
        with self.lock:
            index = self._index()
            image_id = self._resolve_id(ref, index)
            self.holds.add(image_id, holder)
            return self._image(image_id, index)

    def release(self, image: str, holder: str) -> bool:
        """Drop a hold; True if it existed. Does not delete the image (prune does, if untagged).

        `image` is best the full id the holder recorded; any reference that resolves also works.
        """
        check_holder(holder)
        with self.lock:
            if not (image.startswith("sha256:") and len(image) == 71):
                image = self._resolve_id(image, self._index())
            return self.holds.remove(check_digest(image), holder)

    # ------------------------------------------------------------------ removal
    def remove(self, ref: str, *, force: bool = False) -> RemoveResult:
        """``image rm``: untag, and delete the image once no tag, holder or child image is left.

        A tag of an image with other tags is just untagged. An image used by holders or child
        images is refused with InUseError naming them; with `force` it is only untagged (and
        stays on disk until unused and pruned).
        """
        r = parse_reference(ref)
        with self.lock:
            index = self._index()
            image_id = self._resolve_id(ref, index)
            tags = index.tags_of(image_id)
            named = f"{r.repo}:{r.tag}" if r.is_named and index.lookup(r.repo, r.tag) == image_id else None
            if named and len(tags) > 1:
                index.untag(r.repo, r.tag)
                index.save(self.layout.index)
                return RemoveResult(untagged=(named,))
            if not named and len(tags) > 1 and not force:
                raise ConflictError(
                    f"image {short_id(image_id)} has several tags ({', '.join(tags)}); remove them "
                    "by name, or use --force to delete it with all its tags"
                )
            holders = self.holds.holders(image_id)
            children = self._children(image_id, index)
            if holders or children:
                if not force:
                    users = []
                    if holders:
                        users.append("holders " + ", ".join(holders))
                    if children:
                        users.append("child images " + ", ".join(self._describe(c, index) for c in children))
                    cache = [c for c in children if not index.tags_of(c)
                             and BUILD_KEY_LABEL in self._image(c, index).labels]
                    hint = "; build cache images among them go with 'vmctl image prune'" if cache else ""
                    raise InUseError(
                        f"image {ref} ({short_id(image_id)}) is in use by {'; '.join(users)}; "
                        f"remove those first (--force only untags it){hint}"
                    )
                untagged = [named] if named else tags
                for t in untagged:
                    index.untag(*t.rsplit(":", 1))
                index.save(self.layout.index)
                return RemoveResult(untagged=tuple(untagged))
            index.drop_image(image_id)
            index.save(self.layout.index)
            self.holds.drop_all(image_id)
            freed = self._collect(index, candidates=[image_id])
            return RemoveResult(untagged=tuple(tags), deleted=(image_id,), freed=freed)

    def _describe(self, image_id: str, index: Index) -> str:
        tags = index.tags_of(image_id)
        return f"{tags[0]} ({short_id(image_id)})" if tags else short_id(image_id)

    # ------------------------------------------------------------------ adding images
    @contextmanager
    def session(self, purpose: str = "pull") -> Iterator[WorkDir]:
        """A work dir for a multi-step write (registry pull): blobs ingested with it are pinned
        against prune until it closes."""
        work = WorkDir.create(self.layout.tmp, self.lock, purpose)
        try:
            yield work
        finally:
            work.close()

    def import_image(
        self, disk: Path, ref: str, *, kernel: Path | None = None, initrd: Path | None = None,
        cmdline: str | None = None, firmware: str | None = None, fmt: str = "auto",
        architecture: str | None = None, defaults: dict | None = None, cloud_init: bool = False,
        user: str | None = None, labels: dict | None = None, created=None,
        created_by: str = "vmctl image import", comment: str = "",
        progress: Progress | None = None,
    ) -> Image:
        """Import a standalone qcow2 or raw disk (plus, for direct kernel boot, kernel, initrd and
        cmdline) as image `ref` (``NAME[:TAG]``).

        `created` defaults to the disk file's modification time, so importing the same file with
        the same options again gives the same image id. `firmware` None: what the disk's own
        boot sectors say (`bootsector`), recorded as ``boot.supports`` beside the choice.
        """
        repo, tag = parse_name(ref)
        disk = Path(disk)
        if kernel is None and (initrd is not None or cmdline is not None):
            raise UsageError("--initrd and --cmdline need --kernel (direct kernel boot)")
        if kernel is None and firmware is not None and firmware not in FIRMWARES:
            raise UsageError(f"unknown firmware {firmware!r}: choose {' or '.join(FIRMWARES)}")
        for extra in (kernel, initrd):
            if extra is not None and not Path(extra).is_file():
                raise UsageError(f"{extra}: no such file")
        if not disk.exists():
            raise UsageError(f"{disk}: no such file")
        if created is None:
            created = int(disk.stat().st_mtime)
        created_s = normalize_created(created)
        with self.session("import") as work:
            layer = prepare_base_layer(disk, work.path, fmt=fmt, progress=progress)
            faults.point("import.after-convert")
            extras: list[tuple[Path, str, int, str]] = []
            boot: dict = {"kind": "firmware", **firmware_choice(layer.tmp, work.path, firmware)} \
                if kernel is None else {}
            if kernel is not None:
                k = self._stage_file(work, Path(kernel), "kernel", progress)
                extras.append((*k, KERNEL_MEDIA_TYPE))
                boot = {"kind": "kernel", "kernel": k[1], "initrd": None, "cmdline": cmdline or ""}
                if initrd is not None:
                    i = self._stage_file(work, Path(initrd), "initrd", progress)
                    extras.append((*i, INITRD_MEDIA_TYPE))
                    boot["initrd"] = i[1]
            config = build_config(
                architecture=architecture or host_architecture(),
                boot=boot,
                defaults=normalize_defaults(defaults, disk_bytes=layer.virtual_size),
                cloud_init=cloud_init,
                user=user,
                labels=normalize_labels(labels),
                created=created_s,
                parent=None,
                history=[{"created": created_s, "created_by": created_by, "comment": comment,
                          "layer": layer.digest}],
            )
            return self._commit(work, repo, tag, [], [layer], extras, config, progress)

    def add_built(self, result, ref: str, *, progress: Progress | None = None) -> Image:
        """Add a builder's output (a ``BuildResult``, duck-typed) as image `ref`.

        The recipe digest goes into the label ``vmctl.recipe.digest`` (see :meth:`find_build`);
        the creation time is ``result.created`` if the builder gives one, else the disk's mtime.
        """
        labels = dict(getattr(result, "labels", None) or {})
        labels[RECIPE_LABEL] = str(result.recipe_digest)
        kind = getattr(result, "boot_kind", "kernel")
        kernel = getattr(result, "kernel", None) if kind == "kernel" else None
        return self.import_image(
            Path(result.disk), ref,
            kernel=kernel,
            initrd=getattr(result, "initrd", None) if kernel else None,
            cmdline=getattr(result, "cmdline", "") if kernel else None,
            firmware=getattr(result, "firmware", None),
            fmt="qcow2",
            architecture=getattr(result, "architecture", None),
            defaults=getattr(result, "defaults", None),
            cloud_init=bool(getattr(result, "cloud_init", False)),
            user=getattr(result, "user", None),
            labels=labels,
            created=getattr(result, "created", None),
            created_by="vmctl build",
            comment=f"recipe {result.recipe_digest}",
            progress=progress,
        )

    def add_layer(
        self, parent_ref: str, overlay: Path, ref: str | None, message: str = "", *,
        created=None, created_by: str = "vmctl commit", labels: dict | None = None,
        defaults: dict | None = None, cloud_init: bool | None = None, user: str | None = None,
        progress: Progress | None = None, memory: list[tuple[Path, str, int]] = (),
        checkpoint: dict | None = None,
    ) -> Image:
        """``vmctl commit``: a new image = the parent's layers + the top of `overlay` (an instance
        disk whose backing file is the parent's top layer). The instance should be stopped.

        `created` defaults to now. Labels are the parent's, updated with `labels`. `ref` None: an
        untagged image (a build step's, found again by its cache label).

        ``commit --checkpoint``: `memory` are the saved machine's memory chunks, staged and hashed
        in a work dir of this store (temp file, digest, size; stream order), and `checkpoint` the
        config's ``checkpoint`` without ``memory``/``size``, which are filled in here. An image
        never inherits its parent's checkpoint: the memory belongs to the disk it was saved with.
        """
        repo, tag = parse_name(ref) if ref is not None else (None, None)
        parent = self.resolve(parent_ref)
        created_s = normalize_created(created if created is not None else _now())
        with self.session("commit") as work:
            layer = prepare_overlay_layer(Path(overlay), parent.top_layer, work.path, progress=progress)
            faults.point("commit.after-layer")
            pcfg = parent.config
            merged_labels = {**pcfg.get("labels", {}), **normalize_labels(labels)}
            merged_labels.pop(RECIPE_LABEL, None)  # the recipe describes the parent, not this image
            config = build_config(
                architecture=pcfg["architecture"],
                boot=pcfg["boot"],
                defaults=normalize_defaults({**pcfg["defaults"], **(defaults or {})},
                                            disk_bytes=layer.virtual_size),
                cloud_init=pcfg.get("cloud_init", False) if cloud_init is None else cloud_init,
                user=pcfg.get("user") if user is None else user,
                labels=merged_labels,
                created=created_s,
                parent=parent.id,
                history=[*pcfg.get("history", []),
                         {"created": created_s, "created_by": created_by, "comment": message,
                          "layer": layer.digest}],
            )
            if memory:
                config["checkpoint"] = {**(checkpoint or {}), "memory": [d for _t, d, _s in memory],
                                        "size": sum(n for _t, _d, n in memory)}
            parsed = self._load(parent.id)[0]
            extras = []
            for desc in (parsed.kernel, parsed.initrd):
                if desc:
                    extras.append((None, desc["digest"], desc["size"], desc["mediaType"]))
            extras += [(tmp, digest, size, MEMORY_MEDIA_TYPE) for tmp, digest, size in memory]
            base = [(d["digest"], d["size"]) for d in parsed.disk_layers]
            return self._commit(work, repo, tag, base, [layer], extras, config, progress)

    def _stage_file(self, work: WorkDir, src: Path, name: str, progress: Progress | None):
        total = src.stat().st_size
        tmp = work.file(name)
        digest, size = self.blobs.copy_temp(
            tmp, src, (lambda n: progress("copy", n, total)) if progress else None)
        return tmp, digest, size

    def _commit(self, work: WorkDir, repo: str | None, tag: str | None, existing_layers: list[tuple[str, int]],
                new_layers: list, extras: list, config: dict, progress: Progress | None) -> Image:
        """Publish staged content bottom-up and tag it, under the store lock."""
        config_bytes = canonical_json(config)
        config_tmp = work.file("config.json")
        config_digest, config_size = self.blobs.write_temp(config_tmp, config_bytes)
        layer_descs = [descriptor(LAYER_MEDIA_TYPE, d, s) for d, s in existing_layers]
        layer_descs += [descriptor(LAYER_MEDIA_TYPE, lay.digest, lay.size) for lay in new_layers]
        kdesc = idesc = None
        mdescs = []
        for _tmp, digest, size, mt in extras:
            if mt == KERNEL_MEDIA_TYPE:
                kdesc = descriptor(mt, digest, size)
            elif mt == MEMORY_MEDIA_TYPE:
                mdescs.append(descriptor(mt, digest, size))
            else:
                idesc = descriptor(mt, digest, size)
        manifest = build_manifest(descriptor(CONFIG_MEDIA_TYPE, config_digest, config_size),
                                  layer_descs, kdesc, idesc, mdescs)
        validate_config(config, parse_manifest(manifest))
        manifest_tmp = work.file("manifest.json")
        image_id, _ = self.blobs.write_temp(manifest_tmp, manifest)
        if progress:
            progress("publish", 0, 1)
        with self.lock:
            for digest, _size in existing_layers:
                if not self.blobs.has(digest, LAYER_MEDIA_TYPE):
                    raise ConflictError(f"the parent image's layer {digest[:19]} vanished during the operation")
            for tmp, digest, _size, mt in extras:
                if tmp is None:
                    if not self.blobs.has(digest):
                        raise ConflictError(f"the parent image's blob {digest[:19]} vanished during the operation")
                else:
                    self.blobs.publish(tmp, digest)
            for lay in new_layers:
                self.blobs.publish(lay.tmp, lay.digest, LAYER_MEDIA_TYPE)
            self.blobs.publish(config_tmp, config_digest)
            self.blobs.publish(manifest_tmp, image_id)
            faults.point("store.publish.after-blobs")
            index = self._index()
            index.add_image(image_id)
            if repo is not None:
                index.tag(repo, tag, image_id)
            index.save(self.layout.index)
            image = self._image(image_id, index)
        if progress:
            progress("publish", 1, 1)
        return image

    # ------------------------------------------------------------------ checks
    def verify(self, ref: str) -> list[str]:
        """Re-hash an image's content and run ``qemu-img check`` on its layers; return problems."""
        im = self.resolve(ref)

        problems = []
        parsed = self._load(im.id)[0]
        for desc in parsed.blobs:
            mt = desc["mediaType"] if desc["mediaType"] == LAYER_MEDIA_TYPE else None
            path = self.blobs.path(desc["digest"], mt)
            try:
                digest, _ = of_file(path)
            except FileNotFoundError:
                problems.append(f"{path} is missing")
                continue
            if digest != desc["digest"]:
                problems.append(f"{path} does not match its digest")
        for path in im.layers:
            if path.exists() and not qemu_img.is_clean(qemu_img.check(path, "qcow2", force_share=True)):
                problems.append(f"{path} fails qemu-img check")
        for path in [*im.layers, im.kernel, im.initrd]:
            if path is None or not path.exists():
                continue
            st = path.stat()
            if st.st_uid != os.geteuid():
                problems.append(f"{path} is owned by uid {st.st_uid} (libvirt relabelling?), not by the store's owner")
            if st.st_mode & 0o222:
                problems.append(f"{path} is writable (mode {st.st_mode & 0o777:o})")
        return problems

    def df(self, **kwargs):
        return disk_usage(self, **kwargs)


def _now() -> int:
    return int(time.time())

