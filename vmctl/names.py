"""The one naming rule for VMs, images (repository names), tags and snapshots.

Names become file names in the store, libvirt domain names and XML text, so the rule is strict:
ASCII letters and digits, then letters, digits, ``_``, ``.`` and ``-``; at most 64 characters; no
``..``. That rules out path separators, XML metacharacters, quotes, whitespace and control characters
by construction instead of by a deny list.
"""

from __future__ import annotations

import re

from vmctl.errors import UsageError

MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Image repositories may have path components like registry namespaces ("library/debian");
# each component follows the name rule.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PORT = re.compile(r"[0-9]{1,5}")


def _describe(value: str) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return repr(shown)


def check_name(value: str, what: str = "name") -> str:
    """Return `value` if it is a valid VM/snapshot/image name, else raise UsageError naming the rule."""
    if not isinstance(value, str) or value == "":
        raise UsageError(f"invalid {what}: it is empty")
    if len(value) > MAX_NAME:
        raise UsageError(f"invalid {what} {_describe(value)}: longer than {MAX_NAME} characters")
    if ".." in value:
        raise UsageError(f"invalid {what} {_describe(value)}: '..' is not allowed")
    if not _NAME.fullmatch(value):
        raise UsageError(
            f"invalid {what} {_describe(value)}: use ASCII letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    return value


def check_repository(value: str) -> str:
    """Validate an image repository name: name components joined by '/' (no empty component).

    Pulled images keep their registry's name, as Docker does: when there are several components,
    the first may be a registry host with a port (``localhost:5000/tiny``, ``127.0.0.1:5000/a/b``).
    That is the only place a ':' may appear; the host part itself follows the name rule (so
    ``registry.example.com/x`` was already valid). Repositories are index keys, never file names.
    """
    if not value:
        raise UsageError("invalid image name: it is empty")
    parts = value.split("/")
    if len(parts) > 1 and ":" in parts[0]:
        host, _, port = parts[0].partition(":")
        if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
            raise UsageError(
                f"invalid image name {_describe(value)}: a registry host's port must be a number "
                "from 1 to 65535 (HOST:PORT/NAME)"
            )
        parts[0] = host
    for part in parts:
        check_name(part, "image name")
    if len(value) > 255:
        raise UsageError(f"invalid image name {_describe(value)}: longer than 255 characters")
    return value


def check_tag(value: str) -> str:
    """Validate an image tag (Docker's tag grammar: at most 128 characters)."""
    if not value or not _TAG.fullmatch(value) or ".." in value:
        raise UsageError(f"invalid tag {_describe(value)}: use letters, digits, '_', '.' and '-'")
    return value
