"""``vmctl save`` / ``vmctl load``: images as an OCI image-layout archive (a tar), streamed.

The archive is an OCI image layout (image-spec ``image-layout.md``) in a tar, the format of
``skopeo copy … oci-archive:FILE`` and ``docker save`` (OCI variant)::

    oci-layout                     {"imageLayoutVersion": "1.0.0"}
    index.json                     one manifest descriptor per saved name, annotated with
                                   org.opencontainers.image.ref.name = "NAME:TAG"
    blobs/sha256/<manifest hex>    the store's own manifest (so its digest is the image id)
    blobs/sha256/<config hex>      the image config
    blobs/sha256/<hex>             kernel, initrd, and every disk layer as plain qcow2
                                   (media type application/vnd.vmctl.disk.layer.v1.qcow2)

Members are written in that order (small metadata first), each blob once however many images
share it. Layers are stored uncompressed, as the store keeps them: ``save`` is a sequential copy
(no recompression, nothing held in memory), and the archive's manifests are byte-identical to the
store's, so ``load`` gives the same image ids. (Compress the tar with any tool if you like; load
reads ``.tar.gz``/``.tar.zst`` too... through ``zstd -dc | vmctl load -i /dev/stdin``.)
``skopeo copy oci-archive:FILE[:NAME:TAG] …`` reads it; registry-form manifests (zstd layers, what
``skopeo copy docker://… oci-archive:…`` writes from a pushed vmctl image) load as well.

``load`` reads the tar as a stream: a blob whose role is known (its manifest came earlier) goes
straight into the store's verified write path; any other blob is staged in a work dir, hashed on the
way. Every blob must hash to its name (and a decompressed layer to its uncompressed digest); the
store also checks every layer with ``qemu-img check`` and the backing chain when the manifest is
registered. On any failure, what this load added is removed again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from vmctl.errors import IntegrityError, UsageError
from vmctl.registry import mediatypes as mt

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT = {"imageLayoutVersion": "1.0.0"}
SMALL = 4 << 20
CHUNK = 1 << 20


def _canonical(obj) -> bytes:
    from vmctl.storage.digest import canonical_json

    return canonical_json(obj)


# ------------------------------------------------------------------ save
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
    """Write images `refs` (any local references) to the archive `output` (atomically)."""
    from vmctl.storage.manifest import parse_manifest

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
    tmp = output.with_name(f".{output.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "xb") as fh:
            counting = _Counting(fh, progress, total)
            with tarfile.open(fileobj=counting, mode="w|", format=tarfile.PAX_FORMAT,
                              copybufsize=CHUNK) as tar:
                _add_bytes(tar, "oci-layout", _canonical(LAYOUT))
                _add_bytes(tar, "index.json", index)
                for digest, raw in manifests.items():
                    _add_bytes(tar, _blob_name(digest), raw)
                for digest, (path, size, _) in sorted(blobs.items(), key=lambda kv: kv[1][2]):
                    info = _info(_blob_name(digest), size)
                    with open(path, "rb") as src:
                        tar.addfile(info, src)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return SaveResult(output, images, output.stat().st_size)


def _names_for(ref: str, im) -> list[str]:
    """The names an image is saved under: the one given (if it is a name), else all its tags."""
    from vmctl.storage.refs import parse_reference

    r = parse_reference(ref)
    if r.is_named and f"{r.repo}:{r.tag}" in im.repo_tags:
        return [f"{r.repo}:{r.tag}"]
    return list(im.repo_tags) if not r.is_named else []


def _blob_name(digest: str) -> str:
    algo, hexd = digest.split(":", 1)
    return f"blobs/{algo}/{hexd}"


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = size, 0o444, 0, 0, 0
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


# ------------------------------------------------------------------ load
@dataclass
class LoadResult:
    images: list[tuple[object, tuple[str, ...]]] = field(default_factory=list)  # (Image, names)


class _HashingReader:
    def __init__(self, src, progress=None, label=""):
        self.src, self.h, self.size = src, hashlib.sha256(), 0
        self.progress, self.label = progress, label

    def read(self, n: int = CHUNK) -> bytes:
        data = self.src.read(n if n and n > 0 else CHUNK)
        self.h.update(data)
        self.size += len(data)
        if self.progress and data:
            self.progress(self.label, self.size, None)
        return data

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def _drain(reader) -> None:
    while reader.read(CHUNK):
        pass


def load(store, path: str | os.PathLike, *, progress=None) -> LoadResult:
    """Load every image of the archive at `path` into `store` (see the module doc)."""
    from vmctl.registry import compress
    from vmctl.registry.transfer import _rollback, local_manifest
    from vmctl.storage.digest import is_digest

    index: dict | None = None
    small: dict[str, bytes] = {}          # verified small blobs (manifests, configs)
    staged: dict[str, Path] = {}          # verified blobs of unknown role, on disk
    known: dict[str, object] = {}         # remote digest -> RemoteBlob, from manifests seen
    published: list[tuple[str, str | None]] = []
    saw_layout = False

    def ingest(blob, stream, work) -> None:
        """Put one blob into the store from `stream` (its archive bytes), verifying both digests."""
        kind = mt.LOCAL_LAYER if blob.local_type == mt.LOCAL_LAYER else None
        if store.has_blob(blob.local_digest, kind):
            work.pin(blob.local_digest)
            return
        outer = _HashingReader(stream, progress, f"load {blob.local_digest[7:19]}")
        src = compress.DecompressReader(outer, max_size=blob.local_size) if blob.compressed else outer
        published.append((blob.local_digest, kind))
        try:
            store.ingest_blob(blob.local_digest, src, media_type=kind, size=blob.local_size, session=work)
        except IntegrityError as exc:
            raise IntegrityError(f"archive blob {blob.remote_digest} does not match its digest or is not "
                                 f"a valid layer ({exc}); nothing was loaded") from None
        _drain(outer)
        if outer.digest != blob.remote_digest:
            raise IntegrityError(f"archive blob {blob.remote_digest} does not match its digest (got {outer.digest})")

    def note_manifest(data: bytes) -> None:
        try:
            _local, blobs, _cfg = local_manifest(data)
        except IntegrityError:
            return
        for b in blobs:
            known.setdefault(b.remote_digest, b)

    try:
        with store.session("load") as work, open(path, "rb") as fh:
            try:
                tar = tarfile.open(fileobj=fh, mode="r|*")
            except tarfile.TarError as exc:
                raise IntegrityError(f"{path}: not a tar archive ({exc})") from None
            try:
                for member in tar:
                    name = member.name.lstrip("./") if member.name.startswith("./") else member.name
                    if not member.isreg():
                        continue
                    stream = tar.extractfile(member)
                    if name == "oci-layout":
                        layout = _json_member(stream, member, name)
                        if layout.get("imageLayoutVersion") != "1.0.0":
                            raise IntegrityError(f"{path}: unsupported image layout version {layout!r}")
                        saw_layout = True
                    elif name == "index.json":
                        index = _json_member(stream, member, name)
                    elif name.startswith("blobs/sha256/"):
                        digest = "sha256:" + name.rsplit("/", 1)[1]
                        if not is_digest(digest):
                            raise IntegrityError(f"{path}: unexpected member {name}")
                        if digest in known:
                            if member.size != known[digest].remote_size:
                                raise IntegrityError(f"archive blob {digest} has {member.size} bytes, "
                                                     f"its manifest says {known[digest].remote_size}")
                            ingest(known[digest], stream, work)
                        elif member.size <= SMALL:
                            data = stream.read()
                            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                                raise IntegrityError(f"archive blob {digest} does not match its digest")
                            small[digest] = data
                            note_manifest(data)
                        else:
                            dest = work.file(f"staged-{digest[7:]}")
                            reader = _HashingReader(stream, progress, f"read {digest[7:19]}")
                            with open(dest, "wb") as out:
                                while chunk := reader.read(CHUNK):
                                    out.write(chunk)
                            if reader.digest != digest:
                                raise IntegrityError(f"archive blob {digest} does not match its digest")
                            staged[digest] = dest
            except (tarfile.TarError, EOFError) as exc:
                raise IntegrityError(f"{path}: truncated or damaged archive ({exc})") from None
            finally:
                tar.close()
            if not saw_layout or index is None:
                raise IntegrityError(f"{path}: not an OCI image layout (no oci-layout or index.json)")
            result = LoadResult()
            by_manifest: dict[str, list[str]] = {}
            for entry in index.get("manifests") or []:
                d = (entry or {}).get("digest", "")
                if (entry or {}).get("mediaType") == mt.OCI_INDEX:
                    raise UsageError(f"{path}: nested indexes are not supported")
                names = by_manifest.setdefault(d, [])
                ref_name = ((entry or {}).get("annotations") or {}).get(REF_NAME)
                if ref_name and _is_full_name(ref_name) and ref_name not in names:
                    names.append(ref_name)
            if not by_manifest:
                raise IntegrityError(f"{path}: index.json lists no manifests")
            loaded = []
            for mdigest, names in by_manifest.items():
                data = small.get(mdigest)
                if data is None:
                    raise IntegrityError(f"{path}: manifest {mdigest} is missing from the archive")
                local, blobs, config_desc = local_manifest(data)
                cfg = small.get(config_desc["digest"])
                if cfg is None and not store.has_blob(config_desc["digest"]):
                    raise IntegrityError(f"{path}: config {config_desc['digest']} is missing from the archive")
                if cfg is not None:
                    ingest(_config_blob(config_desc), io.BytesIO(cfg), work)
                else:
                    work.pin(config_desc["digest"])
                for b in blobs:
                    kind = mt.LOCAL_LAYER if b.local_type == mt.LOCAL_LAYER else None
                    if store.has_blob(b.local_digest, kind):
                        work.pin(b.local_digest)
                    elif b.remote_digest in staged:
                        with open(staged[b.remote_digest], "rb") as src:
                            ingest(b, src, work)
                    elif b.remote_digest in small:
                        ingest(b, io.BytesIO(small[b.remote_digest]), work)
                    else:
                        raise IntegrityError(f"{path}: blob {b.remote_digest} is missing from the archive")
                loaded.append((local, names))
            for local, names in loaded:
                image = store.put_manifest(local, names[0] if names else None)
                for extra in names[1:]:
                    image = store.tag(image.id, extra)
                result.images.append((image, tuple(names)))
            for p in staged.values():
                p.unlink(missing_ok=True)
            return result
    except BaseException:
        _rollback(store, published)
        raise


def _config_blob(desc: dict):
    from vmctl.registry.transfer import RemoteBlob

    return RemoteBlob(mt.CONFIG, desc["digest"], desc["size"], desc["digest"], desc["size"], False)


def _is_full_name(name: str) -> bool:
    """A ref.name that names an image (``NAME:TAG``); a bare tag (``v1``, as skopeo writes for
    ``oci-archive:FILE:v1``) does not, and leaves the image untagged."""
    from vmctl.storage.refs import parse_name

    if ":" not in name.rsplit("/", 1)[-1]:
        return False
    try:
        parse_name(name)
    except UsageError:
        return False
    return True


def _json_member(stream, member, name) -> dict:
    if member.size > SMALL:
        raise IntegrityError(f"archive member {name} is too large")
    try:
        doc = json.loads(stream.read())
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"archive member {name} is not JSON") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"archive member {name} is not a JSON object")
    return doc
