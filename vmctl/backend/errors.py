"""Translate libvirt's exceptions into vmctl's error hierarchy."""

from __future__ import annotations

import contextlib

import libvirt

from vmctl.errors import ConflictError, LibvirtError, LibvirtUnreachable, NotFoundError, ResourceError, VmctlError

# libvirt prints every error to stderr by default; vmctl reports errors itself, once.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    libvirt.VIR_ERR_NO_NETWORK,
    getattr(libvirt, "VIR_ERR_NO_DOMAIN_CHECKPOINT", -1),
}
_CONFLICT = {libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_DOM_EXIST}
_UNREACHABLE = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC}


def translate(exc: libvirt.libvirtError, what: str = "") -> VmctlError:
    """Return the vmctl error for a libvirt exception (prefixing `what` to its message)."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    text = f"{what}: {message}" if what else message
    if "No space left on device" in message or "Disk quota exceeded" in message:
        return ResourceError(text)
    if code in _NOT_FOUND:
        return NotFoundError(text)
    if code in _CONFLICT:
        return ConflictError(text)
    if code in _UNREACHABLE and exc.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE):
        return LibvirtUnreachable(text)
    return LibvirtError(text)


@contextlib.contextmanager
def libvirt_errors(what: str = ""):
    """Context manager: any libvirtError raised inside becomes the matching VmctlError."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, what) from exc
