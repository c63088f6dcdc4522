"""Files on a libvirt host through its storage API: directory pools, volume upload/download,
overlays made by the host's libvirt (its own ``qemu-img``).

vmctl keeps a host's files in two directory pools under the host's data root (`ensure_pool`):
one for image layers and kernels, one for the instances' overlays, seeds and serial logs. Nothing
here needs a shell or a file system shared with the host: every byte goes through the libvirt
connection (``virStorageVolUpload``/``Download`` streams), so the same code serves ``qemu+ssh://``,
``qemu+tls://`` and ``qemu+tcp://`` hosts.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Callable

import libvirt
from lxml import etree

from vmctl.backend.errors import libvirt_errors, translate
from vmctl.errors import IntegrityError, LibvirtError, NotFoundError, ResourceError

CHUNK = 1 << 20
Progress = Callable[[int], None]   # bytes moved so far


@dataclass(frozen=True)
class Volume:
    name: str
    path: str
    capacity: int     # virtual size (qcow2) or bytes (raw)
    physical: int     # bytes of the file


def _pool_xml(name: str, path: str, mode: int) -> str:
    pool = etree.Element("pool", type="dir")
    etree.SubElement(pool, "name").text = name
    target = etree.SubElement(pool, "target")
    etree.SubElement(target, "path").text = path
    perms = etree.SubElement(target, "permissions")
    etree.SubElement(perms, "mode").text = f"0{mode:o}"
    return etree.tostring(pool, encoding="unicode")


def ensure_pool(backend, name: str, path: str, *, mode: int = 0o711) -> None:
    """Make directory pool `name` at `path` exist, built, started and autostarted (idempotent).

    The directory is the host's; 0711 lets QEMU's user (``libvirt-qemu``) reach the files libvirt
    labels for it, and list nothing."""
    conn = backend.raw
    with libvirt_errors(f"storage pool {name}"):
        try:
            pool = conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise
            pool = conn.storagePoolDefineXML(_pool_xml(name, path, mode), 0)
            pool.build(0)
        if pool.XMLDesc(0) and _pool_path(pool) != path:
            raise LibvirtError(f"storage pool {name} on {backend.uri} is at {_pool_path(pool)}, not {path}")
        if not pool.isActive():
            pool.create(0)
        if not pool.autostart():
            pool.setAutostart(1)


def remove_pool(backend, name: str) -> None:
    """Stop and undefine pool `name` (its directory stays, with whatever is left in it)."""
    with libvirt_errors(f"storage pool {name}"):
        try:
            pool = backend.raw.storagePoolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                return
            raise
        if pool.isActive():
            pool.destroy()
        pool.undefine()


def _pool_path(pool) -> str:
    return etree.fromstring(pool.XMLDesc(0).encode()).findtext("target/path")


def _pool(backend, name: str, *, refresh: bool = False):
    try:
        pool = backend.raw.storagePoolLookupByName(name)
        if refresh:
            pool.refresh(0)
        return pool
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise NotFoundError(f"{backend.uri} has no storage pool {name}: add the host again "
                                "with 'vmctl host add'") from None
        raise translate(exc, f"storage pool {name}") from exc


def _info(vol) -> Volume:
    _kind, capacity, _alloc = vol.info()
    try:
        _kind, _cap, physical = vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)
    except (libvirt.libvirtError, AttributeError):
        physical = _alloc
    return Volume(vol.name(), vol.path(), capacity, physical)


def volumes(backend, pool: str) -> dict[str, Volume]:
    """Every volume of `pool` by name (the directory read again first)."""
    p = _pool(backend, pool, refresh=True)
    with libvirt_errors(f"volumes of {pool}"):
        return {v.name(): _info(v) for v in p.listAllVolumes(0)}


def mtimes(backend, pool: str) -> dict[str, float | None]:
    """When each volume of `pool` was last modified (seconds since the epoch, the host's clock),
    from the timestamps libvirt reports for files of a directory pool; None where it says nothing
    (the caller must not take such a file for an old one)."""
    p = _pool(backend, pool, refresh=True)
    out: dict[str, float | None] = {}
    with libvirt_errors(f"volumes of {pool}"):
        for v in p.listAllVolumes(0):
            text = etree.fromstring(v.XMLDesc(0).encode()).findtext("target/timestamps/mtime")
            try:
                out[v.name()] = float(text)
            except (TypeError, ValueError):
                out[v.name()] = None
    return out


def volume(backend, pool: str, name: str, *, refresh: bool = False) -> Volume | None:
    """Volume `name` of `pool`, or None."""
    if refresh:
        _pool(backend, pool, refresh=True)
    vol = _lookup(backend, pool, name)
    return None if vol is None else _info(vol)


def qemu_owner(backend) -> tuple[int, int] | None:
    """The (uid, gid) QEMU runs as on the host: the DAC base label of its capabilities (libvirt
    writes ``+64055:+64055``), or None when it does not say."""
    with libvirt_errors("capabilities"):
        caps = etree.fromstring(backend.raw.getCapabilities().encode())
    for label in caps.xpath("host/secmodel[model='dac']/baselabel"):
        uid, _, gid = (label.text or "").partition(":")
        try:
            return int(uid.lstrip("+")), int(gid.lstrip("+"))
        except ValueError:
            continue
    return None


def _volume_xml(name: str, capacity: int, fmt: str, mode: int, backing: str | None = None,
                owner: tuple[int, int] | None = None) -> str:
    vol = etree.Element("volume")
    etree.SubElement(vol, "name").text = name
    etree.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    etree.SubElement(vol, "allocation", unit="bytes").text = "0"
    target = etree.SubElement(vol, "target")
    etree.SubElement(target, "format", type=fmt)
    perms = etree.SubElement(target, "permissions")
    etree.SubElement(perms, "mode").text = f"0{mode:o}"
    if owner is not None:
        etree.SubElement(perms, "owner").text = str(owner[0])
        etree.SubElement(perms, "group").text = str(owner[1])
    if backing:
        bs = etree.SubElement(vol, "backingStore")
        etree.SubElement(bs, "path").text = backing
        etree.SubElement(bs, "format", type="qcow2")
    return etree.tostring(vol, encoding="unicode")


def _quietly(call) -> None:
    """`call()` while another error is on its way: libvirt's own failure here says nothing more."""
    try:
        call()
    except libvirt.libvirtError:
        pass


def _lookup(backend, pool: str, name: str):
    """Volume `name` of `pool` (libvirt's object), or None."""
    try:
        return _pool(backend, pool).storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise translate(exc, f"volume {name}") from exc


def delete(backend, pool: str, name: str) -> bool:
    """Delete volume `name` of `pool`; False when there was none."""
    vol = _lookup(backend, pool, name)
    if vol is None:
        return False
    with libvirt_errors(f"delete {name}"):
        vol.delete(0)
    return True


def create_overlay(backend, pool: str, name: str, backing: str, capacity: int, *,
                   owner: tuple[int, int] | None = None) -> Volume:
    """A new qcow2 volume backed by `backing` (a qcow2 path on the host), made by the host's
    libvirt (``qemu-img create -F qcow2``), readable and writable by its owner only."""
    p = _pool(backend, pool)
    with libvirt_errors(f"create {name}"):
        vol = p.createXML(_volume_xml(name, capacity, "qcow2", 0o600, backing, owner), 0)
    return _info(vol)


def upload(backend, pool: str, name: str, src: BinaryIO, size: int, *, mode: int = 0o600,
           owner: tuple[int, int] | None = None, progress: Progress | None = None) -> Volume:
    """A new raw volume `name` holding the `size` bytes read from `src` (streamed, `CHUNK` at a
    time). A failed upload deletes what it made; a volume of that name already there is a
    ConflictError."""
    p = _pool(backend, pool)
    with libvirt_errors(f"create {name}"):
        vol = p.createXML(_volume_xml(name, size, "raw", mode, owner=owner), 0)
    stream = backend.raw.newStream(0)
    sent = 0
    try:
        with libvirt_errors(f"upload {name}"):
            vol.upload(stream, 0, size, 0)
            while sent < size:
                chunk = src.read(min(CHUNK, size - sent))
                if not chunk:
                    raise IntegrityError(f"upload {name}: the source ended after {sent} of {size} bytes")
                _send_all(stream, chunk, f"upload {name}")
                sent += len(chunk)
                if progress:
                    progress(sent)
            stream.finish()
    except BaseException:
        _quietly(stream.abort)
        _quietly(lambda: vol.delete(0))
        raise
    return _info(vol)


def _send_all(stream, data: bytes, what: str) -> None:
    """All of `data` into a libvirt stream (``send`` may take part of it)."""
    view = memoryview(data)
    while view:
        n = stream.send(view.tobytes())
        if n < 0:
            raise LibvirtError(f"{what}: the stream refused data")
        view = view[n:]


def download(backend, pool: str, name: str, sink: Callable[[bytes], None], *, offset: int = 0,
             limit: int, length: int = 0, progress: Progress | None = None) -> int:
    """Stream volume `name` from `offset` into `sink` (to its end, or `length` bytes when not 0);
    at most `limit` bytes are accepted (a longer volume is a ResourceError, raised before the
    excess is passed on). Returns the bytes read."""
    vol = _lookup(backend, pool, name)
    if vol is None:
        raise NotFoundError(f"{backend.uri} has no volume {name}")
    stream = backend.raw.newStream(0)
    got = 0
    try:
        with libvirt_errors(f"download {name}"):
            vol.download(stream, offset, length, 0)
            while True:
                data = stream.recv(CHUNK)
                if isinstance(data, int):   # -2, "would block": only non-blocking streams say it
                    raise LibvirtError(f"download {name}: the stream answered {data}")
                if not data:
                    break
                got += len(data)
                if got > limit:
                    raise ResourceError(f"{name} on {backend.uri} is larger than {limit} bytes")
                sink(data)
                if progress:
                    progress(got)
            stream.finish()
    except BaseException:
        _quietly(stream.abort)
        raise
    return got


def read_range(backend, pool: str, name: str, offset: int, length: int) -> bytes:
    """At most `length` bytes of volume `name` from `offset` (fewer where the volume ends)."""
    parts: list[bytes] = []
    if length > 0:
        download(backend, pool, name, parts.append, offset=offset, length=length, limit=length)
    return b"".join(parts)


def rewrite(backend, pool: str, name: str, data: bytes, *, mode: int = 0o600) -> None:
    """Put `data` at the start of volume `name`, made (raw, `len(data)` bytes) when missing.
    An existing volume is written over in place, not deleted and made again: a small `data` is
    one write on the host, so a reader sees the old bytes or the new ones. The caller pads
    `data` to the volume's size (bytes past it are left as they were)."""
    vol = _lookup(backend, pool, name)
    if vol is None:
        with libvirt_errors(f"create {name}"):
            vol = _pool(backend, pool).createXML(_volume_xml(name, len(data), "raw", mode), 0)
    stream = backend.raw.newStream(0)
    try:
        with libvirt_errors(f"write {name}"):
            vol.upload(stream, 0, len(data), 0)
            _send_all(stream, data, f"write {name}")
            stream.finish()
    except BaseException:
        _quietly(stream.abort)
        raise


def available(backend, pool: str) -> int:
    """Bytes free on the file system of `pool` on the host (as libvirt reports it)."""
    p = _pool(backend, pool, refresh=True)
    with libvirt_errors(f"storage pool {pool}"):
        return int(p.info()[3])


def copy_between(src_backend, src_pool: str, dst_backend, dst_pool: str, name: str, size: int, *,
                 digest: str | None = None, mode: int = 0o600, owner: tuple[int, int] | None = None,
                 progress: Progress | None = None) -> Volume:
    """Volume `name` of one host copied into `dst_pool` of another through this process: spooled
    to a temporary file (at most `size` bytes accepted), checked against `digest` (``sha256:...``)
    when given -- IntegrityError, nothing made -- and uploaded.

    Spooled rather than piped: libvirt's streams block and vmctl runs no event loop, so one
    stream is drained before the other is fed."""
    hasher = hashlib.sha256()
    with tempfile.TemporaryFile() as spool:
        def sink(data: bytes) -> None:
            hasher.update(data)
            spool.write(data)

        length = download(src_backend, src_pool, name, sink, limit=size)
        if digest is not None and f"sha256:{hasher.hexdigest()}" != digest:
            raise IntegrityError(f"{name} on {src_backend.uri} does not match its digest {digest}")
        spool.seek(0)
        return upload(dst_backend, dst_pool, name, spool, length, mode=mode, owner=owner, progress=progress)
