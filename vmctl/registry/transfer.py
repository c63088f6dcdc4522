"""Push and pull vmctl images between the local store and a registry (the glue; see FORMAT.md).

Push: every disk layer is compressed with zstd (deterministic, :mod:`.compress`) and uploaded unless
the registry has that blob already (``HEAD``), or can mount it from another repository where this
host pushed it before; config, kernel and initrd go as they are. A small cache under
``<data root>/cache/registry/zstd/`` remembers, per uncompressed layer digest, the compressed digest
and size (and which repositories got it), so a re-push or the push of a derived image does not even
recompress the layers the registry already has: only the new layer is compressed and uploaded.

Pull, in two phases so that a failure leaves the store as it was:

1. fetch and check: the manifest (digest-verified), its translation into the local manifest (which
   is byte-identical to the one the pushing host had, so the image id is the same everywhere), the
   config (validated before any big download). Then every blob the store lacks — a layer is looked
   up by its *uncompressed* digest, so layers already present are never downloaded — is downloaded
   resumably into ``<data root>/cache/registry/partial/`` and verified against its digest, and a
   compressed layer is also decompressed to nowhere to check the uncompressed digest and size the
   manifest announces. Network errors, mismatches and truncation all happen here; the store is not
   touched.
2. ingest: each blob is decompressed into the store's own verified, qcow2-checked write path
   (:meth:`ImageStore.ingest_blob`), pinned by the pull's work dir, then the manifest is put (and
   tagged) in one step. If this phase fails (a layer that fails ``qemu-img check``, disk full), the
   layers it published and nothing else references are removed again.

A verified compressed blob stays in ``partial/`` only until it is ingested; an interrupted download
stays there as ``<hex>.partial`` and the next pull resumes it with ``Range``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zstandard

from vmctl import faults
from vmctl.errors import IntegrityError, NotFoundError, RegistryError, ResourceError, UsageError
from vmctl.fsutil import atomic_write, lock_file, private_dirs
from vmctl.registry import answers, compress
from vmctl.registry import mediatypes as mt
from vmctl.registry.auth import AuthStore
from vmctl.registry.client import RegistryClient
from vmctl.registry.refs import RegistryRef, normalize_host, require_registry_ref
from vmctl.storage.digest import canonical_json, is_digest
from vmctl.storage.manifest import host_architecture, parse_manifest, validate_config
from vmctl.storage.refs import parse_name

# (phase, done, total): phase is e.g. "compress 1a2b3c4d5e6f", "upload 1a2b3c4d5e6f", "download …"
Progress = Callable[[str, int, int | None], None]

_ZSTD_ID = f"{compress.FORMAT_ID}/libzstd-{zstandard.ZSTD_VERSION}"


def _short(digest: str) -> str:
    return digest.split(":", 1)[1][:12]


def _sub(progress: Progress | None, phase: str):
    if progress is None:
        return None
    return lambda done, total: progress(phase, done, total)


def _counted(progress: Progress | None, phase: str, total: int):
    """A bytes-so-far callback (the store's ingest) reporting `phase` of `total` bytes."""
    if progress is None:
        return None
    return lambda done: progress(phase, done, total)


# ------------------------------------------------------------------ clients for refs
def open_client(ref_or_host: RegistryRef | str, *, settings=None, insecure: bool | None = None,
                ca_file: str | None = None, auth_store: AuthStore | None = None,
                **client_kw) -> RegistryClient:
    """A client for the registry of `ref_or_host`, with stored credentials (vmctl's, else Docker's
    or podman's) and TLS settings: `insecure` explicitly, else whether the host is listed in
    ``settings.insecure_registries``."""
    if isinstance(ref_or_host, RegistryRef):
        host, repo, api_host = ref_or_host.host, ref_or_host.repo, ref_or_host.api_host
    else:
        host, repo = normalize_host(ref_or_host), None
        api_host = "registry-1.docker.io" if host == "docker.io" else host
    if insecure is None:
        listed = tuple(getattr(settings, "insecure_registries", ()) or ())
        insecure = host in listed or api_host in listed
    creds = (auth_store or AuthStore()).get(host, repo)
    return RegistryClient(api_host, insecure=insecure, ca_file=ca_file, credentials=creds, **client_kw)


def cache_root(store) -> Path:
    return Path(store.data_root) / "cache" / "registry"


# ------------------------------------------------------------------ manifest translation
def registry_manifest(local: dict, layers: dict[str, dict]) -> bytes:
    """The registry form of local manifest `local`: disk layers replaced by their compressed
    descriptors (`layers`: uncompressed digest -> {"digest","size"}), canonical JSON."""
    out_layers = []
    for desc in local["layers"]:
        if desc["mediaType"] in mt.COMPRESSED_ON_PUSH:
            c = layers[desc["digest"]]
            out_layers.append({
                "mediaType": mt.COMPRESSED_ON_PUSH[desc["mediaType"]], "digest": c["digest"], "size": c["size"],
                "annotations": {mt.ANN_UNCOMPRESSED_DIGEST: desc["digest"],
                                mt.ANN_UNCOMPRESSED_SIZE: str(desc["size"])},
            })
        else:
            out_layers.append(dict(desc))
    doc = {k: v for k, v in local.items() if k != "layers"}
    doc["layers"] = out_layers
    return _canonical(doc)


@dataclass(frozen=True)
class RemoteBlob:
    """One blob of a pulled image: where it is in the registry and what it becomes locally."""

    local_type: str       # media type in the store
    local_digest: str
    local_size: int
    remote_digest: str
    remote_size: int
    compressed: bool


def local_manifest(data: bytes) -> tuple[bytes, list[RemoteBlob], dict]:
    """Translate a registry manifest into (local manifest bytes, blobs, config descriptor).

    Raises IntegrityError for anything that is not a well-formed vmctl image.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError("manifest is not JSON") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise IntegrityError("manifest: schemaVersion must be 2")
    config = doc.get("config")
    if not isinstance(config, dict):
        raise IntegrityError("manifest: missing or foreign config descriptor")
    # OCI 1.1 lets a copy drop artifactType when the config media type says the same thing
    if doc.get("artifactType", mt.ARTIFACT_TYPE if config.get("mediaType") == mt.CONFIG
               else None) != mt.ARTIFACT_TYPE:
        raise IntegrityError(
            f"not a vmctl image (artifactType {str(doc.get('artifactType'))[:80]!r}, config "
            f"{str(config.get('mediaType'))[:80]!r})")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise IntegrityError("manifest: layers must be a list")
    blobs: list[RemoteBlob] = []
    local_layers = []
    for desc in layers:
        if (not isinstance(desc, dict) or not isinstance(desc.get("digest"), str) or not is_digest(desc["digest"])
                or not isinstance(desc.get("size"), int) or isinstance(desc["size"], bool) or desc["size"] < 0):
            raise IntegrityError("manifest: malformed layer descriptor")
        media = desc.get("mediaType")
        if media in mt.DECOMPRESSED:
            ann = desc.get("annotations") or {}
            if not isinstance(ann, dict):
                raise IntegrityError("manifest: layer annotations must be an object")
            udigest, usize = ann.get(mt.ANN_UNCOMPRESSED_DIGEST), ann.get(mt.ANN_UNCOMPRESSED_SIZE)
            if (not isinstance(udigest, str) or not is_digest(udigest) or not isinstance(usize, str)
                    or not (usize.isascii() and usize.isdigit() and len(usize) <= 19)):
                raise IntegrityError(f"manifest: compressed layer {desc['digest']} lacks its "
                                     f"{mt.ANN_UNCOMPRESSED_DIGEST}/{mt.ANN_UNCOMPRESSED_SIZE} annotations")
            local_type = mt.DECOMPRESSED[media]
            blobs.append(RemoteBlob(local_type, udigest, int(usize), desc["digest"], desc["size"], True))
            local_layers.append({"mediaType": local_type, "digest": udigest, "size": int(usize)})
        elif media in (mt.LOCAL_LAYER, mt.KERNEL, mt.INITRD, mt.MEMORY):
            blobs.append(RemoteBlob(media, desc["digest"], desc["size"], desc["digest"], desc["size"], False))
            local_layers.append({"mediaType": media, "digest": desc["digest"], "size": desc["size"]})
        else:
            raise IntegrityError(f"manifest: unexpected layer mediaType {media!r}")
    if (config.get("mediaType") != mt.CONFIG or not isinstance(config.get("digest"), str)
            or not is_digest(config["digest"]) or not isinstance(config.get("size"), int)
            or isinstance(config.get("size"), bool)):
        raise IntegrityError("manifest: missing or foreign config descriptor")
    config_desc = {"mediaType": mt.CONFIG, "digest": config["digest"], "size": config["size"]}
    # exactly the fields the store writes (vmctl/storage/FORMAT.md): same bytes, same image id
    local = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": mt.ARTIFACT_TYPE,
             "config": config_desc, "layers": local_layers}
    return _canonical(local), blobs, config_desc


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(obj) -> bytes:
    return canonical_json(obj)


# ------------------------------------------------------------------ compression cache
class CompressionCache:
    """uncompressed layer digest -> compressed digest/size (and repos holding it), per zstd build."""

    def __init__(self, root: Path):
        self.dir = root / "zstd"

    def _path(self, udigest: str) -> Path:
        return self.dir / f"{udigest.split(':', 1)[1]}.json"

    def get(self, udigest: str) -> dict | None:
        try:
            entry = json.loads(self._path(udigest).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return entry if entry.get("format") == _ZSTD_ID else None

    def put(self, udigest: str, digest: str, size: int, seen: dict | None = None) -> dict:
        private_dirs(self.dir)
        entry = {"format": _ZSTD_ID, "digest": digest, "size": size, "seen": seen or {}}
        atomic_write(self._path(udigest), json.dumps(entry, sort_keys=True).encode())
        return entry

    def saw(self, udigest: str, entry: dict, host: str, repo: str) -> None:
        seen = dict(entry.get("seen") or {})
        repos = [r for r in seen.get(host, []) if r != repo]
        seen[host] = ([repo] + repos)[:8]
        self.put(udigest, entry["digest"], entry["size"], seen)


# ------------------------------------------------------------------ push
@dataclass
class PushResult:
    ref: RegistryRef
    manifest_digest: str
    image_id: str
    bytes_uploaded: int
    blobs: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, digest, exists|mounted|uploaded)

    @property
    def uploaded(self) -> list[str]:
        return [d for _, d, status in self.blobs if status == "uploaded"]


def push(store, local_ref: str, dest: RegistryRef | str, client: RegistryClient, *,
         progress: Progress | None = None) -> PushResult:
    """Push image `local_ref` of `store` to `dest` (``HOST/REPO[:TAG]``)."""
    dest = require_registry_ref(dest) if isinstance(dest, str) else dest
    image = store.resolve(local_ref)
    local = image.manifest
    root = cache_root(store)
    cache = CompressionCache(root)
    work = root / "tmp"
    private_dirs(work)
    before = client.bytes_uploaded
    statuses: list[tuple[str, str, str]] = []
    compressed: dict[str, dict] = {}
    repo = dest.repo

    for desc in local["layers"]:
        if desc["mediaType"] not in mt.COMPRESSED_ON_PUSH:
            continue
        udigest = desc["digest"]
        src = store.blob_path(udigest, mt.LOCAL_LAYER if desc["mediaType"] == mt.LOCAL_LAYER else None)
        entry = cache.get(udigest)
        if entry and client.blob_exists(repo, entry["digest"]):
            statuses.append((_kind(desc), entry["digest"], "exists"))
            compressed[udigest] = entry
            continue
        tmp = work / f"{udigest.split(':', 1)[1]}.{os.getpid()}.{os.urandom(4).hex()}.zst"
        try:
            c = compress.compress_file(src, tmp, progress=_sub(progress, f"compress {_short(udigest)}"))
            faults.point("push.after-compress")
            if c.uncompressed_digest != udigest:
                raise IntegrityError(f"layer {udigest} in the store is damaged (it hashes to {c.uncompressed_digest})")
            entry = cache.get(udigest) or {}
            entry = cache.put(udigest, c.digest, c.size, entry.get("seen") if entry.get("digest") == c.digest else None)
            mount = next((r for r in entry.get("seen", {}).get(client.host, []) if r != repo), None)
            status = client.upload_blob(repo, c.digest, tmp, c.size, mount_from=mount,
                                        progress=_sub(progress, f"upload {_short(c.digest)}"))
        finally:
            tmp.unlink(missing_ok=True)
        statuses.append((_kind(desc), c.digest, status))
        compressed[udigest] = entry

    others = [("config", local["config"])] + [
        (_kind(d), d) for d in local["layers"] if d["mediaType"] not in mt.COMPRESSED_ON_PUSH]
    for kind, desc in others:
        path = store.blob_path(desc["digest"])
        status = client.upload_blob(repo, desc["digest"], path, desc["size"],
                                    progress=_sub(progress, f"upload {_short(desc['digest'])}"))
        statuses.append((kind, desc["digest"], status))

    faults.point("push.after-upload")
    data = registry_manifest(local, compressed)
    tag = dest.tag if not dest.digest else None
    if dest.digest and dest.digest != _sha256(data):
        raise UsageError(f"{dest}: this image's manifest is {_sha256(data)}; push it by tag instead")
    digest = client.put_manifest(repo, tag or dest.digest, data, mt.OCI_MANIFEST)
    for udigest, entry in compressed.items():
        cache.saw(udigest, entry, client.host, repo)
    return PushResult(dest, digest, image.id, client.bytes_uploaded - before, statuses)


def _kind(desc: dict) -> str:
    return {mt.LOCAL_LAYER: "layer", mt.MEMORY: "memory", mt.KERNEL: "kernel"}.get(desc["mediaType"], "initrd")


# ------------------------------------------------------------------ pull
@dataclass
class PullResult:
    ref: RegistryRef
    manifest_digest: str
    image: object          # vmctl.storage.Image
    bytes_downloaded: int
    downloaded: list[str] = field(default_factory=list)   # local digests fetched
    present: list[str] = field(default_factory=list)      # local digests already in the store


def _pick_from_index(client: RegistryClient, repo: str, data: bytes) -> tuple[bytes, str]:
    what = f"{client.host}/{repo}: index"
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{what} is not JSON") from None
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(host_architecture(), host_architecture())
    for entry in answers.index_entries(answers.as_dict(doc, what), what):
        if entry["artifactType"] == mt.ARTIFACT_TYPE and entry["platform"].get("architecture") in (None, arch):
            raw, _, digest = client.get_manifest(repo, entry["digest"], accept=[mt.OCI_MANIFEST])
            return raw, digest
    raise NotFoundError(f"{client.host}/{repo}: the index lists no vmctl image for {arch}")


def pull(store, ref: RegistryRef | str, client: RegistryClient, *, local_ref: str | None = "",
         progress: Progress | None = None) -> PullResult:
    """Pull `ref` into `store`; tag it `local_ref` (default ``HOST/REPO:TAG``, see
    :attr:`RegistryRef.local_name`; None: leave untagged)."""
    ref = require_registry_ref(ref) if isinstance(ref, str) else ref
    if local_ref == "":
        local_ref = f"{ref.local_name}:{ref.tag}" if ref.tag and not ref.digest else None
    if local_ref:
        parse_name(local_ref)  # a name the store refuses fails now, before any download
    repo = ref.repo
    data, media_type, mdigest = client.get_manifest(repo, ref.reference, accept=mt.MANIFEST_ACCEPT)
    if media_type == mt.OCI_INDEX:
        data, mdigest = _pick_from_index(client, repo, data)
    elif media_type not in (mt.OCI_MANIFEST, ""):
        raise RegistryError(f"{ref}: not a vmctl image (a {media_type} manifest)")
    try:
        local, blobs, config_desc = local_manifest(data)
    except IntegrityError as exc:  # the registry answered something that is not a vmctl manifest
        raise RegistryError(f"{ref}: {exc}") from None

    parsed = parse_manifest(local)
    # One pull of an image at a time: a second `vmctl pull` of the same image waits here, then finds
    # every blob in the store and downloads nothing.
    locks = private_dirs(cache_root(store) / "locks")
    with lock_file(locks / f"pull-{mdigest.split(':', 1)[1]}.lock"):
        return _fetch_and_ingest(store, ref, client, mdigest, local, blobs, config_desc, parsed,
                                 local_ref, progress)


def _fetch_and_ingest(store, ref: RegistryRef, client: RegistryClient, mdigest: str, local: bytes,
                      blobs: list, config_desc: dict, parsed, local_ref: str | None,
                      progress: Progress | None) -> PullResult:
    """Pull's two phases (module doc), under the image's pull lock."""
    repo = ref.repo
    before = client.bytes_downloaded
    partial = private_dirs(cache_root(store) / "partial")

    # -- phase 1: fetch and verify everything the store lacks, without touching the store
    config_bytes = None
    if not store.has_blob(config_desc["digest"]):
        config_bytes = client.get_blob_bytes(repo, config_desc["digest"])
    else:
        config_bytes = store.blob_path(config_desc["digest"]).read_bytes()
    try:
        validate_config(json.loads(config_bytes), parsed)
    except ValueError:
        raise IntegrityError(f"{ref}: image config is not JSON") from None
    present, needed = [], []
    for blob in blobs:
        kind = blob.local_type if blob.local_type == mt.LOCAL_LAYER else None
        (present if store.has_blob(blob.local_digest, kind) else needed).append(blob)
    _check_space(store, partial, needed, ref)
    fetched: dict[str, Path] = {}
    for blob in needed:
        dest = partial / f"{blob.remote_digest.split(':', 1)[1]}.verified"
        if not dest.exists():
            client.download_blob(repo, blob.remote_digest, dest, partial_dir=partial, size=blob.remote_size,
                                 progress=_sub(progress, f"download {_short(blob.remote_digest)}"))
        if blob.compressed:
            _check_decompressed(dest, blob, progress)
        fetched[blob.local_digest] = dest

    faults.point("pull.after-download")

    # -- phase 2: ingest into the store, then the manifest (one index update)
    published: list[tuple[str, str | None]] = []
    try:
        with store.session("pull") as work:
            if not store.has_blob(config_desc["digest"]):
                published.append((config_desc["digest"], None))
                store.ingest_blob(config_desc["digest"], io.BytesIO(config_bytes), size=config_desc["size"],
                                  session=work)
            else:
                work.pin(config_desc["digest"])
            for blob in blobs:
                kind = blob.local_type if blob.local_type == mt.LOCAL_LAYER else None
                if blob.local_digest not in fetched or store.has_blob(blob.local_digest, kind):
                    work.pin(blob.local_digest)
                    continue
                published.append((blob.local_digest, kind))
                with open(fetched[blob.local_digest], "rb") as fh:
                    stream = compress.DecompressReader(fh, max_size=blob.local_size) if blob.compressed else fh
                    store.ingest_blob(blob.local_digest, stream, media_type=kind, size=blob.local_size,
                                      session=work, progress=_counted(progress, f"extract {_short(blob.local_digest)}",
                                                                      blob.local_size))
            faults.point("pull.after-ingest")
            image = store.put_manifest(local, local_ref)
    except BaseException:
        _rollback(store, published)
        raise
    for path in fetched.values():
        path.unlink(missing_ok=True)
    return PullResult(ref, mdigest, image, client.bytes_downloaded - before,
                      downloaded=[b.local_digest for b in needed], present=[b.local_digest for b in present])


PULL_RESERVE = 64 << 20  # free space a pull leaves on the store's file system


def _check_space(store, partial: Path, needed: list[RemoteBlob], ref) -> None:
    """Refuse a pull that cannot fit before a byte is downloaded: the download (in the cache) and
    the layers it becomes (in the store) both need room until the end."""
    want = sum(b.remote_size for b in needed) + sum(b.local_size for b in needed)
    free = shutil.disk_usage(partial).free
    if want + PULL_RESERVE > free:
        raise ResourceError(f"{ref}: the pull needs {want >> 20} MiB, only {free >> 20} MiB are free under "
                            f"{store.data_root} (vmctl keeps {PULL_RESERVE >> 20} MiB free); nothing was changed")


def _check_decompressed(path: Path, blob: RemoteBlob, progress: Progress | None) -> None:
    """Decompress a verified download to nowhere: the bytes must be what the manifest announced."""
    try:
        with open(path, "rb") as fh:
            reader = compress.DecompressReader(fh, max_size=blob.local_size)
            while reader.read():
                if progress:
                    progress(f"verify {_short(blob.local_digest)}", reader.size, blob.local_size)
            reader.check(blob.local_digest, blob.local_size)
    except IntegrityError:
        path.unlink(missing_ok=True)
        raise


def _rollback(store, published: list[tuple[str, str | None]]) -> None:
    """Remove blobs this pull published that no image references."""
    store.discard_unreferenced(published)


# ------------------------------------------------------------------ search
@dataclass(frozen=True)
class SearchHit:
    repo: str
    tags: tuple[str, ...]


def search(client: RegistryClient, term: str, *, with_tags: bool = True, limit: int = 100) -> list[SearchHit]:
    """Repositories of the registry's catalog whose name contains `term` (case-insensitive)."""
    term = (term or "").lower()
    hits = []
    try:
        repos = client.catalog()
    except NotFoundError:
        raise RegistryError(f"{client.host} does not offer a catalog of its repositories; "
                            "search needs one (name the repository instead)") from None
    for repo in sorted(repos):
        if term in repo.lower():
            tags: tuple[str, ...] = ()
            if with_tags:
                try:
                    tags = tuple(sorted(client.list_tags(repo)))
                except NotFoundError:
                    tags = ()
            hits.append(SearchHit(repo, tags))
            if len(hits) >= limit:
                break
    return hits


def push_args(ref: str, dest: str | None = None) -> tuple[str, RegistryRef]:
    """``vmctl push REF [DEST]`` -> (local image reference, registry reference).

    With DEST, REF is any local reference and DEST the registry reference. Without DEST, REF must be
    a registry reference and the local image is the one of that name (``HOST/REPO:TAG``, as a pull
    names it; see :attr:`RegistryRef.local_name`). The CLI falls back to ``REPO:TAG`` when the
    store has no image of the full name.
    """
    if dest is not None:
        return ref, require_registry_ref(dest)
    remote = require_registry_ref(ref)
    if remote.digest:
        raise UsageError(f"{ref}: push to a tag, not a digest")
    return f"{remote.local_name}:{remote.tag}", remote
