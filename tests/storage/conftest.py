"""Fixtures for the image store tests: a store per test, small disks."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from storage_helpers import QEMU_USER, make_qcow2, make_raw, qemu_user_available  # noqa: E402

from vmctl.storage import ImageStore  # noqa: E402


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "root", None)


@pytest.fixture
def qemu_tmp():
    """A temp dir outside pytest's basetemp: pytest (ours or a concurrent run) chmods
    /tmp/pytest-of-<user> to 0700, which clears the ACL mask and with it QEMU's search right."""
    path = Path(tempfile.mkdtemp(prefix="vmctl-storage-test-"))
    path.chmod(0o711)  # not vmctl's: QEMU must be let through by its owner, as a user would
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def acl_store(qemu_tmp) -> ImageStore:
    if not qemu_user_available():
        pytest.skip(f"needs root, setfacl and the {QEMU_USER} user")
    return ImageStore(qemu_tmp / "root", QEMU_USER)


@pytest.fixture
def raw_disk(tmp_path) -> Path:
    return make_raw(tmp_path / "disk.raw")


@pytest.fixture
def qcow2_disk(tmp_path) -> Path:
    return make_qcow2(tmp_path / "disk.qcow2")
