"""Crash safety and concurrency: killed imports leave nothing visible; parallel imports agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmctl.storage import ImageStore, qemu_img
from vmctl.storage.index import Index

from storage_helpers import qemu_io

CHILD = r"""
import json, os, signal, sys
from pathlib import Path
from vmctl.storage import ImageStore
from vmctl.storage import blobs as blobs_mod

root, disk, ref, kill_at = sys.argv[1:5]
store = ImageStore(Path(root), None)
if kill_at == "mid-publish":
    original = blobs_mod.Blobs.publish
    def publish(self, *a, **k):
        out = original(self, *a, **k)
        os.kill(os.getpid(), signal.SIGKILL)   # die between two renames, holding the lock
        return out
    blobs_mod.Blobs.publish = publish

def progress(phase, done, total):
    print(json.dumps([phase, done, total]), flush=True)
    if phase == kill_at and done > 0:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

im = store.import_image(Path(disk), ref, progress=progress, created=0)
print(json.dumps(["done", im.id]), flush=True)
"""


def _spawn(root: Path, disk: Path, ref: str, kill_at: str = "never") -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(disk), ref, kill_at],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def big_disk(tmp_path_factory) -> Path:
    """A 2 GiB sparse raw disk with 192 MiB of data: conversion takes long enough to be killed."""
    path = tmp_path_factory.mktemp("big") / "big.raw"
    with open(path, "wb") as fh:
        fh.truncate(2 << 30)
    qemu_io(path, "raw", "write -P 0x61 16M 192M")
    return path


def _visible(root: Path) -> dict:
    store = ImageStore(root, None)
    return {
        "rows": store.list(),
        "index": Index.load(store.layout.index).images,
        "layers": sorted(p.name for p in store.layout.layers.iterdir()),
        "blobs": sorted(p.name for p in store.layout.blobs.iterdir()),
    }


@pytest.mark.parametrize("kill_at", ["convert", "hash", "mid-publish"])
def test_killed_import_leaves_nothing_visible(tmp_path, big_disk, kill_at):
    root = tmp_path / "root"
    proc = _spawn(root, big_disk, "big:1", kill_at)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert "done" not in out
    seen = _visible(root)
    assert seen["rows"] == [] and seen["index"] == {}
    if kill_at != "mid-publish":
        assert seen["layers"] == [] and seen["blobs"] == []
    # no orphaned qemu-img keeps writing (PR_SET_PDEATHSIG)
    time.sleep(0.2)
    ps = subprocess.run(["pgrep", "-f", f"qemu-img convert.*{root}"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
    store = ImageStore(root, None)
    res = store.prune()
    assert res.temps >= 1 or kill_at == "mid-publish"
    assert _visible(root)["layers"] == [] and _visible(root)["blobs"] == []
    assert list(store.layout.tmp.iterdir()) == []
    # the store still works, and the lock was released by the kernel
    im = store.import_image(big_disk, "big:1", created=0)
    assert store.resolve("big:1").id == im.id


def test_two_concurrent_imports_of_one_file_give_one_image(tmp_path, big_disk):
    root = tmp_path / "root"
    ImageStore(root, None)  # create the layout first: both children race only on content
    procs = [_spawn(root, big_disk, "big:1"), _spawn(root, big_disk, "big:1")]
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        ids.append(json.loads(out.strip().splitlines()[-1])[1])
    assert ids[0] == ids[1]
    seen = _visible(root)
    assert [(r.repo, r.tag, r.id) for r in seen["rows"]] == [("big", "1", ids[0])]
    assert list(seen["index"]) == [ids[0]]
    assert len(seen["layers"]) == 1 and len(seen["blobs"]) == 2  # config + manifest
    store = ImageStore(root, None)
    assert list(store.layout.tmp.iterdir()) == []
    assert qemu_img.is_clean(qemu_img.check(store.resolve("big:1").top_layer))


def test_concurrent_tagging_keeps_index_consistent(tmp_path, raw_disk):
    root = tmp_path / "root"
    store = ImageStore(root, None)
    store.import_image(raw_disk, "base:1")
    script = (
        "import sys; from pathlib import Path; from vmctl.storage import ImageStore\n"
        "s = ImageStore(Path(sys.argv[1]), None)\n"
        "for i in range(30): s.tag('base:1', f'{sys.argv[2]}:{i}')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root), f"r{n}"], env=env) for n in range(4)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    tags = store.resolve("base:1").repo_tags
    assert len(tags) == 1 + 4 * 30
