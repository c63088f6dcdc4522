"""A Debian 12 cloud-style guest built from Debian packages: the stand-in for images vmctl did not make.

What a distribution's cloud image is, made here with the distribution's own tools and nothing of
vmctl's inside: debootstrap (systemd, the distribution's cloud-init, OpenSSH, qemu-guest-agent,
cloud-guest-utils for growpart, the cloud kernel), GRUB installed by ``grub-install`` itself on a
partitioned whole disk -- in the BIOS boot partition for SeaBIOS and as the removable
``EFI/BOOT/BOOTX64.EFI`` (shim and the signed GRUB, so secure boot works) on an EFI system partition
for OVMF. Its default user is configured the way a distribution does it (``system_info:
default_user`` in ``/etc/cloud/cloud.cfg.d``) under a name vmctl cannot guess, and root login is
disabled as cloud-init does everywhere.

One root filesystem gives three disks, each a plain qcow2 file as a vendor would publish it:

``hybrid``  BIOS boot partition + EFI system partition + root (as Debian's own cloud images);
``bios``    the EFI system partition's type set to plain data (SeaBIOS only);
``uefi``    no BIOS boot partition, no MBR boot code (UEFI only).

Build steps need root (debootstrap, chroot) but no loop device and no mount on the host: the root
filesystem is filled with ``mkfs.ext4 -d``, the partition table written with ``sgdisk`` on a file,
and GRUB installed from inside the guest's own kernel booted once under QEMU (the installer script
removes itself before powering off). Results are cached by the recipe's hash, so a CI run builds
once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("VMCTL_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: the image's default user: a name no tool could guess, as with any vendor's image
DEFAULT_USER = "kestrel"
PACKAGES = (
    "systemd-sysv", "udev", "dbus", "cloud-init", "openssh-server", "qemu-guest-agent",
    "cloud-guest-utils", "linux-image-cloud-amd64", "grub-pc-bin", "grub-efi-amd64-bin",
    "grub-efi-amd64-signed", "shim-signed", "grub2-common", "e2fsprogs", "dosfstools", "sudo",
    "ifupdown", "isc-dhcp-client", "netbase", "iproute2", "procps", "ca-certificates",
    # debootstrap resolves no virtual package: the provider of python3-cryptography's cffi API
    "python3-cffi-backend",
)
DISK_BYTES = 2 << 30
ESP_MIB = 63
ROOT_START_MIB = 65

CLOUD_CFG = {
    "system_info": {
        "default_user": {
            "name": DEFAULT_USER, "lock_passwd": True, "gecos": "Cloud user",
            "groups": ["adm", "sudo"], "sudo": ["ALL=(ALL) NOPASSWD:ALL"], "shell": "/bin/bash",
        },
    },
    "datasource_list": ["NoCloud", "None"],
    # no locale is generated in a minimal root: C.UTF-8 is always there (else cc_locale fails)
    "locale": "C.UTF-8",
}

# Run once as PID 1 of the installer boot: the distribution's grub-install for both firmwares.
INSTALLER = """#!/bin/sh
set -eu
# the initramfs has mounted these already (and moved them into this root); not a plain kernel
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mount -o remount,rw /
mkdir -p /boot/efi; mount -t vfat /dev/vda2 /boot/efi
grub-install --target=i386-pc --modules="part_gpt ext2" /dev/vda
grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram --uefi-secure-boot
update-grub
rm -f "$0"
umount /boot/efi; sync; mount -o remount,ro / 2>/dev/null || sync
echo CLOUDGUEST-INSTALL-OK
echo o > /proc/sysrq-trigger
sleep 30
"""
INSTALLER_PATH = "/sbin/cloudguest-install-bootloader"

GRUB_DEFAULT = """GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""


@dataclass(frozen=True)
class CloudGuest:
    """The built disks (qcow2 files) and what a test needs to know about them."""

    hybrid: Path
    bios: Path
    uefi: Path
    default_user: str = DEFAULT_USER
    recipe_hash: str = ""


def recipe_hash() -> str:
    """What the cached disks depend on: suite, packages, configuration and this file's steps."""
    text = json.dumps({"suite": SUITE, "packages": PACKAGES, "cfg": CLOUD_CFG, "grub": GRUB_DEFAULT,
                       "installer": INSTALLER, "disk": [DISK_BYTES, ESP_MIB, ROOT_START_MIB], "v": 3},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def _debootstrap(root: Path, debs: Path) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    _run(["debootstrap", "--variant=minbase", f"--cache-dir={debs}", f"--include={','.join(PACKAGES)}",
          SUITE, str(root), MIRROR], timeout=3600)


def _configure(root: Path, root_uuid: str) -> None:
    import yaml

    (root / "etc/cloud/cloud.cfg.d/90-distro-default-user.cfg").write_text(
        "# the distribution's choices, as a vendor's image sets them\n" + yaml.safe_dump(CLOUD_CFG))
    (root / "etc/fstab").write_text(f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n"
                                    "LABEL=ESP /boot/efi vfat umask=0077,nofail 0 1\n")
    (root / "etc/default/grub").write_text(GRUB_DEFAULT)
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/network/interfaces").write_text(
        "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n")
    (root / "etc/network/interfaces.d").mkdir(exist_ok=True)
    # Each boot of each copy makes its own identity: no machine-id, no host keys baked in.
    (root / "etc/machine-id").write_text("")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    installer = root / INSTALLER_PATH.lstrip("/")
    installer.write_text(INSTALLER)
    installer.chmod(0o755)
    _run(["chroot", str(root), "apt-get", "clean"])
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)


def _assemble(root: Path, disk: Path, root_uuid: str, work: Path) -> None:
    with open(disk, "wb") as fh:
        fh.truncate(DISK_BYTES)
    _run(["sgdisk", "-n", "1:2048:+1M", "-t", "1:EF02", "-c", "1:bios",
          "-n", f"2:4096:+{ESP_MIB}M", "-t", "2:EF00", "-c", "2:esp",
          "-n", f"3:{ROOT_START_MIB * 2048}:0", "-t", "3:8304", "-c", "3:root", str(disk)])
    root_bytes = DISK_BYTES - ROOT_START_MIB * (1 << 20) - (1 << 20)
    rootimg = work / "root.img"
    _run(["mkfs.ext4", "-q", "-L", "rootfs", "-U", root_uuid, "-d", str(root), str(rootimg),
          f"{root_bytes >> 10}k"], timeout=1800)
    esp = work / "esp.img"
    _run(["mkfs.vfat", "-n", "ESP", "-C", str(esp), str(ESP_MIB << 10)])
    for img, start_mib in ((esp, 2), (rootimg, ROOT_START_MIB)):
        _run(["dd", f"if={img}", f"of={disk}", "bs=1M", f"seek={start_mib}", "conv=notrunc,sparse",
              "status=none"], timeout=1800)
        img.unlink()


def _install_bootloader(root: Path, disk: Path, log: Path) -> None:
    kernel = sorted((root / "boot").glob("vmlinuz-*"))[-1]
    initrd = sorted((root / "boot").glob("initrd.img-*"))[-1]
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "1024", "-smp", "2",
            "-nodefaults", "-no-reboot", "-display", "none", "-serial", f"file:{log}",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", f"root=/dev/vda3 ro console=ttyS0 panic=-1 init={INSTALLER_PATH}",
            "-drive", f"file={disk},format=raw,if=virtio,cache=unsafe"]
    subprocess.run(argv, timeout=1200, check=False, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = log.read_text(errors="replace")
    if "CLOUDGUEST-INSTALL-OK" not in text:
        raise RuntimeError(f"the bootloader install boot failed; its console:\n{text[-3000:]}")


def _variant(hybrid_raw: Path, out: Path, kind: str, work: Path) -> None:
    raw = work / f"{kind}.raw"
    _run(["cp", "--sparse=always", str(hybrid_raw), str(raw)])
    if kind == "bios":
        _run(["sgdisk", "-t", "2:0700", str(raw)])          # ESP -> plain data: SeaBIOS only
    elif kind == "uefi":
        _run(["sgdisk", "-d", "1", str(raw)])                # no BIOS boot partition
        with open(raw, "r+b") as fh:                          # and no boot code in the MBR
            fh.write(b"\0" * 440)
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)], timeout=1800)
    raw.unlink()


def build_cloud_guest(cache: Path, *, log=print) -> CloudGuest:
    """The three disks under ``cache/<recipe hash>/``, built now unless a complete build is there."""
    h = recipe_hash()
    final = cache / h
    disks = {k: final / f"debian12-cloud-{k}.qcow2" for k in ("hybrid", "bios", "uefi")}
    if (final / "done").exists():
        return CloudGuest(recipe_hash=h, **disks)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cloudguest-", dir=cache))
    try:
        t0 = time.monotonic()
        root = work / "root"
        log(f"cloudguest: debootstrap {SUITE} ({len(PACKAGES)} packages)")
        _debootstrap(root, cache / "debs")
        root_uuid = str(uuid.uuid4())
        _configure(root, root_uuid)
        raw = work / "hybrid.raw"
        log("cloudguest: filling the disk")
        _assemble(root, raw, root_uuid, work)
        log("cloudguest: grub-install inside the guest (BIOS and UEFI)")
        _install_bootloader(root, raw, work / "install.log")
        shutil.rmtree(root)
        out = work / "out"
        out.mkdir()
        for kind in ("bios", "uefi"):
            _variant(raw, out / disks[kind].name, kind, work)
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out / disks["hybrid"].name)],
             timeout=1800)
        (out / "done").write_text(json.dumps({"seconds": round(time.monotonic() - t0, 1)}))
        if final.exists():
            shutil.rmtree(final)
        os.rename(out, final)
        log(f"cloudguest: built in {time.monotonic() - t0:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CloudGuest(recipe_hash=h, **disks)


if __name__ == "__main__":  # pragma: no cover - a manual build: python -m tests.cloudguest.build DIR
    import sys

    print(build_cloud_guest(Path(sys.argv[1])))
