"""The shape of the package, checked by walking its own source (no import is executed):

- no import cycle inside ``vmctl``, counting imports inside functions too (a cycle held apart
  by function-local imports is still a cycle);
- no module outside ``vmctl/cli`` imports ``vmctl.cli``; only ``vmctl/backend`` imports libvirt;
- no operation in ``vmctl/core`` imports another operation (they share the rooms below them);
- ``vmctl/core`` never prints or exits, and never imports click;
- a function-local import says why it is lazy (``# lazy:``), but for the CLI's commands loading
  the vmctl modules they call.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vmctl"
# core modules every operation may use (handles, records, the state machine, shared procedures)
CORE_FOUNDATION = {
    "vmctl.core", "vmctl.core.session", "vmctl.core.instance", "vmctl.core.states", "vmctl.core.records",
    "vmctl.core.namelock", "vmctl.core.transaction", "vmctl.core.hostports", "vmctl.core.ports",
    "vmctl.core.snapshot_records", "vmctl.core.teardown",
    "vmctl.core.limits", "vmctl.core.volumes",   # value types and their checks, no operation
    "vmctl.core.hostplace",   # where a vmctl host keeps its VMs (files, records): every verb reaches them there
    "vmctl.core.placement",   # what a host can take and where a VM goes: run, migrate and drain decide by it
    "vmctl.core.warm",   # how a VM's first start restores its image's checkpoint: run and start share it
    "vmctl.core.findings",   # what doctor finds and how it looks: this machine's doctor and a host's share it
    "vmctl.core.shared_storage",   # which hosts share a host's storage: migrate, prune and doctor ask it
}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


MODULES = _modules()


def _imports(name: str, path: Path):
    """(imported vmctl module or external top-level name, line, inside a function?)"""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in inside
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno, id(node) in inside


def _owner(target: str) -> str | None:
    parts = target.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, _line, _lazy in _imports(name, path):
            if target.startswith("vmctl"):
                owner = _owner(target)
                if owner and owner != name:
                    edges[name].add(owner)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_only_the_cli_imports_the_cli_and_only_the_backend_imports_libvirt():
    wrong = []
    for name, path in MODULES.items():
        for target, line, _lazy in _imports(name, path):
            if target.startswith("vmctl.cli") and not name.startswith("vmctl.cli") and name != "vmctl.__main__":
                wrong.append(f"{path.name}:{line} imports {target}")
            if target.split(".")[0] in ("libvirt", "libvirt_qemu") and not name.startswith("vmctl.backend"):
                wrong.append(f"{path.name}:{line} imports {target}")
    assert wrong == []


def test_no_core_operation_imports_another():
    wrong = []
    for name, path in MODULES.items():
        if not name.startswith("vmctl.core.") or name in CORE_FOUNDATION or name.startswith("vmctl.core.plan"):
            continue
        for target, line, _lazy in _imports(name, path):
            owner = _owner(target) if target.startswith("vmctl.core") else None
            if owner and owner != name and owner not in CORE_FOUNDATION and not owner.startswith("vmctl.core.plan"):
                wrong.append(f"{name}:{line} imports the operation {owner}")
    assert wrong == []


def test_core_never_prints_exits_or_imports_click():
    wrong = []
    for name, path in MODULES.items():
        if not name.startswith("vmctl.core"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "exit"):
                wrong.append(f"{name}:{node.lineno} calls {node.func.id}")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sys" \
                    and node.attr in ("exit", "stdout", "stderr", "stdin"):
                wrong.append(f"{name}:{node.lineno} uses sys.{node.attr}")
            if isinstance(node, ast.Name) and node.id == "SystemExit":
                wrong.append(f"{name}:{node.lineno} raises SystemExit")
        for target, line, _lazy in _imports(name, path):
            if target.split(".")[0] == "click":
                wrong.append(f"{name}:{line} imports click")
    assert wrong == []


def test_function_local_imports_say_why():
    """Outside the CLI every function-local import says why it is lazy (``# lazy:``). In the CLI a
    command imports the vmctl module it calls inside its body, so `vmctl --help` loads none of
    them (``vmctl/cli/__init__.py`` says so once); anything else there says why, too."""
    wrong = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for target, line, lazy in _imports(name, path):
            if not lazy or "# lazy:" in lines[line - 1] or "# lazy:" in lines[line - 2]:
                continue
            if name.startswith("vmctl.cli") and target.startswith("vmctl.") and not target.startswith("vmctl.cli"):
                continue
            wrong.append(f"{name}:{line} imports {target} inside a function")
    assert wrong == []
