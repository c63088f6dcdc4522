"""The store's write path for content that arrives from outside (registry pulls, archive loads).

Mixed into `vmctl.storage.store.ImageStore`. A blob is stored only if its sha256 is what the
caller expects (else IntegrityError, nothing kept); a disk layer must also be a qcow2 file that
reaches nothing outside the store and passes ``qemu-img check``. The caller's work dir (`session`)
pins what it ingested against prune until its manifest is registered.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import BinaryIO

from vmctl.errors import IntegrityError, NotFoundError
from vmctl.storage import probe, qemu_img
from vmctl.storage.digest import check_digest, of_bytes
from vmctl.storage.layout import layer_name
from vmctl.storage.locks import WorkDir
from vmctl.storage.manifest import LAYER_MEDIA_TYPE, parse_manifest, validate_config
from vmctl.storage.model import Image
from vmctl.storage.refs import parse_name


class StoreIngest:
    """Needs the store's ``lock``, ``layout``, ``blobs``, ``_index`` and ``_image``."""

    def blob_path(self, digest: str, media_type: str | None = None) -> Path:
        return self.blobs.path(check_digest(digest), media_type)

    def has_blob(self, digest: str, media_type: str | None = None) -> bool:
        return self.blobs.has(check_digest(digest), media_type)

    def ingest_blob(
        self, expected_digest: str, stream: BinaryIO, *, media_type: str | None = None,
        size: int | None = None, session: WorkDir | None = None, progress=None,
    ) -> Path:
        """Store content read from `stream` if its sha256 is `expected_digest` (else IntegrityError).

        Disk layers (`media_type` = the layer type) are also checked to be qcow2 that reach nothing
        outside the store: no data file, no encryption, a backing file only of the form
        ``<64 hex>.qcow2`` (the exact parent is checked by :meth:`put_manifest`). Pass the `session`
        of the pull so prune keeps the blob until the manifest is written.
        """
        check_digest(expected_digest)
        if self.blobs.has(expected_digest, media_type):
            if session:
                session.pin(expected_digest)
            return self.blobs.path(expected_digest, media_type)
        own = session is None
        work = session or WorkDir.create(self.layout.tmp, self.lock, "ingest")
        try:
            tmp = work.file(f"blob-{os.urandom(6).hex()}")
            digest, got = self.blobs.stream_temp(tmp, stream, progress)
            if digest != expected_digest or (size is not None and got != size):
                tmp.unlink(missing_ok=True)
                raise IntegrityError(
                    f"downloaded content is {digest} ({got} bytes), expected {expected_digest}"
                    + (f" ({size} bytes)" if size is not None else "")
                )
            if media_type == LAYER_MEDIA_TYPE:
                _check_pulled_layer(tmp)
            with self.lock:
                path = self.blobs.publish(tmp, digest, media_type)
                work.pin(digest)
            return path
        finally:
            if own:
                work.close()

    def put_manifest(self, manifest: bytes, ref: str | None = None) -> Image:
        """Register an image whose blobs are all present (registry pull), optionally tagging it."""
        target = parse_name(ref) if ref else None
        parsed = parse_manifest(manifest)
        for desc in parsed.blobs:
            mt = desc["mediaType"] if desc["mediaType"] == LAYER_MEDIA_TYPE else None
            path = self.blobs.path(desc["digest"], mt)
            if not path.is_file():
                raise NotFoundError(f"blob {desc['digest']} of the manifest is not in the store")
            if path.stat().st_size != desc["size"]:
                raise IntegrityError(f"blob {desc['digest']} has the wrong size")
        config = validate_config(json.loads(self.blobs.read(parsed.config["digest"])), parsed)
        previous = None
        for desc in parsed.disk_layers:
            path = self.layout.layer(desc["digest"])
            probe.check_standalone_qcow2(path, allowed_backing=layer_name(previous) if previous else None)
            previous = desc["digest"]
        image_id = of_bytes(manifest)
        with self.lock:
            for desc in parsed.blobs:  # again under the lock: an unpinned blob may have been pruned
                mt = desc["mediaType"] if desc["mediaType"] == LAYER_MEDIA_TYPE else None
                if not self.blobs.has(desc["digest"], mt):
                    raise NotFoundError(f"blob {desc['digest']} of the manifest vanished (pruned?)")
            if not self.blobs.has(image_id):
                work = WorkDir.create(self.layout.tmp, self.lock, "manifest")
                try:
                    tmp = work.file("manifest.json")
                    self.blobs.write_temp(tmp, manifest)
                    self.blobs.publish(tmp, image_id)
                finally:
                    work.close()
            index = self._index()
            index.add_image(image_id)
            if target:
                index.tag(*target, image_id)
            index.save(self.layout.index)
            del config
            return self._image(image_id, index)


def _check_pulled_layer(path: Path) -> None:
    hdr = probe.read_qcow2_header(path)
    if hdr.backing_file is not None and not re.fullmatch(r"[0-9a-f]{64}\.qcow2", hdr.backing_file):
        raise IntegrityError(f"pulled layer names backing file {hdr.backing_file!r}; refused")
    probe.check_standalone_qcow2(path, allowed_backing=hdr.backing_file)
    report = qemu_img.check(qemu_img.no_backing_spec(path), spec=True)
    if not qemu_img.is_clean(report):
        raise IntegrityError("pulled layer fails qemu-img check")
