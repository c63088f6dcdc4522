"""The user guide runs as written: every ```sh block of docs/*.md, in the guide's order, in bash
against a real libvirtd and QEMU with the installed `vmctl` on PATH (a private data root, a
registry with a login on 127.0.0.1, a scratch directory as $WORK). ```text blocks are not run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.registry import regserver

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
# what each page's blocks must have printed (a page that ran but showed nothing would pass otherwise)
EXPECT = {
    "install.md": ["volume_transport", "VMCTL_ROOT"],
    "first-vm.md": ["from the host", "hello"],
    "images.md": ["add the artifact", "built", "Loaded image: app:1"],
    "snapshots.md": ["one"],
    "warm-starts.md": ["clone1 prepared", "clone2 prepared", '"started": "warm"'],
    "registries.md": ["guide/app"],
    "volumes-and-limits.md": ["shared", "made in the guest", "read-only, as asked", "virtiofs", "cpu_quota_percent"],
    "modes.md": ["hosted"],
    "troubleshooting.md": ["exit status 3", "exit status 2"],
}


def _pages() -> list[str]:
    """The pages in the order docs/README.md lists them."""
    return re.findall(r"\]\(([a-z-]+\.md)\)", (DOCS / "README.md").read_text())


def test_every_page_is_listed_and_checked():
    assert sorted(_pages()) == sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")
    assert set(_pages()) == set(EXPECT)


def test_the_guide_runs_as_written(libvirtd, tmp_path_factory):
    root = Path(tempfile.mkdtemp(prefix="vmctl-docs-", dir="/var/tmp"))
    work = Path(tempfile.mkdtemp(prefix="vmctl-docs-work-", dir="/var/tmp"))
    registry = regserver.start_registry(tmp_path_factory.mktemp("docs-registry"), tls=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMCTL_")}
    # the guide's VMs reach nothing outside (user-mode networking with restrict=on, as every test's)
    config = tmp_path_factory.mktemp("docs-config") / "config.toml"
    config.write_text("restrict_network = true\n")
    env.update(PATH=f"{Path(sys.executable).parent}:{env['PATH']}", VMCTL_ROOT=str(root), VMCTL_CONFIG=str(config),
               VMCTL_REGISTRIES_CONF="", WORK=str(work), REGISTRY=registry.host,
               REGISTRY_USER=registry.user, REGISTRY_PASSWORD=registry.password)
    try:
        for page in _pages():
            output = ""
            for block in BLOCK.findall((DOCS / page).read_text()):
                proc = subprocess.run(["bash", "-euc", block], env=env, cwd=work, capture_output=True,
                                      text=True, timeout=1200)
                output += proc.stdout + proc.stderr
                assert proc.returncode == 0, f"{page}: block failed ({proc.returncode}):\n{block}\n{output[-3000:]}"
            for want in EXPECT[page]:
                assert want in output, f"{page}: {want!r} not in\n{output[-3000:]}"
    finally:
        names = subprocess.run([sys.executable, "-m", "vmctl", "ls", "-a", "-q"], env=env, capture_output=True,
                               text=True).stdout.split()
        if names:
            subprocess.run([sys.executable, "-m", "vmctl", "rm", "-f", *names], env=env, capture_output=True)
        registry.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
