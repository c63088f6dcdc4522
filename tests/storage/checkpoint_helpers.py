"""A checkpoint image made in a store without a VM: a qcow2 layer on a parent and memory chunks
of given bytes (they start like QEMU's migration stream), for store, registry and archive tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vmctl.storage.blobs import Blobs

SHAPE = {"format": "qemu-migration", "agent": "vmctl-1", "machine": "pc-q35-7.2", "domain_type": "qemu",
         "cpu_mode": "maximum", "cpus": 1, "memory_mib": 256, "profile": "hosted", "firmware": "bios",
         "network": "user", "qemu": "7.2.0"}


def checkpoint_image(store, parent, tmp_path: Path, chunks: list[bytes], ref: str = "warm:1"):
    overlay = tmp_path / f"overlay-{ref.replace(':', '-')}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(parent.top_layer),
                    str(overlay)], check=True)
    with store.session("test-checkpoint") as work:
        memory = []
        for i, data in enumerate(chunks):
            tmp = work.file(f"memory-{i}")
            digest, size = Blobs.write_temp(tmp, data)
            memory.append((tmp, digest, size))
        return store.add_layer(parent.id, overlay, ref, "checkpoint", created=1_700_000_200,
                               memory=memory, checkpoint=dict(SHAPE))
