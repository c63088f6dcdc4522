"""KubeVirt containerDisks: a VM disk inside a plain container image, both ways.

KubeVirt's convention (``containerDisk`` volumes, kubevirt.io/user-guide "Container Disk"): a
container image whose filesystem holds exactly one disk file, qcow2 or raw, under ``/disk/``,
owned by uid/gid 107 (QEMU's user in virt-launcher), e.g. built with
``FROM scratch`` + ``ADD --chown=107:107 disk.qcow2 /disk/``.

Push (``vmctl push --containerdisk REF DEST``): the image's layers are squashed into one standalone
qcow2 (``qemu-img convert``, backing format explicit), put in a tar as ``disk/disk.qcow2``
(uid/gid 107, mode 0440, directory ``disk/`` 0555, mtime 0: the same image always gives the same
tar), gzip-compressed (``application/vnd.oci.image.layer.v1.tar+gzip``: every container runtime
reads it; gzip level 1, no name, mtime 0), with an OCI image config (``os: linux``, the image's
architecture, ``rootfs.diff_ids`` = sha256 of the uncompressed tar) and a plain OCI image manifest.
vmctl's own facts (user, cloud-init, firmware) travel as config labels ``vmctl.*``. Everything is
streamed through temporary files: memory stays flat whatever the disk size.

Pull: a manifest (OCI or Docker schema 2; from an index, the linux entry for this architecture)
whose config is a container image config and whose layers are tars (plain, gzip or zstd) is a
containerDisk. Every layer blob is downloaded and verified against its digest (resumable, as for
vmctl images); the layers are then read in order and the last regular file under ``disk/``
wins (later layers override earlier ones; an OCI whiteout ``disk/.wh.NAME`` deletes). The file is
extracted to a temporary file and imported as a firmware-boot cloud-init image (qcow2 or raw, the
store checks it), so the store changes only when everything succeeded.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import zstandard

from vmctl.errors import IntegrityError, NotFoundError, RegistryError, ResourceError, UsageError
from vmctl.fsutil import private_dirs
from vmctl.registry import answers
from vmctl.registry import mediatypes as mt
from vmctl.registry.client import RegistryClient
from vmctl.registry.refs import RegistryRef
from vmctl.registry.transfer import PushResult, cache_root
from vmctl.storage import qemu_img
from vmctl.storage.digest import canonical_json
from vmctl.storage.manifest import host_architecture, normalize_created
from vmctl.storage.refs import parse_name
from vmctl.tarstream import TarReader

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER_TAR + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER_TAR + "+zstd"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
LAYER_TYPES = {OCI_LAYER_TAR: "tar", DOCKER_LAYER_TAR: "tar", OCI_LAYER_GZIP: "gzip",
               DOCKER_LAYER_GZIP: "gzip", OCI_LAYER_ZSTD: "zstd"}
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)

DISK_DIR = "disk"
DISK_NAME = "disk/disk.qcow2"
QEMU_UID = QEMU_GID = 107
CHUNK = 1 << 20
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}

ANN_TITLE = "org.opencontainers.image.title"
LABEL_USER = "vmctl.user"
LABEL_CLOUD_INIT = "vmctl.cloud-init"
LABEL_FIRMWARE = "vmctl.firmware"
LABEL_IMAGE_ID = "vmctl.image.id"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(obj) -> bytes:
    return canonical_json(obj)


# ------------------------------------------------------------------ classify
def is_containerdisk_manifest(doc: dict) -> bool:
    config = doc.get("config") if isinstance(doc, dict) else None
    layers = doc.get("layers") if isinstance(doc, dict) else None
    return (isinstance(config, dict) and config.get("mediaType") in CONFIG_TYPES
            and isinstance(layers, list) and bool(layers)
            and all(isinstance(d, dict) and d.get("mediaType") in LAYER_TYPES for d in layers))


def _host_arch() -> str:
    return _ARCH.get(host_architecture(), host_architecture())


def classify(client: RegistryClient, ref: RegistryRef) -> str:
    """"vmctl" or "containerdisk" for what `ref` names (the manifest decides; an index is looked into)."""
    data, media_type, _ = client.get_manifest(ref.repo, ref.reference, accept=mt.MANIFEST_ACCEPT)
    doc = _json(data)
    if media_type in (mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST) or "manifests" in doc:
        entries = answers.index_entries(doc, f"{ref}: index")
        if any(e["artifactType"] == mt.ARTIFACT_TYPE for e in entries):
            return "vmctl"
        return "containerdisk" if _pick_platform(doc, str(ref)) else "vmctl"
    return "containerdisk" if is_containerdisk_manifest(doc) else "vmctl"


def _created(value) -> str | int:
    """The image config's creation time as the store takes it, or 0 when it is not a time."""
    if isinstance(value, str) and len(value) >= 19:
        value = value[:19] + "Z"   # drop sub-seconds and offsets the store would not parse
    try:
        return normalize_created(value) if isinstance(value, str) else 0
    except UsageError:
        return 0


def _json(data: bytes) -> dict:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError("manifest is not JSON") from None
    return answers.as_dict(doc, "manifest")


def _pick_platform(index: dict, what: str = "index") -> dict | None:
    arch = _host_arch()
    for entry in answers.index_entries(index, what):
        plat = entry["platform"]
        if plat.get("os", "linux") == "linux" and plat.get("architecture") == arch:
            return entry
    return None


# ------------------------------------------------------------------ push


class _HashWriter:
    """A file-like sink that hashes and counts what passes through it to `out`."""

    def __init__(self, out):
        self.out, self.h, self.size = out, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.h.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def build_layer(disk: Path, dest: Path, *, name: str = DISK_NAME, progress=None) -> tuple[str, int, str]:
    """Write the gzip'd layer tar holding `disk` as `name` to `dest`, streaming.

    Returns (compressed digest, compressed size, diff_id = digest of the uncompressed tar).
    """
    total = disk.stat().st_size
    with open(dest, "wb") as raw:
        outer = _HashWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=outer, compresslevel=1, mtime=0) as gz:
            inner = _HashWriter(gz)
            with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                d = tarfile.TarInfo(DISK_DIR)
                d.type, d.mode, d.uid, d.gid, d.mtime = tarfile.DIRTYPE, 0o555, QEMU_UID, QEMU_GID, 0
                tar.addfile(d)
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.uid, info.gid, info.mtime = total, 0o440, QEMU_UID, QEMU_GID, 0
                with open(disk, "rb") as fh:
                    tar.addfile(info, _Progressing(fh, total, progress))
        raw.flush()
        os.fsync(raw.fileno())
    return outer.digest, outer.size, inner.digest


class _Progressing:
    def __init__(self, fh, total, progress):
        self.fh, self.total, self.progress, self.done = fh, total, progress, 0

    def read(self, n=-1):
        data = self.fh.read(n)
        self.done += len(data)
        if self.progress:
            self.progress("containerdisk layer", self.done, self.total)
        return data


def push(store, local_ref: str, dest: RegistryRef, client: RegistryClient, *, progress=None) -> PushResult:
    """Push image `local_ref` as a containerDisk to `dest`."""
    if dest.digest:
        raise UsageError(f"{dest}: push to a tag, not a digest")
    image = store.resolve(local_ref)
    if image.boot_kind != "firmware":
        raise UsageError(
            f"image {local_ref} boots a kernel directly (kernel/initrd outside the disk); a containerDisk "
            "carries only the disk, which must boot by itself (a firmware-boot image)"
        )
    work = cache_root(store) / "tmp"
    private_dirs(work)
    stem = work / f"containerdisk.{os.getpid()}.{os.urandom(4).hex()}"
    flat, layer = stem.with_suffix(".qcow2"), stem.with_suffix(".tar.gz")
    before = client.bytes_uploaded
    statuses = []
    try:
        qemu_img.convert(image.top_layer, flat, src_fmt="qcow2", dst_fmt="qcow2",
                         progress=(lambda pct: progress("squash", int(pct), 100)) if progress else None)
        digest, size, diff_id = build_layer(flat, layer, progress=progress)
        flat.unlink()
        labels = {LABEL_IMAGE_ID: image.id, LABEL_CLOUD_INIT: str(bool(image.cloud_init)).lower(),
                  LABEL_FIRMWARE: image.firmware or "bios"}
        if image.user:
            labels[LABEL_USER] = image.user
        config = _canonical({
            "architecture": _ARCH.get(image.architecture, image.architecture), "os": "linux",
            "created": image.created,
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": image.created, "created_by": f"vmctl push --containerdisk ({image.id})"}],
        })
        status = client.upload_blob(dest.repo, digest, layer, size,
                                    progress=(lambda d, t: progress("upload layer", d, t)) if progress else None)
        statuses.append(("layer", digest, status))
        status = client.upload_blob(dest.repo, _sha(config), io.BytesIO(config), len(config))
        statuses.append(("config", _sha(config), status))
    finally:
        flat.unlink(missing_ok=True)
        layer.unlink(missing_ok=True)
    manifest = _canonical({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size,
                    "annotations": {ANN_TITLE: DISK_NAME}}],
    })
    mdigest = client.put_manifest(dest.repo, dest.tag, manifest, mt.OCI_MANIFEST)
    return PushResult(dest, mdigest, image.id, client.bytes_uploaded - before, statuses)


# ------------------------------------------------------------------ pull
@dataclass
class PullResult:
    ref: RegistryRef
    manifest_digest: str
    image: object
    bytes_downloaded: int
    layers: int
    disk_name: str


def _open_layer(path: Path, kind: str):
    fh = open(path, "rb")
    if kind == "gzip":
        return fh, gzip.GzipFile(fileobj=fh, mode="rb")
    if kind == "zstd":
        return fh, zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
    return fh, fh


def _disk_entry(name: str) -> str | None:
    """The path under disk/ a tar member names (``./disk/x`` and ``/disk/x`` too), else None."""
    n = name.lstrip("./") if name.startswith("./") else name.lstrip("/")
    if n.startswith(DISK_DIR + "/") and n.count("/") == 1 and len(n) > len(DISK_DIR) + 1:
        return n
    return None


def find_disk(layers: list[tuple[Path, str]]) -> tuple[int, str]:
    """Which layer (index) holds the disk file that wins, and its name. Reads the tars once,
    with vmctl's bounded tar reader (no data is read, only headers)."""
    found: tuple[int, str] | None = None
    for i, (path, kind) in enumerate(layers):
        fh, stream = _open_layer(path, kind)
        try:
            for member, _data in TarReader(stream, what=f"containerDisk layer {i + 1}"):
                name = _disk_entry(member.name)
                if name is None:
                    continue
                base = name.split("/", 1)[1]
                if base.startswith(".wh."):
                    if found and found[1] == f"{DISK_DIR}/{base[4:]}":
                        found = None
                    continue
                if member.isreg:
                    found = (i, name)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise IntegrityError(f"containerDisk layer {i + 1} is not a readable tar ({exc})") from None
        finally:
            fh.close()
    if found is None:
        raise IntegrityError("not a containerDisk: no file under /disk/ in the image's layers")
    return found


def extract_disk(path: Path, kind: str, name: str, dest: Path, progress=None) -> None:
    """Copy the last regular `name` of a layer to `dest`, after checking that the size its header
    declares fits on the file system (a small gzip layer may unpack to terabytes)."""
    fh, stream = _open_layer(path, kind)
    try:
        last = None
        for member, src in TarReader(stream, what="containerDisk layer"):
            if _disk_entry(member.name) != name or not member.isreg:
                continue
            last = member
            free = shutil.disk_usage(dest.parent).free
            if member.size + (64 << 20) > free:
                raise ResourceError(f"containerDisk: {name} is {member.size} bytes, only {free} are free "
                                    f"under {dest.parent}; nothing was imported")
            done = 0
            with open(dest, "wb") as out:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress("extract disk", done, member.size)
        if last is None:
            raise IntegrityError(f"containerDisk: {name} vanished from its layer")
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise IntegrityError(f"containerDisk layer is not a readable tar ({exc})") from None
    finally:
        fh.close()


def pull(store, ref: RegistryRef, client: RegistryClient, *, local_ref: str | None,
         user: str | None = None, progress=None) -> PullResult:
    """Pull the containerDisk `ref` into `store` as a firmware-boot cloud-init image."""
    if local_ref:
        parse_name(local_ref)
    repo = ref.repo
    data, media_type, mdigest = client.get_manifest(repo, ref.reference, accept=mt.MANIFEST_ACCEPT)
    doc = _json(data)
    if "manifests" in doc:
        entry = _pick_platform(doc, str(ref))
        if entry is None:
            raise NotFoundError(f"{ref}: the index lists no linux/{_host_arch()} image")
        data, _, mdigest = client.get_manifest(repo, entry["digest"], accept=mt.MANIFEST_ACCEPT)
        doc = _json(data)
    if not is_containerdisk_manifest(doc):
        raise RegistryError(f"{ref}: not a containerDisk (a container image with layer tars)")
    for desc in [doc["config"], *answers.as_list(doc["layers"], f"{ref}: layers", limit=256)]:
        answers.descriptor(desc, f"{ref}: manifest")
    before = client.bytes_downloaded
    config = _json(client.get_blob_bytes(repo, doc["config"]["digest"]))
    inner = config.get("config") or {}
    labels = answers.as_dict(inner, f"{ref}: image config").get("Labels") or {}
    labels = {k: v for k, v in answers.as_dict(labels, f"{ref}: image labels").items()
              if isinstance(k, str) and isinstance(v, str)}
    partial = cache_root(store) / "partial"
    private_dirs(partial)
    layers: list[tuple[Path, str]] = []
    fetched: list[Path] = []
    work = cache_root(store) / "tmp"
    private_dirs(work)
    disk_tmp = work / f"containerdisk-pull.{os.getpid()}.{os.urandom(4).hex()}.disk"
    try:
        for desc in doc["layers"]:
            dest = partial / f"{desc['digest'].split(':', 1)[1]}.verified"
            if not dest.exists():
                client.download_blob(repo, desc["digest"], dest, partial_dir=partial, size=desc["size"],
                                     progress=(lambda d, t: progress("download layer", d, t)) if progress else None)
            fetched.append(dest)
            layers.append((dest, LAYER_TYPES[desc["mediaType"]]))
        index, name = find_disk(layers)
        extract_disk(*layers[index], name, disk_tmp, progress)
        created = _created(config.get("created"))
        temp_tag = f"{ref.local_name}:pulling-{mdigest.split(':', 1)[1][:12]}"
        image = store.import_image(
            disk_tmp, local_ref or temp_tag,
            firmware=labels.get(LABEL_FIRMWARE, "bios") if labels.get(LABEL_FIRMWARE) in ("bios", "uefi") else "bios",
            cloud_init=labels.get(LABEL_CLOUD_INIT, "true") != "false",
            user=user or labels.get(LABEL_USER) or "root",
            labels={"vmctl.containerdisk.source": f"{ref.name}@{mdigest}"},
            created=created, created_by="vmctl pull (containerDisk)", comment=str(ref),
            progress=(lambda ph, d, t: progress(ph, d, t)) if progress else None,
        )
        if not local_ref:
            store.untag(temp_tag)   # pulled by digest: untagged, as Docker leaves it
    finally:
        disk_tmp.unlink(missing_ok=True)
    for path in fetched:
        path.unlink(missing_ok=True)
    return PullResult(ref, mdigest, image, client.bytes_downloaded - before, len(layers), name)
