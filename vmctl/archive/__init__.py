"""``vmctl save`` / ``vmctl load``: images as an OCI image-layout archive (a tar), streamed.

The archive is an OCI image layout (image-spec ``image-layout.md``) in a tar, the format of
``skopeo copy … oci-archive:FILE`` and ``docker save`` (OCI variant)::

    oci-layout                     {"imageLayoutVersion": "1.0.0"}
    index.json                     one manifest descriptor per saved name, annotated with
                                   org.opencontainers.image.ref.name = "NAME:TAG"
    blobs/sha256/<manifest hex>    the store's own manifest (so its digest is the image id)
    blobs/sha256/<config hex>      the image config
    blobs/sha256/<hex>             kernel, initrd, and every disk layer as plain qcow2
                                   (media type application/vnd.vmctl.disk.layer.v1.qcow2)

Members are written in that order (small metadata first), each blob once however many images
share it. Layers are stored uncompressed, as the store keeps them: ``save`` is a sequential copy
(no recompression, nothing held in memory), and the archive's manifests are byte-identical to the
store's, so ``load`` gives the same image ids. An archive is written 0600 (it holds whole disks).
``skopeo copy oci-archive:FILE[:NAME:TAG] …`` reads it; registry-form manifests (zstd layers, what
``skopeo copy docker://… oci-archive:…`` writes from a pushed vmctl image) load as well, and so
do gzip-, zstd- and bzip2-compressed archives and pipes (``vmctl load -i /dev/stdin``).

An archive from elsewhere is untrusted: :mod:`.layout` says which members may exist, :mod:`.load`
how every byte is checked before the store changes (and what is bounded), :mod:`.save` writes.
"""

from vmctl.archive.load import LoadResult, load
from vmctl.archive.save import SaveResult, save

__all__ = ["LoadResult", "SaveResult", "load", "save"]
