"""The stack file of a command: ``-f FILE`` or the current directory's, and the short names of
its VMs (``web`` for ``<stack>-web``) that VM commands take inside the stack's directory."""

from __future__ import annotations

from pathlib import Path

from vmctl.errors import UsageError, VmctlError


def load_spec(file: str | None):
    """The stack of `file`, else of the current directory's vmctl.yaml (UsageError when none)."""
    from vmctl.stack.file import load
    from vmctl.stack.locate import find_file
    from vmctl.stack.spec import from_data

    path = Path(file) if file else find_file(Path.cwd())
    if path is None:
        raise UsageError("no vmctl.yaml in this directory (give one with -f FILE)")
    return from_data(load(path), path)


def short_name(name: str) -> str:
    """`name` as the current directory's stack knows it: ``web`` is ``<stack>-web`` when the
    stack file here names a VM ``web``; any other name (or no readable stack file) is itself."""
    from vmctl.stack.locate import find_file

    path = find_file(Path.cwd())
    if path is None:
        return name
    try:
        spec = load_spec(str(path))
    except VmctlError:
        return name
    return spec.vm_name(name) if name in spec.vms else name
