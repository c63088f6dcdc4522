"""End to end: build ``tiny``, boot it under QEMU/TCG with a vmctl seed, SSH in, power it off."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import time

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from vmctl.build import build
from vmctl.guest import contract as guest_contract
from vmctl.build.testing import DirectBoot, test_cache_dir
from vmctl.seed import HostKey, generate_host_key, write_seed

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU")]


def test_second_build_is_cached(tiny_build, tmp_path):
    cache = tiny_build.disk.parent.parent.parent
    t0 = time.monotonic()
    again = build("tiny", cache, tmp_path, packages_cache=test_cache_dir())
    assert time.monotonic() - t0 < 5
    assert again.cached and again.disk == tiny_build.disk and again.recipe_digest == tiny_build.recipe_digest


def test_build_result_shape(tiny_build):
    r = tiny_build
    assert r.boot_kind == "kernel" and r.architecture == "x86_64" and r.user == "root" and r.cloud_init
    assert r.defaults["cpus"] >= 1 and r.defaults["memory_mib"] >= 128 and r.defaults["disk_bytes"] > 100 << 20
    assert r.labels["org.vmctl.recipe"] == "tiny"
    info = subprocess.run(["qemu-img", "info", "-f", "qcow2", "--output=json", str(r.disk)],
                          capture_output=True, text=True, check=True).stdout
    assert '"backing-filename"' not in info and '"format": "qcow2"' in info
    assert r.initrd.stat().st_size < 4 << 20
    # The seed cdrom's SATA stack loads in the initramfs's background (tiny.toml's
    # initrd_background_modules, dependencies first), apart from the root disk's modules.
    files = _cpio_files(gzip.decompress(r.initrd.read_bytes()))
    background = files["etc/modules.background"].decode().split()
    order = files["etc/modules.order"].decode().split()
    assert {"ahci", "sr_mod", "isofs"} <= set(background) and not set(background) & set(order)
    assert background.index("libata") < background.index("ahci") and background.index("cdrom") < background.index("sr_mod")
    assert all(f"lib/modules/{m}.ko" in files for m in background + order)


def _cpio_files(data: bytes) -> dict[str, bytes]:
    """Regular files of a newc cpio archive, by name."""
    files, pos = {}, 0
    while data[pos:pos + 6] == b"070701":
        head = data[pos:pos + 110]
        mode, size, namesize = int(head[14:22], 16), int(head[54:62], 16), int(head[94:102], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        start = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            break
        if mode & 0o170000 == 0o100000:
            files[name] = data[start:start + size]
        pos = (start + size + 3) & ~3
    return files


def _client_key():
    key = ed25519.Ed25519PrivateKey.generate()
    text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(text))
    return pkey, f"{pkey.get_name()} {pkey.get_base64()} test@vmctl"


def _ssh(boot: DirectBoot, pkey, host_key_public: str) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    kind, b64 = host_key_public.split()[:2]
    client.get_host_keys().add(f"[127.0.0.1]:{boot.port}", kind, paramiko.PKey.from_type_string(kind, __import__("base64").b64decode(b64)))
    client.connect("127.0.0.1", port=boot.port, username="root", pkey=pkey, timeout=20,
                   banner_timeout=20, auth_timeout=20, allow_agent=False, look_for_keys=False)
    return client


def _run(client: paramiko.SSHClient, command: str) -> str:
    _in, out, err = client.exec_command(command, timeout=20)
    status = out.channel.recv_exit_status()
    assert status == 0, err.read().decode()
    return out.read().decode()


def _host_key_of(key) -> HostKey:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return HostKey(private, public)


def test_boot_seed_ssh_and_clean_poweroff(tiny_build, tmp_path):
    host_key = generate_host_key()
    other_keys = [_host_key_of(rsa.generate_private_key(65537, 2048)),
                  _host_key_of(ec.generate_private_key(ec.SECP256R1()))]
    pkey, authorized = _client_key()
    seed = tmp_path / "seed.iso"
    write_seed(seed, instance_id="iid-e2e-1", hostname="tiny-e2e", authorized_keys=[authorized],
               host_keys=[host_key, *other_keys],
               user_data="#!/bin/sh\necho \"script $(hostname)\" > /root/script-marker\n",
               extra_runcmd=["echo runcmd-ok >> /root/marker", ["touch", "/root/argv marker"]])
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(tiny_build.disk),
                    str(disk)], check=True)
    with DirectBoot(tiny_build, seed, tmp_path, disk=disk) as boot:
        ready = boot.wait_for(r"^vmctl-guest: ready\r?$", timeout=90)
        text = boot.text()
        fingerprints = guest_contract.parse_fingerprints(text)
        assert {"bits": "256", "fingerprint": host_key.fingerprint, "comment": "root@tiny-e2e",
                "type": "ED25519"} in fingerprints, text
        assert {"bits": "2048", "fingerprint": other_keys[0].fingerprint, "comment": "root@tiny-e2e",
                "type": "RSA"} in fingerprints, text
        assert other_keys[1].fingerprint in [f["fingerprint"] for f in fingerprints if f["type"] == "ECDSA"]
        client = _ssh(boot, pkey, host_key.public)
        try:
            assert _run(client, "hostname").strip() == "tiny-e2e"
            assert _run(client, "cat /root/marker").strip() == "runcmd-ok"
            assert _run(client, "cat /root/script-marker").strip() == "script tiny-e2e"
            assert _run(client, "ls /root/'argv marker'").strip() == "/root/argv marker"
        finally:
            client.close()
        print(f"ready after {ready:.1f}s")

        boot.qmp("system_powerdown")
        assert boot.wait_exit(timeout=30) == 0
        assert guest_contract.CLEAN_SHUTDOWN_LINE in boot.text()
        raw = tmp_path / "after.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(boot.disk), str(raw)], check=True)
        fsck = subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    # A restart with the same seed (same instance): same host key, runcmd not run again.
    with DirectBoot(tiny_build, seed, tmp_path, disk=disk) as boot:
        boot.wait_for(r"^vmctl-guest: ready\r?$", timeout=90)
        assert host_key.fingerprint in [f["fingerprint"] for f in guest_contract.parse_fingerprints(boot.text())]
        client = _ssh(boot, pkey, host_key.public)
        try:
            assert _run(client, "cat /root/marker").strip() == "runcmd-ok"
        finally:
            client.close()
        boot.qmp("system_powerdown")
        assert boot.wait_exit(timeout=30) == 0


def test_boot_without_seed_generates_a_host_key(tiny_build, tmp_path):
    with DirectBoot(tiny_build, None, tmp_path, extra_cmdline="") as boot:
        boot.wait_for(r"^vmctl-guest: ready\r?$", timeout=90)
        fps = guest_contract.parse_fingerprints(boot.text())
        assert len(fps) == 1 and fps[0]["type"] == "ED25519"
        boot.qmp("system_powerdown")
        assert boot.wait_exit(timeout=30) == 0


def test_firmware_image_boots_by_itself(tiny_bios_build, tmp_path):
    """tiny-bios: no -kernel; SeaBIOS boots GRUB from the MBR, GRUB the kernel from /boot."""
    r = tiny_bios_build
    assert r.boot_kind == "firmware"
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(r.disk), str(raw)], check=True)
    with open(raw, "rb") as f:
        mbr = f.read(512)
    assert mbr[510:] == b"\x55\xaa" and mbr[446] == 0x80 and mbr[450] == 0x83
    host_key = generate_host_key()
    seed = tmp_path / "seed.iso"
    write_seed(seed, instance_id="iid-bios", hostname="tiny-bios", authorized_keys=[], host_keys=[host_key])
    with DirectBoot(r, seed, tmp_path) as boot:
        boot.wait_for(r"^vmctl-guest: ready\r?$", timeout=120)
        assert host_key.fingerprint in [f["fingerprint"] for f in guest_contract.parse_fingerprints(boot.text())]
        boot.qmp("system_powerdown")
        assert boot.wait_exit(timeout=30) == 0
        assert guest_contract.CLEAN_SHUTDOWN_LINE in boot.text()
