"""Checkpoint images in the store: memory chunks as blobs after the disk layers, the config's
``checkpoint`` checked against them (config and manifest arrive from registries and archives)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from vmctl.errors import IntegrityError
from vmctl.storage import ImageStore
from vmctl.storage.digest import canonical_json
from vmctl.storage.manifest import MEMORY_MEDIA_TYPE, parse_manifest, validate_config

from checkpoint_helpers import checkpoint_image

MiB = 1 << 20
STREAM = b"QEVM\x00\x00\x00\x03"


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "root", None)


@pytest.fixture
def base(store, tmp_path):
    raw = tmp_path / "base.raw"
    with open(raw, "wb") as fh:
        fh.truncate(8 * MiB)
        fh.write(os.urandom(MiB))
    return store.import_image(raw, "base:1", created=1_700_000_000)


def test_checkpoint_image_holds_its_chunks_in_order(store, base, tmp_path):
    chunks = [STREAM + os.urandom(3000), os.urandom(5000)]
    image = checkpoint_image(store, base, tmp_path, chunks)
    assert [p.read_bytes() for p in image.memory] == chunks
    assert image.checkpoint["size"] == 8008 and len(image.checkpoint["memory"]) == 2
    kinds = [d["mediaType"] for d in image.manifest["layers"]]
    assert kinds[-2:] == [MEMORY_MEDIA_TYPE] * 2 and kinds[0] != MEMORY_MEDIA_TYPE
    info = store.inspect("warm:1")
    assert [m["size"] for m in info["memory"]] == [3008, 5000] and info["checkpoint"]["cpus"] == 1
    # a commit on top of a checkpoint image does not inherit the saved machine (it has another disk)
    overlay = tmp_path / "child.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.top_layer),
                    str(overlay)], check=True)
    child = store.add_layer(image.id, overlay, "child:1")
    assert child.checkpoint is None and child.memory == ()
    # removing the image frees its chunks; the parent's layers stay
    store.remove("child:1")
    store.remove("warm:1")

    assert all(not p.exists() for p in image.memory)


def _docs(image):
    return json.loads(canonical_json(image.manifest)), json.loads(canonical_json(image.config))


@pytest.mark.parametrize("change, message", [
    (lambda m, c: c.pop("checkpoint"), "no checkpoint"),
    (lambda m, c: c["checkpoint"].update(memory=list(reversed(c["checkpoint"]["memory"]))), "in order"),
    (lambda m, c: c["checkpoint"].update(size=c["checkpoint"]["size"] + 1), "sum"),
    (lambda m, c: c["checkpoint"].update(machine="pc-q35-7.2,accel=kvm"), "machine"),
    (lambda m, c: c["checkpoint"].update(domain_type="qemu'/><x"), "domain_type"),
    (lambda m, c: c["checkpoint"].update(memory_mib=1 << 40), "memory_mib"),
    (lambda m, c: c["checkpoint"].update(cpus=True), "cpus"),
    (lambda m, c: c["checkpoint"].update(agent="anything"), "agent"),
    (lambda m, c: c["checkpoint"].update(format="raw"), "format"),
    (lambda m, c: m["layers"].insert(0, m["layers"].pop()), "memory chunks must come last"),
])
def test_hostile_checkpoint_metadata_is_refused(store, base, tmp_path, change, message):
    image = checkpoint_image(store, base, tmp_path, [STREAM + b"x" * 100, b"y" * 50])
    manifest, config = _docs(image)
    change(manifest, config)
    with pytest.raises(IntegrityError, match=message):
        validate_config(config, parse_manifest(canonical_json(manifest)))


def test_a_config_with_a_checkpoint_but_no_chunks_is_refused(store, base, tmp_path):
    image = checkpoint_image(store, base, tmp_path, [STREAM + b"x"])
    manifest, config = _docs(image)
    manifest["layers"] = [d for d in manifest["layers"] if d["mediaType"] != MEMORY_MEDIA_TYPE]
    with pytest.raises(IntegrityError, match="checkpoint.memory"):
        validate_config(config, parse_manifest(canonical_json(manifest)))
