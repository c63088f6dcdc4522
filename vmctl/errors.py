"""One error hierarchy for vmctl.

Every failure a user can cause or meet is a `VmctlError` subclass. Each class carries a distinct
process exit code, so scripts can tell "no such VM" from "libvirt is down" without parsing text, and
its message is one line that the CLI prints as ``vmctl: error: <message>``.
"""

from __future__ import annotations


class VmctlError(Exception):
    """Base of all vmctl errors: one-line message, distinct exit code per subclass."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str):
        # One line, always: a multi-line message from a tool is folded so the CLI contract holds.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(VmctlError):
    """Bad input: an invalid name, size, port, reference or option combination."""

    exit_code = 2
    kind = "usage"


class NotFoundError(VmctlError):
    """The named VM, image, snapshot, profile or recipe does not exist."""

    exit_code = 3
    kind = "not-found"


class ConflictError(VmctlError):
    """The name is taken, or the object is in a state that forbids the operation."""

    exit_code = 4
    kind = "conflict"


class InUseError(ConflictError):
    """The object is still used (an image by instances or other images, a VM by a lock holder)."""

    exit_code = 5
    kind = "in-use"


class LibvirtUnreachable(VmctlError):
    """libvirtd cannot be reached at the connection URI."""

    exit_code = 6
    kind = "libvirt-unreachable"


class LibvirtError(VmctlError):
    """libvirt refused an operation (its own message is passed through)."""

    exit_code = 7
    kind = "libvirt"


class GuestNotReady(VmctlError):
    """The guest did not become reachable (address, SSH banner or key) in time."""

    exit_code = 8
    kind = "guest-not-ready"


class HostKeyMismatch(VmctlError):
    """The guest's SSH host key is not the pinned one: never silently accepted."""

    exit_code = 9
    kind = "host-key-mismatch"


class ExternalToolError(VmctlError):
    """A tool vmctl runs (qemu-img, apt-get, mkfs.ext4, ...) failed."""

    exit_code = 10
    kind = "tool"

    def __init__(self, tool: str, message: str):
        self.tool = tool
        super().__init__(f"{tool}: {message}")


class IntegrityError(VmctlError):
    """Content does not match its digest, or a file is not what it claims to be."""

    exit_code = 11
    kind = "integrity"


class RegistryError(VmctlError):
    """A registry answered with an error, or could not be reached."""

    exit_code = 12
    kind = "registry"


class AuthError(RegistryError):
    """A registry refused the credentials."""

    exit_code = 13
    kind = "auth"


class ResourceError(VmctlError):
    """Not enough disk space, memory or free ports for the operation."""

    exit_code = 14
    kind = "resource"


class Unhealthy(VmctlError):
    """A stack VM's healthcheck did not pass within its retries."""

    exit_code = 16
    kind = "unhealthy"


ALL_ERRORS = (
    VmctlError, UsageError, NotFoundError, ConflictError, InUseError, LibvirtUnreachable,
    LibvirtError, GuestNotReady, HostKeyMismatch, ExternalToolError, IntegrityError,
    RegistryError, AuthError, ResourceError, Unhealthy,
)
