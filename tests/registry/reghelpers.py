"""Small builders shared by the registry tests: random blobs and vmctl-shaped manifests."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from vmctl.registry import mediatypes as mt


def private_credentials(tmp_path: Path, monkeypatch) -> None:
    """Point vmctl's, Docker's and podman's credential files under `tmp_path`."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "containers-auth.json"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def random_file(path: Path, size: int) -> str:
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 1 << 20)
            fh.write(os.urandom(n))
            left -= n
    return file_digest(path)


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def vmctl_manifest(config: bytes, layers: list[tuple[str, int, str, int]]) -> bytes:
    """A registry manifest: `layers` as (compressed digest, size, uncompressed digest, size)."""
    return canonical({
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": mt.ARTIFACT_TYPE,
        "config": {"mediaType": mt.CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [
            {"mediaType": mt.DISK_LAYER_ZSTD, "digest": d, "size": s,
             "annotations": {mt.ANN_UNCOMPRESSED_DIGEST: ud, mt.ANN_UNCOMPRESSED_SIZE: str(us)}}
            for d, s, ud, us in layers
        ],
    })


def sample_config() -> bytes:
    return canonical({"architecture": "x86_64", "boot": {"kind": "firmware", "firmware": "bios"},
                      "defaults": {"cpus": 1, "memory_mib": 256, "disk_bytes": 1 << 20},
                      "cloud_init": False, "user": None, "labels": {}, "created": "2026-01-01T00:00:00Z",
                      "parent": None, "history": []})
