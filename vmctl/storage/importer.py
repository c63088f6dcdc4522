"""Turning files into store layers, inside a work dir and outside the store lock.

Every layer is a fresh qcow2 written by ``qemu-img convert`` (never the user's file itself), so its
bytes depend only on the guest-visible content and the qemu-img version, which makes the layer
digest, and with it the image id, stable across re-imports of the same file.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vmctl.errors import IntegrityError, ResourceError, UsageError
from vmctl.fsutil import fsync_file
from vmctl.storage import probe, qemu_img
from vmctl.storage.digest import of_file

# phase ("check", "convert", "hash", "copy", "publish"), done, total (bytes; total 0 = unknown)
Progress = Callable[[str, int, int], None]

LAYER_OPTIONS = {"compat": "1.1", "cluster_size": "65536"}


@dataclass(frozen=True)
class PreparedLayer:
    tmp: Path
    digest: str
    size: int
    virtual_size: int


def _emit(progress: Progress | None, phase: str, done: int, total: int) -> None:
    if progress is not None:
        progress(phase, done, total)


def source_format(disk: Path, fmt: str = "auto") -> str:
    probe.check_input_file(disk)
    if fmt == "auto":
        return probe.detect_format(disk)
    if fmt not in qemu_img.FORMATS:
        raise UsageError(f"unsupported input format {fmt!r}: use qcow2 or raw")
    if fmt == "qcow2":
        probe.read_qcow2_header(disk)  # the promised header must be there
    elif disk.is_file() and disk.stat().st_size == 0:
        raise UsageError(f"{disk} is empty")
    return fmt


def check_source(disk: Path, fmt: str) -> int:
    """Refuse inputs that reach outside themselves; return the virtual size."""
    if fmt == "qcow2":
        probe.check_standalone_qcow2(disk)
    info = qemu_img.info(disk, fmt)
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise UsageError(f"{disk} has a backing file ({info.get('backing-filename')}); refused")
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise UsageError(f"{disk} uses an external data file ({data['data-file']}); refused")
    if data.get("encrypt") or info.get("encrypted"):
        raise UsageError(f"{disk} is encrypted; refused")
    size = int(info.get("virtual-size") or 0)
    if size <= 0:
        raise UsageError(f"{disk} has no content (virtual size 0)")
    return size


def _check_space(src: Path, fmt: str, work_dir: Path) -> None:
    try:
        need = int(qemu_img.measure(src, fmt, options=LAYER_OPTIONS)["required"])
    except (KeyError, ValueError):
        return
    free = shutil.disk_usage(work_dir).free
    if need > free:
        raise ResourceError(
            f"not enough space to import {src}: the layer needs about {need} bytes, "
            f"{free} are free under {work_dir}"
        )


def _hash(tmp: Path, progress: Progress | None) -> tuple[str, int]:
    """Hash the new layer while a second thread fsyncs it (both release the GIL): publishing
    needs it durable anyway, and on two CPUs the flush then costs next to nothing."""
    total = tmp.stat().st_size
    _emit(progress, "hash", 0, total)
    flusher = threading.Thread(target=fsync_file, args=(tmp,), daemon=True)
    flusher.start()
    try:
        digest, size = of_file(tmp, (lambda n: _emit(progress, "hash", n, total)) if progress else None)
    finally:
        flusher.join()
    return digest, size


def _verify_layer(tmp: Path, allowed_backing: str | None) -> None:
    probe.check_standalone_qcow2(tmp, allowed_backing=allowed_backing)
    report = qemu_img.check(qemu_img.no_backing_spec(tmp), spec=True)
    if not qemu_img.is_clean(report):
        raise IntegrityError(f"new layer {tmp.name} failed qemu-img check: {report}")


def prepare_base_layer(disk: Path, work_dir: Path, *, fmt: str = "auto",
                       progress: Progress | None = None) -> PreparedLayer:
    """Convert a standalone qcow2 or raw disk into a fresh qcow2 base layer in `work_dir`."""
    disk = Path(disk)
    _emit(progress, "check", 0, 0)
    fmt = source_format(disk, fmt)
    virtual = check_source(disk, fmt)
    _check_space(disk, fmt, work_dir)
    tmp = work_dir / "layer.qcow2"
    _emit(progress, "convert", 0, virtual)
    qemu_img.convert(
        disk, tmp, src_fmt=fmt, options=LAYER_OPTIONS,
        progress=(lambda pct: _emit(progress, "convert", int(virtual * pct / 100), virtual))
        if progress else None,
    )
    _verify_layer(tmp, None)
    digest, size = _hash(tmp, progress)
    return PreparedLayer(tmp, digest, size, virtual)


def prepare_overlay_layer(overlay: Path, parent_layer: Path, work_dir: Path, *,
                          progress: Progress | None = None) -> PreparedLayer:
    """Copy the top of `overlay` (an instance disk on `parent_layer`) into a layer in `work_dir`.

    ``qemu-img convert -B`` writes only what the overlay itself holds (explicit zeroes included),
    then ``rebase -u`` renames the backing file to the parent's relative layer name, so the result
    is position independent.
    """
    overlay = Path(overlay)
    hdr = probe.read_qcow2_header(overlay)
    if hdr.data_file is not None or hdr.crypt_method:
        raise UsageError(f"{overlay} uses a data file or encryption; refused")
    info = qemu_img.info(overlay, "qcow2", force_share=False)
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if not backing:
        raise UsageError(f"{overlay} has no backing file: nothing to commit onto the parent")
    if info.get("backing-filename-format", "qcow2") != "qcow2":
        raise UsageError(f"{overlay}: its backing file is not qcow2")
    if os.path.realpath(os.path.join(overlay.parent, backing)) != os.path.realpath(parent_layer):
        raise UsageError(
            f"{overlay} is not an overlay of the parent's top layer ({parent_layer.name}); refused"
        )
    virtual = int(info["virtual-size"])
    tmp = work_dir / "layer.qcow2"
    _emit(progress, "convert", 0, virtual)
    qemu_img.convert(
        overlay, tmp, src_fmt="qcow2", options=LAYER_OPTIONS,
        backing=Path(parent_layer).resolve(), backing_fmt="qcow2",
        progress=(lambda pct: _emit(progress, "convert", int(virtual * pct / 100), virtual))
        if progress else None,
    )
    qemu_img.rebase(tmp, parent_layer.name, "qcow2", unsafe=True)
    _verify_layer(tmp, parent_layer.name)
    digest, size = _hash(tmp, progress)
    return PreparedLayer(tmp, digest, size, virtual)
