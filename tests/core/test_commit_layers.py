"""Commit's conversions against a real store, without a VM: a layer from an internal snapshot or
from the active disk holds only what the overlay wrote; squash gives one standalone layer; history
lists the chain. (The end-to-end path with libvirt is in tests/e2e/test_snapshots_e2e.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "storage"))

from storage_helpers import make_raw, qemu_io, read_back  # noqa: E402

from vmctl.core.commit import convert_disk, history  # noqa: E402
from vmctl.storage import ImageStore, qemu_img  # noqa: E402

MIB = 1 << 20


@pytest.fixture
def setup(tmp_path):
    store = ImageStore(tmp_path / "root")
    base = store.import_image(make_raw(tmp_path / "base.raw", size=64 * MIB, pattern=0x11, at=0, length=8 * MIB),
                              "base:1", fmt="raw", created=1)
    overlay = tmp_path / "disk.qcow2"
    qemu_img.create(overlay, backing=base.top_layer, backing_fmt="qcow2")
    qemu_io(overlay, "qcow2", f"write -P 0x22 {16 * MIB} {MIB}")
    subprocess.run(["qemu-img", "snapshot", "-c", "s1", str(overlay)], check=True)
    qemu_io(overlay, "qcow2", f"write -P 0x33 {16 * MIB} {MIB}")  # after the snapshot
    return store, base, overlay, tmp_path


def _layer_bytes(image) -> int:
    return image.manifest["layers"][len(image.layer_digests) - 1]["size"]


def test_layer_from_an_internal_snapshot_holds_the_snapshot_state(setup):
    store, base, overlay, tmp = setup
    top = tmp / "top.qcow2"
    convert_disk(overlay, top, snapshot="s1", backing=base.top_layer.resolve())
    image = store.add_layer(base.id, top, "app:snap", "from s1", created_by="vmctl commit vm --snapshot s1")
    assert image.layer_digests[0] == base.layer_digests[0] and len(image.layers) == 2
    assert read_back(image.top_layer, "qcow2", 16 * MIB, MIB, 0x22)
    assert read_back(image.top_layer, "qcow2", 0, 8 * MIB, 0x11)  # the parent's data, through the chain
    assert _layer_bytes(image) < 3 * MIB < _layer_bytes(base)
    assert qemu_img.is_clean(qemu_img.check(image.top_layer))
    assert qemu_img.is_clean(qemu_img.check(base.top_layer))


def test_layer_from_the_active_disk_and_a_squash(setup):
    store, base, overlay, tmp = setup
    live = store.add_layer(base.id, overlay, "app:live", "active state")
    assert read_back(live.top_layer, "qcow2", 16 * MIB, MIB, 0x33)
    flat = tmp / "flat.qcow2"
    convert_disk(overlay, flat)
    squashed = store.import_image(flat, "app:flat", fmt="qcow2", created=2)
    assert len(squashed.layers) == 1
    assert read_back(squashed.top_layer, "qcow2", 0, 8 * MIB, 0x11)
    assert read_back(squashed.top_layer, "qcow2", 16 * MIB, MIB, 0x33)
    assert store.verify("base:1") == []  # the parent's layer is untouched


def test_history_lists_the_chain_newest_first(setup):
    store, base, overlay, tmp = setup
    image = store.add_layer(base.id, overlay, "app:1", "added things", created_by="vmctl commit vm")
    rows = history(SimpleNamespace(store=store), "app:1")
    assert [r["layer"] for r in rows] == list(reversed(image.layer_digests))
    assert rows[0]["image"] == image.id and rows[0]["comment"] == "added things"
    assert rows[0]["created_by"] == "vmctl commit vm"
    assert rows[1]["image"] == base.id and rows[1]["image_tags"] == ["base:1"]
    assert rows[0]["size"] < rows[1]["size"]
