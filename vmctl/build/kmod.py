"""Kernel module lookup and load ordering from an extracted kernel package.

Debian's kernel package ships ``.ko`` files but no ``modules.dep`` (``depmod`` runs at install
time), so dependencies are read from each module's ``.modinfo`` strings (``depends=``), which is
what ``depmod`` itself uses.
"""

from __future__ import annotations

import re
from pathlib import Path

_MODINFO_RE = re.compile(rb"(?:^|\x00)(name|depends)=([^\x00]*)")


def _canon(name: str) -> str:
    """Module names treat ``-`` and ``_`` as the same character; canonicalise to ``_``."""
    return name.replace("-", "_")


def module_index(modules_root: Path) -> dict[str, Path]:
    """Map every module name under ``modules_root`` (…/lib/modules/VERSION) to its ``.ko`` file.

    Compressed modules (``.ko.xz``/``.ko.zst``) are not supported: Debian 12 ships plain ``.ko``.
    """
    index: dict[str, Path] = {}
    for path in sorted(modules_root.rglob("*.ko")):
        index[_canon(path.name[: -len(".ko")])] = path
    return index


def module_depends(path: Path) -> list[str]:
    """Return the names listed in the ``depends=`` field of a module's ``.modinfo``."""
    data = path.read_bytes()
    for m in _MODINFO_RE.finditer(data):
        if m.group(1) == b"depends":
            value = m.group(2).decode()
            return [_canon(d) for d in value.split(",") if d]
    return []


def load_order(wanted: list[str], index: dict[str, Path], builtin: set[str]) -> list[str]:
    """Order ``wanted`` modules plus their dependencies so each comes after what it needs.

    Names in ``builtin`` (compiled into the kernel) are skipped silently; a name that is neither a
    module nor built in raises ``KeyError`` naming it. The order of ``wanted`` is kept where the
    dependencies allow it.
    """
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        name = _canon(name)
        if name in seen or name in builtin:
            return
        if name in stack:
            raise ValueError(f"module dependency cycle: {' -> '.join(stack + (name,))}")
        if name not in index:
            raise KeyError(name)
        for dep in module_depends(index[name]):
            visit(dep, stack + (name,))
        seen.add(name)
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def builtin_modules(modules_root: Path) -> set[str]:
    """Names of modules compiled into the kernel, from ``modules.builtin`` when shipped."""
    path = modules_root / "modules.builtin"
    if not path.exists():
        return set()
    return {_canon(Path(line.strip()).name.removesuffix(".ko")) for line in path.read_text().splitlines() if line.strip()}


_SIG_MAGIC = b"~Module signature appended~\n"


def strip_signature(data: bytes) -> bytes:
    """Return a module without its appended signature (unchanged if it has none).

    The kernel then skips the signature check when loading it (it only taints itself, as
    ``CONFIG_MODULE_SIG_FORCE`` is off in Debian's kernels), which is measurably faster under TCG.
    The modules still come from Debian's signed package; only the in-guest re-check is skipped.
    """
    if not data.endswith(_SIG_MAGIC):
        return data
    info = data[-len(_SIG_MAGIC) - 12 : -len(_SIG_MAGIC)]
    signer_len, key_id_len = info[3], info[4]
    sig_len = int.from_bytes(info[8:12], "big")
    end = len(data) - len(_SIG_MAGIC) - 12 - sig_len - signer_len - key_id_len
    return data[:end] if end > 0 else data
