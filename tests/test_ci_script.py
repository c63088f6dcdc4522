"""`.ci/run` names test paths for its second-interpreter pass: each must exist, or a move of the
tests would quietly drop that pass (pytest stops at the first missing path)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_path_ci_names_exists():
    script = (ROOT / ".ci" / "run").read_text()
    paths = sorted(set(re.findall(r"(?<![\w/])tests/[\w./-]+", script)))
    named = [p.rstrip(".") for p in paths if not p.startswith("tests/conftest")]
    assert named, "the CI script names no test paths"
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, f".ci/run names test paths that do not exist: {missing}"
