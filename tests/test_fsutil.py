"""fsutil's durable writes: all or nothing, private from the first byte, no temporary left."""

import os
import stat

import pytest

from vmctl.fsutil import atomic_file, atomic_write


def test_atomic_file_replaces_only_on_success_and_leaves_no_sibling(tmp_path):
    target = tmp_path / "archive.tar"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive.tar"]

    with atomic_file(target, mode=0o600) as fh:
        fh.write(b"new")
        # while streaming, the sibling is already private
        siblings = [p for p in tmp_path.iterdir() if p.name != "archive.tar"]
        assert len(siblings) == 1 and stat.S_IMODE(siblings[0].stat().st_mode) == 0o600
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive.tar"]


def test_atomic_write_mode_ignores_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        atomic_write(tmp_path / "key", b"secret", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
