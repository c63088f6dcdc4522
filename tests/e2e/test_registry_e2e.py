"""End to end: push ``tiny`` to real registries (htpasswd auth, plain HTTP and TLS with a test CA),
remove it, pull it back, boot the pulled image under libvirt and run a command in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "registry"))
import regserver  # noqa: E402

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU")]


@pytest.fixture
def env(tmp_path):
    """A private data root QEMU's user can reach (/var/tmp, not pytest's 0700 tmp), private
    credentials; the build cache stays shared so 'image build tiny' takes seconds."""
    root = Path(tempfile.mkdtemp(prefix="vmctl-e2e-reg-", dir="/var/tmp"))
    root.chmod(0o711)  # the data root's parent is not vmctl's: QEMU must be let through
    (tmp_path / "none.toml").write_text("")
    e = dict(os.environ)
    e.update(VMCTL_ROOT=str(root / "data"), VMCTL_CONFIG=str(tmp_path / "none.toml"),
             XDG_CONFIG_HOME=str(tmp_path / "config"), DOCKER_CONFIG=str(tmp_path / "docker"),
             REGISTRY_AUTH_FILE=str(tmp_path / "no-auth.json"))
    for k in ("VMCTL_MODE", "VMCTL_CONNECT"):
        e.pop(k, None)
    yield e
    shutil.rmtree(root, ignore_errors=True)


def vmctl(env, *args, input=None, check=True, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "vmctl", *args], env=env, capture_output=True, text=True,
                          input=input, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"vmctl {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def registries(tmp_path):
    started = []
    try:
        for tls in (False, True):
            started.append(regserver.start_registry(tmp_path / f"reg-{'tls' if tls else 'http'}", tls=tls))
        yield started
    finally:
        for server in started:
            server.stop()


def test_push_rmi_pull_boot_exec(libvirtd, env, registries):
    http, tls = registries
    vmctl(env, "image", "build", "tiny")
    image_id = json.loads(vmctl(env, "image", "inspect", "tiny").stdout)[0]["id"]
    tls_opts = ["--ca-file", str(tls.ca_file)]

    wrong = vmctl(env, "login", http.host, "-u", http.user, "--password-stdin", "--insecure",
                  input="not-the-password\n", check=False)
    assert wrong.returncode == 13 and "wrong user name or password" in wrong.stderr
    vmctl(env, "login", http.host, "-u", http.user, "--password-stdin", "--insecure", input=http.password + "\n")
    vmctl(env, "login", tls.host, "-u", tls.user, "--password-stdin", *tls_opts, input=tls.password + "\n")

    for server, opts in ((http, ["--insecure"]), (tls, tls_opts)):
        out = json.loads(vmctl(env, "push", "tiny", f"{server.host}/e2e/tiny:1", *opts, "--json").stdout)
        assert out["image_id"] == image_id and out["bytes_uploaded"] > 0
    vmctl(env, "rmi", "tiny")
    assert vmctl(env, "images", "-q").stdout.strip() == ""

    ref = f"{tls.host}/e2e/tiny:1"
    pulled = json.loads(vmctl(env, "pull", ref, *tls_opts, "--json").stdout)
    assert pulled["id"] == image_id and pulled["name"] == ref and pulled["layers_present"] == 0
    # the same image from the other registry: nothing to download but its manifest
    again = json.loads(vmctl(env, "pull", f"{http.host}/e2e/tiny:1", "--insecure", "--json").stdout)
    assert again["id"] == image_id and again["layers_downloaded"] == 0 and again["bytes_downloaded"] == 0

    name = f"e2e-reg-{os.getpid()}"
    try:
        vmctl(env, "run", name, "--image", ref, "--restrict-network", timeout=400)
        out = vmctl(env, "exec", name, "--", "sh", "-c", "echo pulled-$(hostname)")
        assert out.stdout.strip() == f"pulled-{name}"
    finally:
        vmctl(env, "rm", "-f", name, check=False)
    assert name not in vmctl(env, "ls", "-a").stdout
    vmctl(env, "logout", http.host)
    vmctl(env, "logout", tls.host)
