"""Streaming zstd (model tier): determinism, both digests, verification, bounded output."""

from __future__ import annotations

import os

import pytest
import reghelpers as h
import zstandard

from vmctl.errors import IntegrityError
from vmctl.registry import compress


def test_compression_is_deterministic_and_reports_both_digests(tmp_path):
    src = tmp_path / "layer.qcow2"
    src.write_bytes(os.urandom(1 << 20) + bytes(3 << 20))
    a = compress.compress_file(src, tmp_path / "a.zst")
    b = compress.compress_file(src, tmp_path / "b.zst")
    assert a == b == compress.compressed_digest(src)
    assert a.uncompressed_digest == h.file_digest(src) and a.uncompressed_size == 4 << 20
    assert a.digest == h.file_digest(tmp_path / "a.zst") and a.size == (tmp_path / "a.zst").stat().st_size
    assert a.size < a.uncompressed_size
    assert zstandard.ZstdDecompressor().decompress((tmp_path / "a.zst").read_bytes()) == src.read_bytes()


def test_decompress_verifies(tmp_path):
    src = tmp_path / "x"
    src.write_bytes(b"hello" * 100000)
    c = compress.compress_file(src, tmp_path / "x.zst")
    assert compress.decompress_file(tmp_path / "x.zst", tmp_path / "out",
                                    expected_digest=c.uncompressed_digest,
                                    expected_size=c.uncompressed_size) == (c.uncompressed_digest, 500000)
    with pytest.raises(IntegrityError, match="decompresses to"):
        compress.decompress_file(tmp_path / "x.zst", tmp_path / "bad", expected_digest=h.sha256(b"other"))
    assert not (tmp_path / "bad").exists()


def test_decompress_refuses_more_than_announced(tmp_path):
    src = tmp_path / "bomb"
    src.write_bytes(bytes(16 << 20))
    compress.compress_file(src, tmp_path / "bomb.zst")
    with pytest.raises(IntegrityError, match="more than"):
        compress.decompress_file(tmp_path / "bomb.zst", tmp_path / "out", expected_size=1 << 20)
    assert not (tmp_path / "out").exists()


def test_damaged_stream_is_an_integrity_error(tmp_path):
    src = tmp_path / "x"
    src.write_bytes(os.urandom(1 << 20))
    compress.compress_file(src, tmp_path / "x.zst")
    data = bytearray((tmp_path / "x.zst").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "y.zst").write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        compress.decompress_file(tmp_path / "y.zst", tmp_path / "out", expected_size=1 << 20)
    assert not (tmp_path / "out").exists()
