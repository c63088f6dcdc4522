"""``vmctl save``: images as an OCI image-layout tar, streamed (see the package doc)."""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from vmctl.archive.layout import INDEX_FILE, LAYOUT, LAYOUT_FILE, REF_NAME, blob_name
from vmctl.errors import UsageError
from vmctl.fsutil import atomic_file
from vmctl.registry import mediatypes as mt
from vmctl.storage.digest import canonical_json
from vmctl.storage.manifest import parse_manifest
from vmctl.storage.refs import parse_reference

CHUNK = 1 << 20


def _canonical(obj) -> bytes:
    return canonical_json(obj)


@dataclass
class SaveResult:
    path: Path
    images: list[str]
    size: int


class _Counting:
    def __init__(self, fh, progress, total):
        self.fh, self.progress, self.total, self.done = fh, progress, total, 0

    def write(self, data) -> int:
        n = self.fh.write(data)
        self.done += len(data)
        if self.progress:
            self.progress("save", self.done, self.total)
        return n

    def flush(self):
        self.fh.flush()


def save(store, refs: list[str], output: str | os.PathLike, *, progress=None) -> SaveResult:
    """Write images `refs` (any local references) to the archive `output` (atomically, mode 0600)."""
    if not refs:
        raise UsageError("name at least one image to save")
    output = Path(output)
    entries: list[dict] = []
    blobs: dict[str, tuple[Path, int, int]] = {}   # digest -> (path, size, order)
    manifests: dict[str, bytes] = {}
    images: list[str] = []
    for ref in refs:
        im = store.resolve(ref)
        raw = store.blobs.read(im.id)
        manifests[im.id] = raw
        parsed = parse_manifest(raw)
        blobs.setdefault(parsed.config["digest"], (store.blob_path(parsed.config["digest"]), parsed.config["size"], 1))
        for desc in parsed.blobs[1:]:
            kind = mt.LOCAL_LAYER if desc["mediaType"] == mt.LOCAL_LAYER else None
            blobs.setdefault(desc["digest"], (store.blob_path(desc["digest"], kind), desc["size"], 2))
        names = _names_for(ref, im)
        desc = {"mediaType": mt.OCI_MANIFEST, "artifactType": mt.ARTIFACT_TYPE, "digest": im.id, "size": len(raw)}
        for name in names or [None]:
            entry = dict(desc)
            if name:
                entry["annotations"] = {REF_NAME: name}
            if entry not in entries:
                entries.append(entry)
        images.append(im.id)
    index = _canonical({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})
    total = sum(size for _, size, _ in blobs.values()) + sum(len(m) for m in manifests.values())
    # 0600 from its first byte: an archive holds whole disks (the umask can only take more away)
    with atomic_file(output, mode=0o600) as fh:
        counting = _Counting(fh, progress, total)
        with tarfile.open(fileobj=counting, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tar:
            _add_bytes(tar, LAYOUT_FILE, _canonical(LAYOUT))
            _add_bytes(tar, INDEX_FILE, index)
            for digest, raw in manifests.items():
                _add_bytes(tar, blob_name(digest), raw)
            for digest, (path, size, _) in sorted(blobs.items(), key=lambda kv: kv[1][2]):
                info = _info(blob_name(digest), size)
                with open(path, "rb") as src:
                    tar.addfile(info, src)
    return SaveResult(output, images, output.stat().st_size)


def _names_for(ref: str, im) -> list[str]:
    """The names an image is saved under: the one given (if it is a name), else all its tags."""
    r = parse_reference(ref)
    if r.is_named and f"{r.repo}:{r.tag}" in im.repo_tags:
        return [f"{r.repo}:{r.tag}"]
    return list(im.repo_tags) if not r.is_named else []


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = size, 0o444, 0, 0, 0
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))
