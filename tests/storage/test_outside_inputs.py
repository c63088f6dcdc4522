"""Disk files and image configs from outside: file names qemu-img would read as protocols, layers
that do not say their parent's format, config fields of the wrong type or range."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.figures import record
from vmctl.errors import IntegrityError, UsageError
from vmctl.storage import ImageStore, probe, qemu_img
from vmctl.storage.manifest import parse_manifest, validate_config

MiB = 1 << 20

PROTOCOL_NAMES = [
    'json:{"driver":"raw","file":{"driver":"null-co","size":1048576}}',  # zeros, not the file
    "nbd:127.0.0.1:1",
    "file:etc",
    "http:x",
    "null-co:",
]


@pytest.mark.parametrize("name", PROTOCOL_NAMES)
def test_a_file_named_like_a_qemu_protocol_is_read_as_that_file(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    content = os.urandom(MiB)
    Path(name).write_bytes(content)
    store = ImageStore(tmp_path / "root", None)
    image = store.import_image(Path(name), "x:1", fmt="raw", created=1)
    out = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(image.top_layer), str(out)], check=True)
    assert out.read_bytes()[:MiB] == content
    record("hostile disk inputs tried", 1)


def test_qemu_img_gets_absolute_paths_and_plain_backing_names():
    assert qemu_img.local("json:{x}") == os.path.join(os.getcwd(), "json:{x}")
    with pytest.raises(ValueError):
        qemu_img._backing("json:{}")
    with pytest.raises(ValueError):
        qemu_img._backing("..")
    assert qemu_img._backing("a" * 64 + ".qcow2") == "a" * 64 + ".qcow2"


@pytest.mark.parametrize("special", ["fifo", "dir"])
def test_import_refuses_what_is_not_a_file_or_block_device(tmp_path, special):
    path = tmp_path / "src"
    os.mkfifo(path) if special == "fifo" else path.mkdir()
    with pytest.raises(UsageError):
        ImageStore(tmp_path / "root", None).import_image(path, "x:1", created=1)


def test_a_child_layer_must_name_its_parent_as_qcow2(tmp_path):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "4M"], check=True)
    for fmt, ok in (("qcow2", True), ("raw", False)):
        child = tmp_path / f"child-{fmt}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", "base.qcow2", str(child)],
                       check=True, cwd=tmp_path)
        if ok:
            assert probe.check_standalone_qcow2(child, allowed_backing="base.qcow2").backing_format == "qcow2"
        else:
            with pytest.raises(UsageError, match="backing format"):
                probe.check_standalone_qcow2(child, allowed_backing="base.qcow2")
    # no backing format at all: rewrite the header extension away with -u and an empty format
    bare = tmp_path / "bare.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(bare), "4M"], check=True)
    _set_backing_without_format(bare, b"base.qcow2")
    with pytest.raises(UsageError, match="no format"):
        probe.check_standalone_qcow2(bare, allowed_backing="base.qcow2")


def _set_backing_without_format(path: Path, name: bytes) -> None:
    """Point a qcow2 header at `name` with no backing-format extension (as old tools wrote)."""
    import struct

    with open(path, "r+b") as fh:
        head = bytearray(fh.read(4096))
        header_len = struct.unpack(">I", head[100:104])[0]
        off = 4096 - 512
        head[off:off + len(name)] = name
        struct.pack_into(">QI", head, 8, off, len(name))
        head[header_len:header_len + 8] = b"\0" * 8  # end of header extensions right away
        fh.seek(0)
        fh.write(head)


@pytest.fixture
def image(tmp_path):
    store = ImageStore(tmp_path / "root", None)
    disk = tmp_path / "d.raw"
    disk.write_bytes(os.urandom(MiB))
    im = store.import_image(disk, "x:1", created=1)
    return parse_manifest(store.blobs.read(im.id)), im.config


BAD_CONFIGS = {
    "cpus as a string": lambda c: c["defaults"].update(cpus="many"),
    "cpus as a boolean": lambda c: c["defaults"].update(cpus=True),
    "zero cpus": lambda c: c["defaults"].update(cpus=0),
    "a huge memory": lambda c: c["defaults"].update(memory_mib=1 << 60),
    "less memory than any guest boots in": lambda c: c["defaults"].update(memory_mib=16),
    "more CPUs than a machine addresses": lambda c: c["defaults"].update(cpus=4096),
    "an unknown default": lambda c: c["defaults"].update(gpus=4),
    "a login user with a space": lambda c: c.update(user="root; rm -rf /"),
    "a login user that is a number": lambda c: c.update(user=0),
    "a label value that is a list": lambda c: c["labels"].update(a=[1]),
    "a label key with a newline": lambda c: c["labels"].update({"a\nb": "x"}),
    "a creation time that is not a time": lambda c: c.update(created="yesterday"),
    "a history entry that is a string": lambda c: c["history"].append("x"),
    "a history comment that is a number": lambda c: c["history"].append({"comment": 5}),
    "a kernel command line with a NUL": lambda c: c.update(boot={"kind": "firmware", "firmware": "bios"}) or
    c.update(boot={"kind": "kernel", "kernel": "x", "cmdline": "a\0b"}),
    "an architecture with a slash": lambda c: c.update(architecture="../x86"),
    "a firmware that is a list": lambda c: c.update(boot={"kind": "firmware", "firmware": ["bios"]}),
    "a parent that is a path": lambda c: c.update(parent="../../etc"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_every_config_field_vmctl_uses_is_type_checked(image, case):
    parsed, config = image
    bad = json.loads(json.dumps(config))
    BAD_CONFIGS[case](bad)
    with pytest.raises(IntegrityError) as info:
        validate_config(bad, parsed)
    assert "\n" not in str(info.value)
    record("hostile image configs refused", 1)
    assert validate_config(json.loads(json.dumps(config)), parsed)
