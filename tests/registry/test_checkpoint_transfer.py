"""Checkpoint images through a real registry and an archive: memory chunks travel zstd-compressed
with their uncompressed digests, and come back byte for byte under the same image id."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from vmctl.archive import load, save
from vmctl.registry import transfer
from vmctl.registry import mediatypes as mt
from vmctl.registry.refs import parse_registry_ref
from vmctl.storage import ImageStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "storage"))
from checkpoint_helpers import checkpoint_image  # noqa: E402

pytestmark = pytest.mark.contract
MiB = 1 << 20
STREAM = b"QEVM\x00\x00\x00\x03"


@pytest.fixture
def warm_store(tmp_path):
    store = ImageStore(tmp_path / "root-a", None)
    raw = tmp_path / "base.raw"
    with open(raw, "wb") as fh:
        fh.truncate(8 * MiB)
        fh.write(os.urandom(MiB))
    base = store.import_image(raw, "base:1", created=1_700_000_000)
    # memory is mostly zeros and repeats: it compresses well
    chunks = [STREAM + os.urandom(64 * 1024) + bytes(2 * MiB), bytes(MiB) + os.urandom(1000)]
    return store, checkpoint_image(store, base, tmp_path, chunks), chunks


def test_checkpoint_push_pull_round_trip(registry, registry_client, warm_store, tmp_path, repo_name):
    store, image, chunks = warm_store
    dest = parse_registry_ref(f"{registry.host}/{repo_name}:warm")
    pushed = transfer.push(store, "warm:1", dest, registry_client)
    manifest = json.loads(registry_client.get_manifest(repo_name, "warm")[0])
    memory = [d for d in manifest["layers"] if d["mediaType"] == mt.MEMORY_ZSTD]
    assert len(memory) == 2 and all(d["annotations"][mt.ANN_UNCOMPRESSED_DIGEST] for d in memory)
    assert sum(d["size"] for d in memory) < sum(map(len, chunks)) // 4
    assert [b[0] for b in pushed.blobs].count("memory") == 2
    other = ImageStore(tmp_path / "root-b", None)
    pulled = transfer.pull(other, dest, registry_client)
    assert pulled.image.id == image.id
    assert [p.read_bytes() for p in pulled.image.memory] == chunks
    assert pulled.image.checkpoint == image.checkpoint
    # pushed again: every chunk is found in the registry, nothing is uploaded
    again = transfer.push(store, "warm:1", dest, registry_client)
    assert again.bytes_uploaded < 4096


def test_checkpoint_archive_round_trip(warm_store, tmp_path):
    store, image, chunks = warm_store
    out = tmp_path / "warm.tar"
    save(store, ["warm:1"], out)
    other = ImageStore(tmp_path / "root-c", None)
    load(other, out)
    got = other.resolve("warm:1")
    assert got.id == image.id and [p.read_bytes() for p in got.memory] == chunks
