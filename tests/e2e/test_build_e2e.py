"""Vmfile builds end to end with vmctl's tiny guest: COPY, RUN with an ARG, EXPOSE and a boot
service; the image runs and the service answers through the forwarded port; a rebuild with nothing
changed is all cache hits (no VM); changing the last step rebuilds only it; a failing RUN leaves no
VM and no image; a push of the rebuilt image sends only the changed layer."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.registry import regserver

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
# the README's example, built as written
VMFILE = re.search(r"^```Dockerfile\n(.*?)^```", README.read_text(), re.S | re.M).group(1)


def _out(vm, *args, **kw) -> str:
    return vm(*args, **kw).stdout.strip()


def _get(port: int, path: str) -> str:
    for _ in range(120):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.read().decode()
        except OSError:
            time.sleep(1)
    raise AssertionError(f"nothing answered on 127.0.0.1:{port}")


def test_build_run_rebuild_fail_and_push(e2e_vmctl, tmp_path, tmp_path_factory):
    vm = e2e_vmctl
    ctx = tmp_path / "ctx"
    (ctx / "conf").mkdir(parents=True)
    (ctx / "index.html").write_text("<h1>built by vmctl</h1>\n")
    (ctx / "conf" / "web.conf").write_text("port=8080\n")
    (ctx / "Vmfile").write_text(VMFILE)

    first = json.loads(_out(vm, "build", "-t", "web:1", "--build-arg", "GREETING=hi", "--json", str(ctx),
                            timeout=1200))
    assert first["vm_boots"] == 1 and [s["cached"] for s in first["steps"]] == [False, False, False, True, True, False]
    history = _out(vm, "image", "history", "web:1")
    assert "COPY index.html /srv/www/" in history and "CMD" in history
    assert json.loads(_out(vm, "image", "inspect", "web:1"))[0]["labels"]["org.example.role"] == "web"

    # the image runs; its boot service answers through the forward EXPOSE made
    vm("run", "web", "--image", "web:1", timeout=600)
    ports = json.loads(_out(vm, "inspect", "web"))[0]["ports"]
    (forward,) = [p for p in ports if p["guest_port"] == 8080]
    assert _get(forward["host_port"], "/index.html") == "<h1>built by vmctl</h1>\n"
    assert _get(forward["host_port"], "/greeting.txt") == "hi from RUN\n"
    assert _out(vm, "exec", "web", "--", "cat", "/etc/web/web.conf") == "port=8080"
    vm("rm", "-f", "web", timeout=300)

    # nothing changed: every step cached, no VM booted, the same image
    again = json.loads(_out(vm, "build", "-t", "web:1", "--build-arg", "GREETING=hi", "--json", str(ctx)))
    assert again["vm_boots"] == 0 and all(s["cached"] for s in again["steps"]) and again["id"] == first["id"]

    # the last step changed: only it runs
    (ctx / "Vmfile").write_text(VMFILE.replace('"-p", "8080"', '"-p", "8080", "-v"'))
    last = json.loads(_out(vm, "build", "-t", "web:2", "--build-arg", "GREETING=hi", "--json", str(ctx),
                           timeout=1200))
    assert last["vm_boots"] == 1 and [s["cached"] for s in last["steps"]] == [True, True, True, True, True, False]

    # a failing RUN: its status, one line, no VM and no image left
    (ctx / "Vmfile").write_text("FROM tiny\nRUN echo partial > /root/p && exit 3\n")
    failed = vm("build", "-t", "broken:1", str(ctx), check=False, timeout=1200)
    assert failed.returncode == 3, failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("vmctl: error: line 2: RUN")
    assert _out(vm, "ls", "-a", "-q") == ""
    assert "broken" not in _out(vm, "images")

    # a parse error names its line
    (ctx / "Vmfile").write_text("FROM tiny\nRUNN true\n")
    bad = vm("build", "-t", "x:1", str(ctx), check=False)
    assert bad.returncode == 2 and f"{ctx / 'Vmfile'}:2: unknown instruction 'RUNN'" in bad.stderr

    # push: the rebuilt image sends only the layer that changed
    registry = regserver.start_registry(tmp_path_factory.mktemp("build-registry"), tls=False)
    try:
        vm("login", registry.host, "-u", registry.user, "--password-stdin", "--insecure", input=registry.password + "\n")
        vm("push", "web:1", f"{registry.host}/build/web:1", "--insecure", timeout=600)
        pushed = json.loads(_out(vm, "push", "web:2", f"{registry.host}/build/web:2", "--insecure", "--json",
                                 timeout=600))
        sent = [b for b in pushed["blobs"] if b["status"] == "uploaded" and b["kind"] == "layer"]
        assert len(sent) == 1, pushed["blobs"]
    finally:
        registry.stop()
    vm("rmi", "web:1", "web:2")
