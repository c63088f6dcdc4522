"""From resolved inputs and a machine profile to a domain model: one pure function, no I/O.

`plan_domain(profile, inputs)` decides every element of the domain vmctl defines. Everything
volatile (uuid, ports, paths, time, MAC) comes in through `DomainInputs`, so the same inputs always
give the same XML: that is what the golden-file tests pin down.

Hosted networking. QEMU's user-mode stack with ports forwarded on 127.0.0.1 is written
- as ``<interface type='user'><backend type='passt'/><portForward address='127.0.0.1'>`` when the
  caller says libvirt's passt backend works (``passt_supported``) and no ``restrict`` is asked
  (passt has no equivalent of slirp's ``restrict=on`` in libvirt's XML, and dropping a requested
  isolation silently is not acceptable);
- otherwise as ``<qemu:commandline>``: ``-netdev user,id=vmctl0[,restrict=on],hostfwd=...`` and
  ``-device virtio-net-pci,netdev=vmctl0,bus=pcie.0,addr=0x1c,mac=...,romfile=``. The explicit
  address is on the root bus at a slot libvirt never fills by itself (see hosted.toml); libvirt 9.0
  has no XML for hostfwd and rejects ``<backend type='passt'>``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Union

from vmctl.core.ports import LOOPBACK, PortForward, check_forwards
from vmctl.errors import UsageError
from vmctl.names import check_name
from vmctl.profiles import Profile
from vmctl.xml.domain import (
    CPU, RNG, Channel, Console, Disk, Domain, Graphics, Interface, Serial, Video,
)

VIRT_TYPES = ("kvm", "qemu")
MODES = ("hosted", "system")
STATES = ("creating", "created")
NETDEV_ID = "vmctl0"
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
CPU_PERIOD_US = 100_000
_MAC = re.compile(r"52:54:00(:[0-9a-f]{2}){3}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


# --- inputs ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KernelBoot:
    """Direct kernel boot: QEMU loads kernel and initrd itself (no bootloader in the image)."""

    kernel: str
    initrd: str | None = None
    cmdline: str = ""


@dataclass(frozen=True)
class FirmwareBoot:
    """Boot the disk through firmware: "bios" (SeaBIOS) or "uefi" (OVMF, auto-selected)."""

    firmware: str = "bios"


@dataclass(frozen=True)
class UserNetwork:
    """Hosted user-mode networking: SSH forward plus the user's forwards, all on 127.0.0.1."""

    ssh_host_port: int
    forwards: tuple[PortForward, ...] = ()
    restrict: bool = False


@dataclass(frozen=True)
class LibvirtNetwork:
    """A NIC on a libvirt virtual network (e.g. "default")."""

    name: str


@dataclass(frozen=True)
class BridgeNetwork:
    """A NIC on an existing host bridge (e.g. "br0")."""

    name: str


Network = Union[UserNetwork, LibvirtNetwork, BridgeNetwork]


@dataclass(frozen=True)
class DomainInputs:
    """Everything `plan_domain` needs besides the profile, already resolved by the caller."""

    name: str
    uuid: str
    mode: str
    profile: str
    image_ref: str
    image_id: str
    virt_type: str
    boot: KernelBoot | FirmwareBoot
    cpus: int
    memory_mib: int
    overlay_path: str
    seed_iso_path: str | None
    serial_log_path: str
    network: Network
    passt_supported: bool = False
    ssh_host_key: str | None = None
    created: str = ""
    mac: str | None = None
    state: str = "creating"
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def mac_from_uuid(uuid: str) -> str:
    """A stable locally administered MAC in QEMU's 52:54:00 range, derived from the uuid."""
    digest = hashlib.sha256(uuid.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def network_from_profile(profile: Profile, *, ssh_host_port: int | None = None,
                         forwards: tuple[PortForward, ...] = (), restrict: bool = False,
                         network: str | None = None, bridge: str | None = None) -> Network:
    """The network a VM gets: `--network`/`--bridge` if given, else the profile's kind."""
    if network and bridge:
        raise UsageError("--network and --bridge exclude each other")
    if network:
        return LibvirtNetwork(check_name(network, "network name"))
    if bridge:
        return BridgeNetwork(bridge)
    kind = profile.network.kind
    if kind == "network":
        return LibvirtNetwork(profile.network.source or "default")
    if kind == "bridge":
        return BridgeNetwork(profile.network.source or "")
    if ssh_host_port is None:
        raise UsageError("user-mode networking needs a host port for the SSH forward")
    return UserNetwork(ssh_host_port=ssh_host_port, forwards=tuple(forwards), restrict=restrict)


def _check_inputs(profile: Profile, i: DomainInputs) -> None:
    check_name(i.name, "VM name")
    if not _UUID.fullmatch(i.uuid):
        raise UsageError(f"invalid uuid {i.uuid!r}")
    if i.mode not in MODES:
        raise UsageError(f"invalid mode {i.mode!r}: choose one of {', '.join(MODES)}")
    if i.virt_type not in VIRT_TYPES:
        raise UsageError(f"invalid domain type {i.virt_type!r}: kvm or qemu")
    if i.state not in STATES:
        raise UsageError(f"invalid creation state {i.state!r}")
    if not 1 <= i.cpus <= 255:
        raise UsageError(f"invalid CPU count {i.cpus}: 1-255")
    if not 16 <= i.memory_mib <= 16 * 1024 * 1024:
        raise UsageError(f"invalid memory size {i.memory_mib} MiB: at least 16 MiB")
    for what, path in (("overlay", i.overlay_path), ("seed", i.seed_iso_path),
                       ("serial log", i.serial_log_path)):
        if path is not None and not path.startswith("/"):
            raise UsageError(f"{what} path must be absolute: {path}")
    if isinstance(i.boot, KernelBoot):
        for path in (i.boot.kernel, i.boot.initrd):
            if path is not None and not path.startswith("/"):
                raise UsageError(f"kernel/initrd path must be absolute: {path}")
    elif isinstance(i.boot, FirmwareBoot):
        if i.boot.firmware not in ("bios", "uefi"):
            raise UsageError(f"invalid firmware {i.boot.firmware!r}: bios or uefi")
    else:
        raise UsageError("boot must be a kernel or a firmware boot")
    if i.mac is not None and not _MAC.fullmatch(i.mac):
        raise UsageError(f"invalid MAC address {i.mac!r}: use 52:54:00:xx:xx:xx (lower case)")
    if i.ssh_host_key is not None and ("\n" in i.ssh_host_key or not i.ssh_host_key.strip()):
        raise UsageError("the SSH host key must be one public key line")
    net = i.network
    if isinstance(net, UserNetwork):
        PortForward(net.ssh_host_port, 22)  # range check
        check_forwards(net.forwards, reserved=(net.ssh_host_port,))
    elif isinstance(net, LibvirtNetwork):
        check_name(net.name, "network name")
    elif isinstance(net, BridgeNetwork):
        if not _IFNAME.fullmatch(net.name):
            raise UsageError(f"invalid bridge name {net.name!r}")
    else:
        raise UsageError("unknown network kind")


# --- the plan ---------------------------------------------------------------------------------------

def _disk_targets(profile: Profile) -> tuple[str, str]:
    prefix = {"virtio": "vd", "sata": "sd", "scsi": "sd"}
    root = prefix[profile.disk.bus] + "a"
    seed_prefix = prefix[profile.disk.seed_bus]
    seed = seed_prefix + ("b" if seed_prefix == prefix[profile.disk.bus] else "a")
    return root, seed


def _pci_bus(machine: str) -> str:
    return "pcie.0" if machine == "q35" or machine.startswith("pc-q35") else "pci.0"


def user_netdev_args(profile: Profile, net: UserNetwork, mac: str) -> list[str]:
    """QEMU arguments for user-mode networking with forwards on 127.0.0.1 (no passt)."""
    netdev = [f"user,id={NETDEV_ID}"]
    if net.restrict:
        netdev.append("restrict=on")
    netdev.append(f"hostfwd=tcp:{LOOPBACK}:{net.ssh_host_port}-:22")
    for fwd in net.forwards:
        netdev.append(f"hostfwd={fwd.proto}:{fwd.host_address}:{fwd.host_port}-:{fwd.guest_port}")
    model = {"virtio": "virtio-net-pci", "e1000e": "e1000e", "e1000": "e1000",
             "rtl8139": "rtl8139"}[profile.network.model]
    device = (f"{model},netdev={NETDEV_ID},bus={_pci_bus(profile.machine.machine)},"
              f"addr=0x{profile.network.user_pci_slot:02x},mac={mac},romfile=")
    return ["-netdev", ",".join(netdev), "-device", device]


def _interface(profile: Profile, i: DomainInputs, mac: str, use_passt: bool) -> Interface | None:
    net = i.network
    if isinstance(net, UserNetwork) and not use_passt:
        return None
    iface = Interface()
    if isinstance(net, UserNetwork):
        iface.type = "user"
        iface.mac = mac
        by_proto: dict[str, list[tuple[int, int]]] = {"tcp": [(net.ssh_host_port, 22)]}
        for fwd in net.forwards:
            by_proto.setdefault(fwd.proto, []).append((fwd.host_port, fwd.guest_port))
        for proto, pairs in by_proto.items():
            pf = iface.add_port_forward(proto, LOOPBACK)
            for host, guest in pairs:
                pf.add_range(host, guest)
        iface.model = profile.network.model
        iface.backend_type = "passt"
    elif isinstance(net, LibvirtNetwork):
        iface.type = "network"
        iface.mac = mac
        iface.source_network = net.name
        iface.model = profile.network.model
    else:
        iface.type = "bridge"
        iface.mac = mac
        iface.source_bridge = net.name
        iface.model = profile.network.model
    return iface


def plan_domain(profile: Profile, inputs: DomainInputs) -> Domain:
    """Build the domain model for `inputs` on `profile` (pure; raises UsageError on bad input)."""
    _check_inputs(profile, inputs)
    i, p = inputs, profile
    mac = i.mac or mac_from_uuid(i.uuid)
    user_net = isinstance(i.network, UserNetwork)
    use_passt = user_net and i.passt_supported and not i.network.restrict
    commandline = user_net and not use_passt

    d = Domain(qemu_namespace=commandline)
    d.type = i.virt_type
    d.name = i.name
    d.uuid = i.uuid
    d.title = f"vmctl instance {i.name}"
    d.description = f"Created by vmctl from {i.image_ref}; manage it with vmctl."

    meta = d.metadata
    meta.image_ref = i.image_ref
    meta.image_id = i.image_id
    meta.mode = i.mode
    meta.profile = i.profile
    meta.state = i.state
    if i.created:
        meta.created = i.created
    if user_net:
        meta.ssh_address = LOOPBACK
        meta.ssh_port = i.network.ssh_host_port
    if i.ssh_host_key:
        meta.ssh_host_key = i.ssh_host_key.strip()
    if user_net:
        for fwd in i.network.forwards:
            meta.add_port(fwd.proto, fwd.host_address, fwd.host_port, fwd.guest_port)

    d.memory_mib = i.memory_mib
    t = p.tuning
    if t.blkio_weight is not None:
        d.blkio_weight = t.blkio_weight
    headroom = t.tcg_memory_headroom_mib if i.virt_type == "qemu" else t.memory_headroom_mib
    if headroom is not None:
        d.memtune_hard_limit_kib = (i.memory_mib + headroom) * 1024
    d.vcpus = i.cpus
    d.vcpu_placement = "static"
    if t.cpu_shares is not None:
        d.cpu_shares = t.cpu_shares
    if t.cpu_quota_percent is not None:
        d.cpu_period = CPU_PERIOD_US
        d.cpu_quota = CPU_PERIOD_US * t.cpu_quota_percent // 100

    m = p.machine
    os_ = d.os
    os_.os_type = "hvm"
    os_.arch = m.arch
    os_.machine = m.machine
    if isinstance(i.boot, FirmwareBoot) and i.boot.firmware == "uefi":
        os_.firmware = "efi"
    if isinstance(i.boot, KernelBoot):
        os_.kernel = i.boot.kernel
        if i.boot.initrd:
            os_.initrd = i.boot.initrd
        os_.cmdline = i.boot.cmdline

    f = d.features
    f.acpi = m.features_acpi
    f.apic = m.features_apic
    if m.vmport is not None:
        f.vmport = m.vmport

    mode = m.cpu_mode if i.virt_type == "kvm" else m.tcg_cpu_mode
    cpu: CPU = d.cpu
    cpu.mode = mode
    if mode == "custom":
        cpu.model = m.cpu_model
        cpu.model_fallback = "forbid"

    clock = d.clock
    clock.offset = p.clock.offset
    for timer in p.clock.timers:
        clock.add_timer(timer.name, tickpolicy=timer.tickpolicy, present=timer.present)

    d.on_poweroff = m.on_poweroff
    d.on_reboot = m.on_reboot
    d.on_crash = m.on_crash

    devices = d.devices
    devices.ensure()
    root_dev, seed_dev = _disk_targets(p)
    disk = Disk()
    disk.type = "file"
    disk.device = "disk"
    disk.driver_name = "qemu"
    disk.driver_type = "qcow2"
    disk.driver_cache = p.disk.cache
    if p.disk.discard:
        disk.driver_discard = p.disk.discard
    disk.source_file = i.overlay_path
    disk.target_dev = root_dev
    disk.target_bus = p.disk.bus
    disk.serial = "vmctl-root"
    if isinstance(i.boot, FirmwareBoot):
        disk.boot_order = 1
    devices.add(disk)

    if i.seed_iso_path:
        seed = Disk()
        seed.type = "file"
        seed.device = "cdrom"
        seed.driver_name = "qemu"
        seed.driver_type = "raw"
        seed.source_file = i.seed_iso_path
        seed.target_dev = seed_dev
        seed.target_bus = p.disk.seed_bus
        seed.readonly = True
        devices.add(seed)

    iface = _interface(p, i, mac, use_passt)
    if iface is not None:
        devices.add(iface)

    serial = Serial()
    serial.type = "pty"
    if p.console.serial_log:
        serial.log_file = i.serial_log_path
        serial.log_append = p.console.log_append
    serial.target_type = "isa-serial"
    serial.target_port = 0
    devices.add(serial)
    console = Console()
    console.type = "pty"
    console.target_type = "serial"
    console.target_port = 0
    devices.add(console)

    if p.devices.guest_agent:
        channel = Channel()
        channel.type = "unix"
        channel.target_type = "virtio"
        channel.target_name = GUEST_AGENT_CHANNEL
        devices.add(channel)

    if p.devices.graphics == "vnc":
        gfx = Graphics()
        gfx.type = "vnc"
        gfx.port = -1
        gfx.autoport = True
        gfx.listen = LOOPBACK
        gfx.listen_type = "address"
        gfx.listen_address = LOOPBACK
        devices.add(gfx)
        video = Video()
        video.model_type = p.devices.video
        devices.add(video)

    balloon = devices.memballoon
    balloon.model = "virtio" if p.devices.balloon else "none"
    if p.devices.balloon and p.devices.balloon_stats_period:
        balloon.stats_period = p.devices.balloon_stats_period

    if p.devices.rng:
        rng = RNG()
        rng.model = "virtio"
        if p.devices.rng_rate_bytes is not None:
            rng.rate_bytes = p.devices.rng_rate_bytes
            rng.rate_period = p.devices.rng_rate_period
        rng.backend_model = "random"
        rng.backend_device = p.devices.rng
        devices.add(rng)

    if commandline:
        d.qemu_commandline.args = user_netdev_args(p, i.network, mac)
    return d
