"""``vmctl load``: images from an OCI image-layout archive, every byte checked (see the package doc).

Two ways through an archive, chosen by what it is:

- **A plain tar file** (the common case, what ``vmctl save`` and ``skopeo`` write): a first pass
  reads only headers (seeking over data) and the small metadata (``oci-layout``, ``index.json``,
  the manifests and configs the index leads to). Everything is checked before the store is
  touched: member names, types and duplicates, digests of the metadata, that every blob the
  manifests declare is in the archive with the declared size, and that the store's file system has
  room for what it lacks. The second pass reads exactly those blobs, each straight into the
  store's verified write path. Nothing is staged; a blob no manifest declares is never read.
- **A compressed tar file** (gzip, zstd, bzip2): the same two passes, decompressing twice; the
  first keeps the small blobs (at most `SMALL_BUDGET` bytes) in memory. Nothing is staged either.
- **A stream** (a pipe, compressed or not): one pass. Blobs whose role is known
  (a manifest came first, as in vmctl's own archives) go straight into the store; the others are
  held (small ones in memory, up to `SMALL_BUDGET`; larger ones staged in the load's work dir,
  each only if it fits in the free space, each checked against its digest as soon as it ends).
  Once the index and all its manifests are known, undeclared blobs are skipped unread.

Either way: at most `MAX_MEMBERS` members; a member outside the layout, absolute or with ``..``,
a link or a device, a second ``index.json`` (or any file twice) refuses the archive; image names
that are not ``NAME:TAG`` (or a bare tag, which leaves the image untagged as skopeo means it) or
that could be read as an image ID refuse it too. On any failure what this load added is removed
again. A name that pointed at another image before is reported in the result.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from vmctl import faults
from vmctl.archive.layout import (
    INDEX_FILE,
    LAYOUT,
    MAX_MEMBERS,
    MAX_METADATA,
    REF_NAME,
    blob_digest,
    check_member,
    member_path,
)
from vmctl.errors import IntegrityError, NotFoundError, ResourceError, UsageError
from vmctl.registry import compress
from vmctl.registry import mediatypes as mt
from vmctl.registry.compress import MAX_WINDOW
from vmctl.registry.transfer import RemoteBlob, _rollback, local_manifest
from vmctl.storage.manifest import parse_manifest, validate_config
from vmctl.storage.refs import parse_name
from vmctl.tarstream import DIRECTORY, REGULAR, TarReader

CHUNK = 1 << 20
SMALL_BUDGET = 64 << 20       # stream mode: bytes of not-yet-placed small blobs held in memory
RESERVE = 64 << 20            # free space left on the store's file system after a load


@dataclass
class LoadResult:
    images: list[tuple[object, tuple[str, ...]]] = field(default_factory=list)  # (Image, names)
    retagged: list[tuple[str, str]] = field(default_factory=list)  # (name, id it named before)


@dataclass
class _Planned:
    local: bytes
    names: list[str]
    blobs: list            # RemoteBlob (vmctl.registry.transfer)
    config_desc: dict


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


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ opening
_MAGICS = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))


def _open(raw, what: str):
    """(stream of the tar, whether it was compressed)."""
    head = raw.peek(8)[:8] if hasattr(raw, "peek") else b""
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            if kind == "gzip":
                return gzip.GzipFile(fileobj=raw, mode="rb"), True
            if kind == "zstd":
                dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
                return io.BufferedReader(dctx.stream_reader(raw, read_size=CHUNK, read_across_frames=True),
                                         CHUNK), True
            if kind == "bzip2":
                return bz2.BZ2File(raw, mode="rb"), True
            raise UsageError(f"{what} is xz-compressed: decompress it first (xz -dc FILE | vmctl load -i /dev/stdin)")
    return raw, False


def _json_doc(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{what} is not a JSON object")
    return doc


def _read_all(data, limit: int, what: str) -> bytes:
    out = bytearray()
    while chunk := data.read(CHUNK):
        out += chunk
        if len(out) > limit:
            raise IntegrityError(f"{what} is larger than {limit} bytes")
    return bytes(out)


def _kind(member) -> str:
    return {REGULAR: "file", DIRECTORY: "dir"}.get(member.kind, member.kind)


# ------------------------------------------------------------------ names and the index
def _image_name(name, what: str) -> str | None:
    """A ref.name annotation -> ``NAME:TAG``, or None for a bare tag (skopeo's ``FILE:v1``)."""
    if not isinstance(name, str) or not name or len(name) > 512:
        raise IntegrityError(f"{what}: a malformed image name")
    if ":" not in name.rsplit("/", 1)[-1]:
        return None
    try:
        repo, tag = parse_name(name)
    except UsageError as exc:
        raise IntegrityError(f"{what}: the archive names an image {name[:80]!r}: {exc}; refused") from None
    return f"{repo}:{tag}"


def _index_entries(index: dict, what: str) -> dict[str, list[str]]:
    """manifest digest -> names, from a checked index."""
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise IntegrityError(f"{what}: index.json lists no manifests")
    if len(entries) > 10_000:
        raise IntegrityError(f"{what}: index.json lists more than 10000 manifests")
    out: dict[str, list[str]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise IntegrityError(f"{what}: index.json has an entry that is not an object")
        if entry.get("mediaType") == mt.OCI_INDEX:
            raise UsageError(f"{what}: nested indexes are not supported")
        d = entry.get("digest")
        if blob_digest(f"blobs/{str(d).replace(':', '/', 1)}") is None:
            raise IntegrityError(f"{what}: index.json names {str(d)[:80]!r}, which is not a sha256 digest")
        if not isinstance(entry.get("size"), int) or isinstance(entry.get("size"), bool):
            raise IntegrityError(f"{what}: index.json gives no size for {d}")
        names = out.setdefault(d, [])
        ann = entry.get("annotations") or {}
        if not isinstance(ann, dict):
            raise IntegrityError(f"{what}: index.json has annotations that are not an object")
        name = _image_name(ann[REF_NAME], what) if REF_NAME in ann else None
        if name and name not in names:
            names.append(name)
    return out


class _Reader:
    """What the archive holds, gathered in one pass: layout, index, small blobs, blob sizes."""

    def __init__(self, what: str):
        self.what = what
        self.layout = False
        self.index: dict | None = None
        self.sizes: dict[str, int] = {}       # digest -> member size (every blob member)
        self.offsets: dict[str, int] = {}     # seekable mode: digest -> data offset
        self.seen: set[str] = set()

    def member(self, member) -> tuple[str, str]:
        """Check one member; return (role, path)."""
        path = member_path(member.name, self.what)
        role = check_member(path, _kind(member), self.what)
        if role == "dir":
            return role, path
        if path in self.seen:
            raise IntegrityError(f"{self.what}: {path} appears twice; refused")
        self.seen.add(path)
        return role, path

    def metadata(self, role: str, data) -> None:
        raw = _read_all(data, MAX_METADATA, f"{self.what}: {role}")
        doc = _json_doc(raw, f"{self.what}: {'oci-layout' if role == 'layout' else INDEX_FILE}")
        if role == "layout":
            if doc.get("imageLayoutVersion") != LAYOUT["imageLayoutVersion"]:
                raise IntegrityError(f"{self.what}: unsupported image layout version {str(doc)[:80]}")
            self.layout = True
        else:
            self.index = doc


# ------------------------------------------------------------------ planning
def _plan(store, what: str, index: dict, small) -> list[_Planned]:
    """Images to add, from the index and the manifests/configs `small(digest)` returns (verified)."""
    plans = []
    for mdigest, names in _index_entries(index, what).items():
        data = small(mdigest)
        if data is None:
            raise IntegrityError(f"{what}: manifest {mdigest} is missing from the archive")
        local, blobs, config_desc = local_manifest(data)
        cfg = small(config_desc["digest"])
        if cfg is None:
            if not store.has_blob(config_desc["digest"]):
                raise IntegrityError(f"{what}: config {config_desc['digest']} is missing from the archive")
            cfg = store.blob_path(config_desc["digest"]).read_bytes()
        if len(cfg) != config_desc["size"]:
            raise IntegrityError(f"{what}: config {config_desc['digest']} has {len(cfg)} bytes, "
                                 f"its manifest says {config_desc['size']}")
        validate_config(_json_doc(cfg, f"{what}: config {config_desc['digest']}"), parse_manifest(local))
        plans.append(_Planned(local, names, blobs, config_desc))
    return plans


def _needed(store, plans: list[_Planned]) -> dict:
    """remote digest -> RemoteBlob for every blob (configs included) the store lacks."""
    out = {}
    for p in plans:
        c = p.config_desc
        for b in [RemoteBlob(mt.CONFIG, c["digest"], c["size"], c["digest"], c["size"], False), *p.blobs]:
            kind = mt.LOCAL_LAYER if b.local_type == mt.LOCAL_LAYER else None
            if not store.has_blob(b.local_digest, kind):
                out.setdefault(b.remote_digest, b)
    return out


def _check_declared(sizes: dict[str, int], needed: dict, what: str) -> None:
    """Every blob the store lacks is in the archive, with the size its manifest declares."""
    for d, b in needed.items():
        if d not in sizes:
            raise IntegrityError(f"{what}: blob {d} is missing from the archive")
        if sizes[d] != b.remote_size:
            raise IntegrityError(f"{what}: blob {d} has {sizes[d]} bytes, its manifest says {b.remote_size}")


def _check_space(store, needed: dict, what: str) -> None:
    want = sum(b.local_size for b in needed.values())
    free = shutil.disk_usage(store.layout.tmp).free
    if want + RESERVE > free:
        raise ResourceError(f"{what}: loading needs {want >> 20} MiB, only {free >> 20} MiB are free "
                            f"under {store.layout.root} (vmctl keeps {RESERVE >> 20} MiB free); nothing was loaded")


class _Ingest:
    """Puts verified blobs into the store within one work dir; remembers what it published."""

    def __init__(self, store, work, progress, what: str):
        self.store, self.work, self.progress, self.what = store, work, progress, what
        self.published: list[tuple[str, str | None]] = []
        self.done: set[str] = set()

    def blob(self, blob, stream) -> None:
        kind = mt.LOCAL_LAYER if blob.local_type == mt.LOCAL_LAYER else None
        if self.store.has_blob(blob.local_digest, kind):
            self.work.pin(blob.local_digest)
            self.done.add(blob.remote_digest)
            return
        outer = _HashingReader(stream, self.progress, f"load {blob.local_digest[7:19]}")
        src = compress.DecompressReader(outer, max_size=blob.local_size) if blob.compressed else outer
        self.published.append((blob.local_digest, kind))
        try:
            self.store.ingest_blob(blob.local_digest, src, media_type=kind, size=blob.local_size, session=self.work)
        except IntegrityError as exc:
            raise IntegrityError(f"{self.what}: blob {blob.remote_digest} does not match its digest or is "
                                 f"not a valid layer ({exc}); nothing was loaded") from None
        while outer.read(CHUNK):
            pass
        if outer.digest != blob.remote_digest:
            raise IntegrityError(f"{self.what}: blob {blob.remote_digest} does not match its digest "
                                 f"(got {outer.digest})")
        self.done.add(blob.remote_digest)


def _finish(store, plans: list[_Planned], result: LoadResult) -> LoadResult:
    faults.point("load.after-ingest")
    for p in plans:
        previous = {}
        for name in p.names:
            try:
                previous[name] = store.resolve(name).id
            except NotFoundError:
                pass
        image = store.put_manifest(p.local, p.names[0] if p.names else None)
        for extra in p.names[1:]:
            image = store.tag(image.id, extra)
        result.images.append((image, tuple(p.names)))
        result.retagged += [(n, old) for n, old in previous.items() if old != image.id]
    return result


# ------------------------------------------------------------------ the two ways
def _load_seekable(store, fh, what: str, ingest_factory) -> LoadResult:
    meta = _Reader(what)
    reader = TarReader(fh, max_members=MAX_MEMBERS, what=what)
    for member, data in reader:
        role, path = meta.member(member)
        if role in ("layout", "index"):
            meta.metadata(role, data)
        elif role == "blob":
            d = blob_digest(path)
            meta.sizes[d] = member.size
            meta.offsets[d] = reader.offset
    if not meta.layout or meta.index is None:
        raise IntegrityError(f"{what}: not an OCI image layout (no oci-layout or index.json)")

    cache: dict[str, bytes] = {}

    def small(digest: str) -> bytes | None:
        if digest in cache:
            return cache[digest]
        if digest not in meta.sizes:
            return None
        if meta.sizes[digest] > MAX_METADATA:
            raise IntegrityError(f"{what}: blob {digest} is too large for a manifest or config")
        fh.seek(meta.offsets[digest])
        data = fh.read(meta.sizes[digest])
        if _sha(data) != digest:
            raise IntegrityError(f"{what}: blob {digest} does not match its digest")
        cache[digest] = data
        return data

    plans = _plan(store, what, meta.index, small)
    needed = _needed(store, plans)
    _check_declared(meta.sizes, needed, what)
    _check_space(store, needed, what)
    ing = ingest_factory()
    for d in sorted(needed, key=lambda x: meta.offsets[x]):  # in archive order: one forward sweep
        fh.seek(meta.offsets[d])
        ing.blob(needed[d], _Bounded(fh, meta.sizes[d]))
    return _finish(store, plans, LoadResult())


class _Bounded(io.RawIOBase):
    """`size` bytes of `fh` from where it stands."""

    def __init__(self, fh, size: int):
        self.fh, self.left = fh, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.fh.read(min(n, CHUNK)) if n else b""
        if n and not data:
            raise IntegrityError("the archive is truncated")
        self.left -= len(data)
        return data


def _load_stream(store, stream, what: str, work, ingest: _Ingest) -> LoadResult:
    meta = _Reader(what)
    small: dict[str, bytes] = {}
    small_bytes = 0
    staged: dict[str, Path] = {}
    declared: dict[str, object] = {}   # remote digest -> RemoteBlob, from manifests seen so far
    manifests_seen: set[str] = set()

    def learn(digest: str, data: bytes) -> None:
        try:
            _local, blobs, cfg = local_manifest(data)
        except IntegrityError:
            return
        manifests_seen.add(digest)

        for b in [*blobs, RemoteBlob(mt.CONFIG, cfg["digest"], cfg["size"], cfg["digest"], cfg["size"], False)]:
            declared.setdefault(b.remote_digest, b)

    def complete() -> bool:
        """Whether the index and every manifest it lists are known (undeclared blobs are junk)."""
        return listed is not None and listed <= manifests_seen

    listed: set[str] | None = None     # the index's manifest digests, once it is read

    for member, data in TarReader(stream, max_members=MAX_MEMBERS, what=what):
        role, path = meta.member(member)
        if role in ("layout", "index"):
            meta.metadata(role, data)
            if role == "index":
                listed = set(_index_entries(meta.index, what))
                for d in listed & set(small):
                    learn(d, small[d])
            continue
        if role != "blob":
            continue
        d = blob_digest(path)
        meta.sizes[d] = member.size
        b = declared.get(d)
        if b is not None and b.local_type != mt.CONFIG:
            if member.size != b.remote_size:
                raise IntegrityError(f"{what}: blob {d} has {member.size} bytes, its manifest says {b.remote_size}")
            _check_space(store, {d: b}, what)
            ingest.blob(b, data)
            continue
        if b is None and complete():
            continue  # no manifest of this archive declares it: skipped unread
        if member.size <= MAX_METADATA and small_bytes + member.size <= SMALL_BUDGET:
            raw = _read_all(data, MAX_METADATA, f"{what}: blob {d}")
            if _sha(raw) != d:
                raise IntegrityError(f"{what}: blob {d} does not match its digest")
            small[d] = raw
            small_bytes += len(raw)
            if listed is not None and d in listed:
                learn(d, raw)  # only a manifest the index lists declares blobs to place at once
            continue
        free = shutil.disk_usage(work.path).free
        if member.size + RESERVE > free:
            raise ResourceError(f"{what}: blob {d} ({member.size >> 20} MiB) does not fit in the "
                                f"{free >> 20} MiB free; nothing was loaded")
        dest = work.file(f"staged-{d[7:]}")
        reader = _HashingReader(data, ingest.progress, f"read {d[7:19]}")
        with open(dest, "wb") as out:
            while chunk := reader.read(CHUNK):
                out.write(chunk)
        if reader.digest != d:
            raise IntegrityError(f"{what}: blob {d} does not match its digest")
        staged[d] = dest
    if not meta.layout or meta.index is None:
        raise IntegrityError(f"{what}: not an OCI image layout (no oci-layout or index.json)")
    plans = _plan(store, what, meta.index, small.get)
    needed = _needed(store, plans)
    _check_space(store, {d: b for d, b in needed.items() if d not in ingest.done}, what)
    for d, b in needed.items():
        if d in ingest.done:
            continue
        if d in meta.sizes and meta.sizes[d] != b.remote_size:
            raise IntegrityError(f"{what}: blob {d} has {meta.sizes[d]} bytes, its manifest says {b.remote_size}")
        if d in staged:
            with open(staged[d], "rb") as src:
                ingest.blob(b, src)
            staged.pop(d).unlink(missing_ok=True)
        elif d in small:
            ingest.blob(b, io.BytesIO(small[d]))
        else:
            raise IntegrityError(f"{what}: blob {d} is missing from the archive")
    return _finish(store, plans, LoadResult())


def _load_compressed_file(store, path, what: str, ingest: _Ingest) -> LoadResult:
    """A compressed archive in a regular file: decompressed twice instead of staging anything.

    Pass one checks every member and keeps the small blobs (manifests, configs; at most
    `SMALL_BUDGET` bytes); pass two streams exactly the declared blobs the store lacks."""
    meta = _Reader(what)
    small: dict[str, bytes] = {}
    budget = SMALL_BUDGET
    with open(path, "rb") as raw:
        stream, _ = _open(raw, what)
        for member, data in TarReader(stream, max_members=MAX_MEMBERS, what=what):
            role, p = meta.member(member)
            if role in ("layout", "index"):
                meta.metadata(role, data)
            elif role == "blob":
                d = blob_digest(p)
                meta.sizes[d] = member.size
                if member.size <= MAX_METADATA and member.size <= budget:
                    raw_blob = _read_all(data, MAX_METADATA, f"{what}: blob {d}")
                    if _sha(raw_blob) != d:
                        raise IntegrityError(f"{what}: blob {d} does not match its digest")
                    small[d] = raw_blob
                    budget -= len(raw_blob)
    if not meta.layout or meta.index is None:
        raise IntegrityError(f"{what}: not an OCI image layout (no oci-layout or index.json)")
    plans = _plan(store, what, meta.index, small.get)
    needed = _needed(store, plans)
    _check_declared(meta.sizes, needed, what)
    _check_space(store, needed, what)
    with open(path, "rb") as raw:
        stream, _ = _open(raw, what)
        for member, data in TarReader(stream, max_members=MAX_MEMBERS, what=what):
            d = blob_digest(member_path(member.name, what))
            if d in needed and d not in ingest.done:
                ingest.blob(needed[d], io.BytesIO(small[d]) if d in small else data)
    missing = set(needed) - ingest.done
    if missing:
        raise IntegrityError(f"{what}: blob {sorted(missing)[0]} vanished from the archive between two reads")
    return _finish(store, plans, LoadResult())


def load(store, path: str | os.PathLike, *, progress=None) -> LoadResult:
    """Load every image of the archive at `path` into `store` (see the module doc)."""
    what = str(path)
    ingest: _Ingest | None = None
    try:
        with store.session("load") as work, open(path, "rb") as raw:
            ingest = _Ingest(store, work, progress, what)
            stream, compressed = _open(raw, what)
            regular = stat.S_ISREG(os.fstat(raw.fileno()).st_mode)
            if regular and not compressed:
                return _load_seekable(store, raw, what, lambda: ingest)
            if regular:
                return _load_compressed_file(store, path, what, ingest)
            return _load_stream(store, stream, what, work, ingest)
    except (EOFError, OSError, zlib.error, zstandard.ZstdError) as exc:
        if ingest is not None:
            _rollback(store, ingest.published)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise IntegrityError(f"{what}: truncated or damaged archive ({exc})") from None
    except BaseException:
        if ingest is not None:
            _rollback(store, ingest.published)
        raise
