"""Streaming zstd for layers, with the digests of both sides computed while streaming.

Memory stays flat whatever the layer size: data moves in 1 MiB chunks, the compressor is
single-threaded at a fixed level with a bounded window, the decompressor refuses windows larger than
128 MiB. Compression is deterministic for a given libzstd: the same level, no threads, the content
size written into the frame header, a checksum, no timestamps or names (zstd frames have none) and
the input always fed in the same chunk sizes. So the same qcow2 layer always becomes the same blob
digest and a re-push finds every blob already there. (Another libzstd version may produce other
bytes; that only costs a re-upload, since pulls match layers by their uncompressed digest.)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import zstandard

from vmctl.errors import IntegrityError

LEVEL = 3
CHUNK = 1 << 20
MAX_WINDOW = 1 << 27
FORMAT_ID = f"zstd-{LEVEL}"  # names the parameters; part of the compression cache key

Progress = Callable[[int, int | None], None]  # (bytes done, total or None)


@dataclass(frozen=True)
class Compressed:
    digest: str              # sha256 of the compressed bytes (the registry's blob digest)
    size: int
    uncompressed_digest: str  # sha256 of the input (the store's layer digest)
    uncompressed_size: int


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def _compressor() -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=LEVEL, threads=0, write_checksum=True,
                                    write_content_size=True)


def compress_stream(src: BinaryIO, out: BinaryIO, *, size: int | None = None,
                    progress: Progress | None = None) -> Compressed:
    """Compress `src` into `out` (both already open); return the digests and sizes of both sides."""
    writer = _HashingWriter(out)
    h_in = hashlib.sha256()
    n_in = 0
    cctx = _compressor()
    with cctx.stream_writer(writer, size=size if size is not None else -1, closefd=False,
                            write_size=CHUNK) as zw:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            h_in.update(chunk)
            n_in += len(chunk)
            zw.write(chunk)
            if progress:
                progress(n_in, size)
    if size is not None and n_in != size:
        raise IntegrityError(f"source changed while compressing ({n_in} bytes read, {size} expected)")
    return Compressed(f"sha256:{writer.hash.hexdigest()}", writer.size,
                      f"sha256:{h_in.hexdigest()}", n_in)


def compress_file(src: Path, dst: Path, *, progress: Progress | None = None) -> Compressed:
    """Compress file `src` into new file `dst` (fsynced); remove `dst` on failure."""
    size = os.stat(src).st_size
    try:
        with open(src, "rb") as fin, open(dst, "xb") as fout:
            result = compress_stream(fin, fout, size=size, progress=progress)
            fout.flush()
            os.fsync(fout.fileno())
        return result
    except BaseException:
        Path(dst).unlink(missing_ok=True)
        raise


def compressed_digest(src: Path, *, progress: Progress | None = None) -> Compressed:
    """The digests compressing `src` would give, without keeping the output."""

    class _Null:
        def write(self, data):
            return len(data)

        def flush(self):
            pass

    size = os.stat(src).st_size
    with open(src, "rb") as fin:
        return compress_stream(fin, _Null(), size=size, progress=progress)


class DecompressReader:
    """A readable stream of the decompressed bytes of `src`, hashing and bounding them as it goes.

    After the stream is exhausted, :meth:`check` compares the result with what the manifest
    promised. Reading more than `max_size` bytes raises IntegrityError at once (no zip bombs).
    """

    def __init__(self, src: BinaryIO, *, max_size: int | None = None):
        dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
        self._reader = dctx.stream_reader(src, read_size=CHUNK, read_across_frames=True)
        self.hash = hashlib.sha256()
        self.size = 0
        self.max_size = max_size

    def read(self, n: int = CHUNK) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        try:
            data = self._reader.read(n)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"compressed layer is damaged: {exc}") from None
        self.hash.update(data)
        self.size += len(data)
        if self.max_size is not None and self.size > self.max_size:
            raise IntegrityError(f"layer decompresses to more than the {self.max_size} bytes announced")
        return data

    @property
    def digest(self) -> str:
        return f"sha256:{self.hash.hexdigest()}"

    def check(self, digest: str | None, size: int | None = None) -> None:
        if digest is not None and self.digest != digest:
            raise IntegrityError(f"layer decompresses to {self.digest}, expected {digest}")
        if size is not None and self.size != size:
            raise IntegrityError(f"layer decompresses to {self.size} bytes, expected {size}")

    def close(self) -> None:
        self._reader.close()


def decompress_file(src: Path, dst: Path, *, expected_digest: str | None = None,
                    expected_size: int | None = None, progress: Progress | None = None) -> tuple[str, int]:
    """Decompress `src` into new file `dst`, verifying the result; `dst` is removed on any failure."""
    try:
        with open(src, "rb") as fin, open(dst, "xb") as fout:
            reader = DecompressReader(fin, max_size=expected_size)
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    break
                fout.write(chunk)
                if progress:
                    progress(reader.size, expected_size)
            reader.check(expected_digest, expected_size)
            fout.flush()
            os.fsync(fout.fileno())
        return reader.digest, reader.size
    except BaseException:
        Path(dst).unlink(missing_ok=True)
        raise
