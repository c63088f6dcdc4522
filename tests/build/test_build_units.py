"""Fast tests of the builder's parts: recipes, digests, ELF, kernel modules, cpio, kernel blobs."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vmctl.build import initramfs, load_recipe, recipe_digest
from vmctl.guest import contract as guest_contract
from vmctl.build.elf import read_needed
from vmctl.build.kernel import has_pvh_entry, trim_zero_tail
from vmctl.build.kmod import load_order
from vmctl.build.recipe import find_recipe
from vmctl.errors import NotFoundError, UsageError


def test_tiny_recipe_loads():
    r = load_recipe("tiny")
    assert r.name == "tiny" and r.data["user"] == "root" and r.data["cloud_init"] is True
    assert "root=/dev/vda" in r.boot["cmdline"] and "console=ttyS0" in r.boot["cmdline"]
    names = [n for n, _ in r.guest_files()]
    assert "guest/busybox/initramfs/init" in names
    assert "guest/busybox/rootfs/usr/lib/vmctl/nocloud.sh" in names


def test_digest_is_stable_and_tracks_guest_files(tmp_path):
    d = recipe_digest("tiny")
    assert d == recipe_digest("tiny") and d.startswith("sha256:") and len(d) == 71
    # a copy of templates with one guest file changed gets another digest
    src = find_recipe("tiny").parent.parent
    shutil.copytree(src, tmp_path / "t")
    copy = tmp_path / "t" / "recipes" / "tiny.toml"
    assert recipe_digest(copy) == d
    (tmp_path / "t" / "guest" / "busybox" / "rootfs" / "etc" / "hostname").write_text("other\n")
    assert recipe_digest(copy) != d


@pytest.mark.parametrize("name", ["../etc/passwd", "Tiny!", ""])
def test_bad_recipe_names(name):
    with pytest.raises((UsageError, NotFoundError)):
        load_recipe(name)


def test_missing_recipe():
    with pytest.raises(NotFoundError):
        load_recipe("no-such-recipe")


def test_recipe_paths_cannot_leave_templates(tmp_path):
    src = find_recipe("tiny").parent.parent
    shutil.copytree(src, tmp_path / "t")
    p = tmp_path / "t" / "recipes" / "tiny.toml"
    p.write_text(p.read_text().replace('tree = "guest/busybox/rootfs"', 'tree = "../../../etc"'))
    with pytest.raises(UsageError):
        recipe_digest(p)


def test_read_needed_of_a_host_binary():
    needed, interp = read_needed(Path(shutil.which("ls")).resolve())
    assert "libc.so.6" in needed and interp and interp.endswith("ld-linux-x86-64.so.2")


def test_load_order_puts_dependencies_first(tmp_path):
    def mod(name, deps):
        p = tmp_path / f"{name}.ko"
        p.write_bytes(b"junk\x00name=" + name.encode() + b"\x00depends=" + ",".join(deps).encode() + b"\x00")
        return p
    index = {"ext4": mod("ext4", ["jbd2", "mbcache", "crc16"]), "jbd2": mod("jbd2", []),
             "mbcache": mod("mbcache", []), "crc16": mod("crc16", [])}
    assert load_order(["ext4"], index, set()) == ["jbd2", "mbcache", "crc16", "ext4"]
    assert load_order(["ext4"], index, {"crc16"}) == ["jbd2", "mbcache", "ext4"]
    with pytest.raises(KeyError):
        load_order(["nope"], index, set())


def test_cpio_is_readable_by_cpio(tmp_path):
    entries = [initramfs.directory("bin"), initramfs.file("bin/hello", b"hi\n", 0o755),
               initramfs.symlink("bin/link", "hello"), initramfs.file("init", b"#!/bin/sh\n", 0o755)]
    dest = tmp_path / "initrd.img"
    initramfs.write_initramfs(entries, dest)
    data = gzip.decompress(dest.read_bytes())
    cpio = shutil.which("cpio")
    if cpio is None:
        pytest.skip("cpio not installed")
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run([cpio, "-idm", "--quiet"], input=data, cwd=out, check=True)
    assert (out / "bin" / "hello").read_bytes() == b"hi\n"
    assert (out / "bin" / "link").is_symlink() and (out / "init").stat().st_mode & 0o111


def _elf(segments, notes=b"", tail=b""):
    """A minimal ELF64 with PT_LOAD segments given as bytes and an optional PT_NOTE."""
    phnum = len(segments) + (1 if notes else 0)
    off = 64 + 56 * phnum
    body, phdrs = b"", b""
    for seg in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 5, off + len(body), 0, 0, len(seg), len(seg), 1)
        body += seg
    if notes:
        phdrs += struct.pack("<IIQQQQQQ", 4, 4, off + len(body), 0, 0, len(notes), len(notes), 4)
        body += notes
    header = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    return header + phdrs + body + tail


def test_pvh_note_and_trim():
    note = struct.pack("<III", 4, 4, 18) + b"Xen\x00" + b"\x00\x00\x00\x01"
    elf = _elf([b"code", b"data" + b"\x00" * 1000], notes=note)
    assert has_pvh_entry(elf)
    assert not has_pvh_entry(_elf([b"code"], notes=struct.pack("<III", 4, 4, 17) + b"Xen\x00" + b"\x00" * 4))
    # the note comes after the segments here, so nothing is trimmed; without it the zeros go
    assert trim_zero_tail(elf) == elf
    plain = _elf([b"code", b"data" + b"\x00" * 1000])
    trimmed = trim_zero_tail(plain)
    assert len(trimmed) == len(plain) - 1000
    filesz, memsz = struct.unpack_from("<QQ", trimmed, 64 + 56 + 32)
    assert (filesz, memsz) == (4, 1004)


def test_guest_contract_parsing():
    text = "\n".join(["noise", guest_contract.FINGERPRINTS_BEGIN,
                      "256 SHA256:abcDEF+/09 root@tiny (ED25519)", "garbage",
                      "3072 SHA256:xyz root@tiny (RSA)", guest_contract.FINGERPRINTS_END,
                      "vmctl-guest: up 5.12 s", guest_contract.READY_LINE + "\r", ""])
    fps = guest_contract.parse_fingerprints(text)
    assert [f["fingerprint"] for f in fps] == ["SHA256:abcDEF+/09", "SHA256:xyz"]
    assert fps[1]["bits"] == "3072" and fps[1]["type"] == "RSA"
    assert guest_contract.is_ready(text)
    assert not guest_contract.is_ready("vmctl-guest: ready-ish")
    assert guest_contract.parse_fingerprints(guest_contract.FINGERPRINTS_BEGIN) == []


def test_grub_cfg_refuses_shell_text():
    from vmctl.build.bootloader import grub_cfg
    assert "linux /boot/vmlinuz root=/dev/vda1 console=ttyS0\n" in grub_cfg("root=/dev/vda1 console=ttyS0")
    for bad in ["root=/dev/vda1; reboot", "a\nboot", "$(x)", "x'y"]:
        with pytest.raises(UsageError):
            grub_cfg(bad)


def test_tiny_bios_recipe_loads():
    r = load_recipe("tiny-bios")
    assert r.boot["kind"] == "firmware" and "root=/dev/vda1" in r.boot["cmdline"]
    assert recipe_digest("tiny-bios") != recipe_digest("tiny")
