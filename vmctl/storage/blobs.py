"""Content-addressed files: ``blobs/sha256/<hex>`` and ``layers/<hex>.qcow2``.

A file is written under a temporary name in a work dir, hashed while written (or right after
qemu-img wrote it), fsynced, made read-only and only then renamed to its digest name, so a name that
exists always holds complete content with that digest. Publishing an already present digest just
discards the new copy: that is what makes two concurrent imports of one file end as one image.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from vmctl.errors import IntegrityError
from vmctl.fsutil import fsync_dir, fsync_file
from vmctl.storage.digest import ALGO, CHUNK, ByteProgress, of_bytes
from vmctl.storage.layout import Layout, publish_mode
from vmctl.storage.manifest import LAYER_MEDIA_TYPE


class Blobs:
    def __init__(self, layout: Layout, qemu_user: str | None):
        self.layout = layout
        self.qemu_user = qemu_user

    def path(self, digest: str, media_type: str | None = None) -> Path:
        """Where content `digest` lives: disk layers under layers/, everything else under blobs/."""
        if media_type == LAYER_MEDIA_TYPE:
            return self.layout.layer(digest)
        return self.layout.blob(digest)

    def has(self, digest: str, media_type: str | None = None) -> bool:
        return self.path(digest, media_type).is_file()

    def read(self, digest: str) -> bytes:
        data = self.layout.blob(digest).read_bytes()
        if of_bytes(data) != digest:
            raise IntegrityError(f"blob {digest} is damaged (content does not match its digest)")
        return data

    # -- writing into a work dir (no lock needed) --------------------------------------------------
    @staticmethod
    def write_temp(tmp: Path, data: bytes) -> tuple[str, int]:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return of_bytes(data), len(data)

    @staticmethod
    def stream_temp(tmp: Path, stream: BinaryIO, progress: ByteProgress | None = None) -> tuple[str, int]:
        """Copy `stream` into `tmp`, hashing as it goes; return (digest, size)."""
        h = hashlib.sha256()
        size = 0
        with open(tmp, "xb") as out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if progress:
                    progress(size)
            out.flush()
            os.fsync(out.fileno())
        return f"{ALGO}:{h.hexdigest()}", size

    @classmethod
    def copy_temp(cls, tmp: Path, src: Path, progress: ByteProgress | None = None) -> tuple[str, int]:
        with open(src, "rb") as fh:
            return cls.stream_temp(tmp, fh, progress)

    # -- publishing (caller holds the store lock) ----------------------------------------------
    def publish(self, tmp: Path, digest: str, media_type: str | None = None) -> Path:
        """Rename finished temp `tmp` to its digest name, or discard it if that name exists."""
        final = self.path(digest, media_type)
        if final.exists():
            tmp.unlink(missing_ok=True)
            return final
        publish_mode(tmp, self.qemu_user)
        fsync_file(tmp)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        return final

    def delete(self, digest: str, media_type: str | None = None) -> int:
        """Remove a published file; return the bytes it occupied."""
        path = self.path(digest, media_type)
        try:
            size = path.stat().st_blocks * 512
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def all_blobs(self) -> dict[str, Path]:
        return _listing(self.layout.blobs, "")

    def all_layers(self) -> dict[str, Path]:
        return _listing(self.layout.layers, ".qcow2")


def _listing(directory: Path, suffix: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return out
    for entry in entries:
        name = entry.name
        if suffix and not name.endswith(suffix):
            continue
        hexpart = name[: len(name) - len(suffix)] if suffix else name
        if len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart):
            out[f"{ALGO}:{hexpart}"] = entry
    return out


