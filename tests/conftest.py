"""Shared fixtures: a private data root per test, the CLI runner, and the libvirt daemons."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def vmctl_root(tmp_path, monkeypatch) -> Path:
    """A fresh data root, and no config file from the machine leaking into the test."""
    root = tmp_path / "root"
    monkeypatch.setenv("VMCTL_ROOT", str(root))
    monkeypatch.setenv("VMCTL_CONFIG", str(tmp_path / "no-config.toml"))
    (tmp_path / "no-config.toml").write_text("")
    monkeypatch.setenv("VMCTL_REGISTRIES_CONF", "")   # no registries.conf (mirrors) from ~ or /etc
    monkeypatch.delenv("VMCTL_MODE", raising=False)
    monkeypatch.delenv("VMCTL_CONNECT", raising=False)
    return root


@pytest.fixture
def cli_run(vmctl_root):
    """Run `vmctl ARGS...` in-process; returns click's Result (exit_code, stdout, stderr)."""
    from vmctl.cli.main import cli

    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return run


def _running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def libvirtd():
    """Make sure virtlogd and libvirtd run; stop at the end only the ones this session started."""
    if shutil.which("libvirtd") is None:
        pytest.fail("libvirtd is not installed (run .ci/run or apt-get install libvirt-daemon-system)")
    started = []
    for daemon in ("virtlogd", "libvirtd"):
        if not _running(daemon):
            if daemon == "libvirtd":
                # never let libvirt's NAT network come up in this namespace
                Path("/etc/libvirt/qemu/networks/autostart/default.xml").unlink(missing_ok=True)
            subprocess.run([daemon, "-d"], check=True)
            started.append(daemon)
    for _ in range(100):
        if subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("libvirtd did not answer")
    yield
    for daemon in reversed(started):
        subprocess.run(["pkill", "-x", daemon])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the figures tests recorded (see tests/figures.py)."""
    from tests.figures import lines

    shown = lines()
    if shown:
        terminalreporter.section("vmctl figures")
        for line in shown:
            terminalreporter.write_line(line)


# --- CI: a tier that skips is a failure ------------------------------------------------------
# In CI (.ci/run sets VMCTL_CI=1) every skipped test fails the run unless it is listed here with
# the reason it cannot run on CI's machines. The list is empty: every tier runs there (libvirtd,
# QEMU/TCG, the registry, skopeo, dropbear, OpenSSH and the tiny guest are all installed by
# .ci/deps). Add an entry only with a comment that says why, e.g.
#   "tests/e2e/test_x.py::test_y",  # needs nested KVM, which CI's VMs do not offer
ALLOWED_SKIPS: frozenset[str] = frozenset()

_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    import os

    if os.environ.get("VMCTL_CI") != "1":
        return
    unexpected = sorted(n for n in _skipped if n not in ALLOWED_SKIPS and n.split("[")[0] not in ALLOWED_SKIPS)
    if unexpected:
        print(f"\nvmctl CI: {len(unexpected)} test(s) skipped that are not on the allow-list "
              f"(tests/conftest.py ALLOWED_SKIPS):")
        for n in unexpected:
            print(f"  {n}")
        session.exitstatus = 1
