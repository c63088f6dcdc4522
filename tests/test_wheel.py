"""The built wheel carries templates/: a pip-installed vmctl finds its profiles and recipes."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(out), str(REPO)], check=True, capture_output=True)
    wheel = next(out.glob("vmctl-*.whl"))
    target = out / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def test_wheel_contains_builtin_profiles_and_recipes(unpacked_wheel):
    templates = unpacked_wheel / "vmctl" / "_templates"
    for rel in ("profiles/hosted.toml", "profiles/kvm.toml", "recipes/tiny.toml"):
        assert (templates / rel).is_file(), rel


def test_installed_vmctl_loads_profiles_from_the_wheel(unpacked_wheel, tmp_path):
    code = (
        "import vmctl, vmctl.config as c\n"
        "from vmctl.profiles import load_profile\n"
        "from vmctl.build.recipe import load_recipe\n"
        "print(vmctl.__file__); print(c.templates_dir())\n"
        "print(load_profile('hosted').name, load_profile('kvm').name, load_recipe('tiny').name)\n"
    )
    env = {"PYTHONPATH": str(unpacked_wheel), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    module_file, templates, names = proc.stdout.splitlines()
    assert module_file.startswith(str(unpacked_wheel))
    assert templates.startswith(str(unpacked_wheel)) and templates.endswith("_templates")
    assert names == "hosted kvm tiny"
