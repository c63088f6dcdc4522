"""The golden table: CLI lines and the fixed inputs that make their XML deterministic.

Each case names the `vmctl create ... --print-xml` line it stands for and the `DomainInputs` that
line resolves to with every volatile value pinned (uuid, SSH port, data root, creation time, host
key, accelerator, passt support). Golden files live in tests/data/domain/<case>.xml; run with
``VMCTL_REGENERATE=1`` to rewrite them, then review the diff.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vmctl.core.plan import DomainInputs
from vmctl.core.limits import Limits
from vmctl.core.ports import parse_port
from vmctl.core.volumes import VolumeMount

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDEN_DIR = DATA / "domain"
INVALID_DIR = DATA / "domain-invalid"
TEST_CONFIG_HOME = DATA / "config"      # user profile dir with test profiles (vnc, tcg-custom)
ROOT = "/var/tmp/vmctl-golden"          # VMCTL_ROOT the CLI form of the table uses
SSH_PORT = 40022
CREATED = "2026-01-02T03:04:05Z"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdvbGRlbi1ob3N0LWtleS1mb3ItdGVzdHMtb25seQ vmctl-host-key"
IMAGE_ID = "sha256:" + "5e" * 32
GENID = "9e7d6c5b-4a39-4821-9f0e-1d2c3b4a5968"   # every VM gets a fresh VM generation ID
# a VM on a vmctl host keeps its record in its domain; the CLI form's (host key, time) is replaced by this
HOST_RECORD = '{"host": "h1", "name": "far", "ssh_host": "127.0.0.2", "ssh_port": 40022}'
HOST_ADDRESS = "127.0.0.2"   # loopback: the golden test never reaches a real host


def _inputs(name: str, uuid: str, **kw) -> DomainInputs:
    base = dict(
        name=name, uuid=uuid, mode="hosted", profile="hosted", image_ref="debian:12",
        image_id=IMAGE_ID, virt_type="qemu", cpus=1, memory_mib=1024,
        disk=f"{ROOT}/instances/{name}/disk.qcow2", seed=f"{ROOT}/instances/{name}/seed.iso",
        serial_log=f"{ROOT}/instances/{name}/serial.log", network="user",
        ssh_host_port=SSH_PORT, ssh_host_key=HOST_KEY, created=CREATED, genid=GENID,
    )
    base.update(kw)
    return DomainInputs(**base)


# case name -> (CLI line, profile name, inputs)
CASES: dict[str, tuple[str, str, DomainInputs]] = {
    "hosted-tcg-forwards": (
        "vmctl create web --image debian:12 -p 8080:80 -p 127.0.0.1:5353:53/udp --restrict-network --print-xml",
        "hosted",
        _inputs("web", "0c5f6f7e-1b2a-4c3d-8e9f-a0b1c2d3e4f5", restrict=True,
                ports=(parse_port("8080:80"), parse_port("127.0.0.1:5353:53/udp"))),
    ),
    "hosted-kvm-kernel": (
        "vmctl create tiny --image busybox:latest --cpus 2 --memory 256M --print-xml   # image boots a kernel directly; KVM usable",
        "hosted",
        _inputs("tiny", "1d2e3f40-5a6b-4c7d-9e8f-102132435465", image_ref="busybox:latest",
                virt_type="kvm", cpus=2, memory_mib=256, boot_kind="kernel",
                kernel=f"{ROOT}/images/sha256/{'5e' * 32}/vmlinuz",
                initrd=f"{ROOT}/images/sha256/{'5e' * 32}/initrd.img",
                cmdline="root=/dev/vda rw console=ttyS0 quiet", seed=None),
    ),
    "hosted-passt": (
        "vmctl create api --image debian:12 -p 8443:443 -p 6000:6000/udp --print-xml   # libvirt with working passt",
        "hosted",
        _inputs("api", "2e3f4051-6b7c-4d8e-af90-213243546576", passt_supported=True,
                ports=(parse_port("8443:443"), parse_port("6000:6000/udp"))),
    ),
    "hosted-passt-restrict": (
        "vmctl create iso --image debian:12 --restrict-network --print-xml   # passt cannot restrict: slirp",
        "hosted",
        _inputs("iso", "3f405162-7c8d-4e9f-b0a1-324354657687", passt_supported=True, restrict=True),
    ),
    "kvm-network-uefi": (
        "vmctl --mode system create db --image debian:12-uefi --cpus 2 --memory 2G --print-xml",
        "kvm",
        _inputs("db", "40516273-8d9e-4fa0-81b2-435465768798", mode="system", profile="kvm",
                image_ref="debian:12-uefi", virt_type="kvm", cpus=2, memory_mib=2048,
                firmware="uefi", network="network", network_name="default", ssh_host_port=None),
    ),
    "uefi-secure-tpm": (
        "vmctl create vault --image debian:12-uefi --secure-boot --tpm --print-xml",
        "hosted",
        _inputs("vault", "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", image_ref="debian:12-uefi",
                firmware="uefi", secure_boot=True, tpm=True),
    ),
    "volumes": (
        "vmctl create share --image debian:12 -v /usr/share/doc:/doc:ro --mount type=bind,source=/srv,target=/srv/data --print-xml   # virtio-fs host",
        "hosted",
        # root may bind-mount: the read-only volume is virtio-fs over a read-only bind mount
        _inputs("share", "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e", volumes=(
            VolumeMount("/usr/share/doc", "/doc", True, "virtiofs", "vmctl0", f"{ROOT}/instances/share/volumes/vmctl0"),
            VolumeMount("/srv", "/srv/data", False, "virtiofs", "vmctl1"))),
    ),
    "volumes-9p": (
        "vmctl create nine --image debian:12 -v /usr/share/doc:/doc:ro -v /srv:/srv/data --print-xml   # no virtio-fs",
        "hosted",
        _inputs("nine", "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a", volumes=(
            VolumeMount("/usr/share/doc", "/doc", True, "9p", "vmctl0"),
            VolumeMount("/srv", "/srv/data", False, "9p", "vmctl1"))),
    ),
    "limits": (
        "vmctl create capped --image debian:12 --max-cpus 2 --cpu-shares 512 --cpu-quota 50 --memory-limit 1600M --io-weight 300 --io-read-bps 20M/s --io-write-bps 10M/s --print-xml",
        "hosted",
        _inputs("capped", "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", max_cpus=2, limits=Limits(
            cpu_shares=512, cpu_quota_percent=50, memory_limit_bytes=1600 << 20, io_weight=300,
            io_read_bps=20 << 20, io_write_bps=10 << 20)),
    ),
    "kvm-bridge-tcg": (
        "vmctl --mode system create edge --image debian:12 --cpus 2 --memory 2G --bridge br0 --print-xml   # KVM not usable: TCG",
        "kvm",
        _inputs("edge", "51627384-9eaf-4b01-92c3-5465768798a9", mode="system", profile="kvm",
                cpus=2, memory_mib=2048, network="bridge", network_name="br0",
                ssh_host_port=None),
    ),
    "vnc": (
        "vmctl create desk --image debian:12 --profile vnc --print-xml   # user profile dir",
        "vnc",
        _inputs("desk", "62738495-afb0-4c12-a3d4-65768798a9ba", profile="vnc"),
    ),
    "tcg-custom": (
        "vmctl create old --image debian:12 --profile tcg-custom --print-xml   # user profile dir",
        "tcg-custom",
        _inputs("old", "738495a6-b0c1-4d23-b4e5-768798a9bacb", profile="tcg-custom"),
    ),
    "dense": (
        "vmctl create many --image debian:12 --profile dense --memory 256M --print-xml",
        "dense",
        _inputs("many", "95a6b7c8-d2e3-4f45-96a7-98a9bacbdcde", profile="dense", memory_mib=256),
    ),
    "host-forwards": (
        "vmctl --host h1 create far --image debian:12 -p 8080:80 --print-xml   # host h1 at 127.0.0.2, root /mnt/vmctl",
        "hosted",
        _inputs("far", "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", ports=(parse_port("8080:80"),),
                disk="/mnt/vmctl/instances/far.qcow2", seed="/mnt/vmctl/instances/far.seed.iso",
                serial_log="/mnt/vmctl/instances/far.serial.log", forward_address="127.0.0.2",
                record_json=HOST_RECORD),
    ),
    "minimal": (
        "vmctl create plain --image debian:12 --profile minimal --print-xml",
        "minimal",
        _inputs("plain", "8495a6b7-c1d2-4e34-85f6-8798a9bacbdc", profile="minimal"),
    ),
}


def golden_path(case: str) -> Path:
    return GOLDEN_DIR / f"{case}.xml"


def golden_files() -> list[Path]:
    return sorted(GOLDEN_DIR.glob("*.xml"))


def invalid_files() -> list[Path]:
    return sorted(INVALID_DIR.glob("*-invalid.xml"))


__all__ = ["CASES", "golden_path", "golden_files", "invalid_files", "replace"]
