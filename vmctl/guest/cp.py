"""Arguments of ``vmctl cp SRC DST``: exactly one side is ``NAME:PATH`` (a path in guest NAME).

An argument is local when it starts with ``/``, ``./`` or ``../`` (or is ``.``/``..``), or when the
text before its first colon contains a ``/`` -- so ``./a:b`` and ``dir/a:b`` are local files. Else
``NAME:PATH`` is remote and NAME must be a valid VM name. ``NAME:`` alone means the login user's
home directory (as with scp).
"""

from __future__ import annotations

from dataclasses import dataclass

from vmctl.errors import UsageError
from vmctl.names import check_name


def parse_cp_arg(arg: str) -> tuple[str | None, str]:
    """(VM name, guest path) for ``NAME:PATH``, (None, path) for a local path."""
    if not arg:
        raise UsageError("empty path in cp")
    if arg in (".", "..") or arg.startswith(("/", "./", "../")):
        return None, arg
    name, colon, path = arg.partition(":")
    if not colon or "/" in name:
        return None, arg
    if not name:
        raise UsageError(f"invalid cp argument {arg!r}: the VM name before ':' is empty")
    check_name(name, "VM name")
    return name, path or "."


@dataclass(frozen=True)
class CopyPlan:
    """What ``vmctl cp`` will do: upload (host → guest) or download (guest → host)."""

    name: str
    remote: str
    local: str
    upload: bool


def parse_cp_args(src: str, dst: str) -> CopyPlan:
    """Check that exactly one of SRC and DST names a guest path; return the plan."""
    src_name, src_path = parse_cp_arg(src)
    dst_name, dst_path = parse_cp_arg(dst)
    if src_name and dst_name:
        raise UsageError("cp copies between the host and one guest: only one of SRC and DST may be NAME:PATH")
    if not src_name and not dst_name:
        raise UsageError("cp needs a guest path on one side: NAME:PATH (use ./PATH for a local file with ':')")
    if src_name:
        return CopyPlan(name=src_name, remote=src_path, local=dst_path, upload=False)
    return CopyPlan(name=dst_name, remote=dst_path, local=src_path, upload=True)
