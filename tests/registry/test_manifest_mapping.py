"""Store manifest <-> registry manifest (model tier): reversible, strict about what it accepts."""

from __future__ import annotations

import json

import pytest
import reghelpers as h

from vmctl.errors import IntegrityError
from vmctl.registry import mediatypes as mt
from vmctl.registry.transfer import local_manifest, registry_manifest
from vmctl.storage.manifest import build_manifest, descriptor

L1, L2, K = h.sha256(b"layer1"), h.sha256(b"layer2"), h.sha256(b"kernel")
C1, C2 = h.sha256(b"c1"), h.sha256(b"c2")


def store_manifest() -> bytes:
    return build_manifest(descriptor(mt.CONFIG, h.sha256(b"cfg"), 3),
                          [descriptor(mt.LOCAL_LAYER, L1, 1000), descriptor(mt.LOCAL_LAYER, L2, 2000)],
                          descriptor(mt.KERNEL, K, 6))


def test_round_trip_gives_the_store_manifest_back_byte_for_byte():
    local = store_manifest()
    remote = registry_manifest(json.loads(local), {L1: {"digest": C1, "size": 10}, L2: {"digest": C2, "size": 20}})
    doc = json.loads(remote)
    assert [d["mediaType"] for d in doc["layers"]] == [mt.DISK_LAYER_ZSTD, mt.DISK_LAYER_ZSTD, mt.KERNEL]
    assert doc["layers"][1] == {"mediaType": mt.DISK_LAYER_ZSTD, "digest": C2, "size": 20, "annotations": {
        mt.ANN_UNCOMPRESSED_DIGEST: L2, mt.ANN_UNCOMPRESSED_SIZE: "2000"}}
    back, blobs, config = local_manifest(remote)
    assert back == local
    assert [(b.local_digest, b.remote_digest, b.compressed) for b in blobs] == [
        (L1, C1, True), (L2, C2, True), (K, K, False)]
    # a copy that dropped artifactType and added annotations still maps to the same image
    doc.pop("artifactType")
    doc["annotations"] = {"org.opencontainers.image.created": "now"}
    doc["subject"] = {"mediaType": mt.OCI_MANIFEST, "digest": C1, "size": 1}
    assert local_manifest(h.canonical(doc))[0] == local


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(artifactType="application/vnd.other"), "not a vmctl image"),
    (lambda d: d["config"].update(mediaType="application/vnd.oci.image.config.v1+json"), "foreign config"),
    (lambda d: d["layers"][0].pop("annotations"), "lacks"),
    (lambda d: d["layers"][0]["annotations"].update({mt.ANN_UNCOMPRESSED_SIZE: "-1"}), "lacks"),
    (lambda d: d["layers"][0].update(mediaType="application/vnd.oci.image.layer.v1.tar+gzip"), "unexpected"),
    (lambda d: d["layers"][0].update(digest="md5:abc"), "malformed"),
    (lambda d: d.update(schemaVersion=1), "schemaVersion"),
])
def test_foreign_or_malformed_manifests_are_refused(mutate, match):
    doc = json.loads(registry_manifest(json.loads(store_manifest()),
                                       {L1: {"digest": C1, "size": 10}, L2: {"digest": C2, "size": 20}}))
    mutate(doc)
    with pytest.raises(IntegrityError, match=match):
        local_manifest(h.canonical(doc))
