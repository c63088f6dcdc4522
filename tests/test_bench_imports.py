"""Every name the benchmarks import from vmctl exists: benches run by hand, not in CI, so a moved
or renamed name would otherwise break them unseen (imports inside functions included)."""

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _vmctl_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("vmctl"):
            for alias in node.names:
                yield node.module, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vmctl"):
                    yield alias.name, None, node.lineno


@pytest.mark.parametrize("bench", sorted(p.name for p in BENCH.glob("*.py")))
def test_bench_imports_resolve(bench):
    missing = []
    for module, name, line in _vmctl_imports(BENCH / bench):
        mod = importlib.import_module(module)
        if name is not None and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{bench}:{line}: {module}.{name}")
    assert not missing, missing
