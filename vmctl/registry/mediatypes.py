"""Media types of a vmctl image as it travels through an OCI registry (see FORMAT.md here).

The local store keeps disk layers as plain qcow2 (``LOCAL_LAYER``); in a registry each disk layer is
the zstd-compressed qcow2 file (``DISK_LAYER_ZSTD``). Config, kernel and initrd travel as they are
stored (kernels and initrds are compressed already), so their digests are the same on both sides.
"""

from __future__ import annotations

# The manifest itself: a plain OCI image manifest, marked as a vmctl artifact.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ARTIFACT_TYPE = "application/vnd.vmctl.image.v1"

# Blobs.
CONFIG = "application/vnd.vmctl.image.config.v1+json"
LOCAL_LAYER = "application/vnd.vmctl.disk.layer.v1.qcow2"
DISK_LAYER_ZSTD = LOCAL_LAYER + "+zstd"
KERNEL = "application/vnd.vmctl.kernel.v1"
INITRD = "application/vnd.vmctl.initrd.v1"
# A chunk of a checkpoint's memory state (a slice of QEMU's migration stream), zstd in a registry.
MEMORY = "application/vnd.vmctl.memory.v1"
MEMORY_ZSTD = MEMORY + "+zstd"
KERNEL_ZSTD = KERNEL + "+zstd"
INITRD_ZSTD = INITRD + "+zstd"

# Annotations on a compressed layer descriptor: what the blob decompresses to. The local store names
# layers by the digest of the uncompressed qcow2 file, so these let a pull skip layers it already has
# without downloading them, and let it verify the decompressed bytes before they become visible.
ANN_UNCOMPRESSED_DIGEST = "vmctl.layer.uncompressed-digest"
ANN_UNCOMPRESSED_SIZE = "vmctl.layer.uncompressed-size"

# What the client asks for when it fetches a manifest.
MANIFEST_ACCEPT = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)

# Compressed media type -> the local (uncompressed) media type it decompresses to.
DECOMPRESSED = {DISK_LAYER_ZSTD: LOCAL_LAYER, KERNEL_ZSTD: KERNEL, INITRD_ZSTD: INITRD, MEMORY_ZSTD: MEMORY}
# Local media type -> registry media type (disk layers and memory chunks are compressed on push).
COMPRESSED_ON_PUSH = {LOCAL_LAYER: DISK_LAYER_ZSTD, MEMORY: MEMORY_ZSTD}
