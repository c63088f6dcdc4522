"""From resolved inputs and a machine profile to a domain model: one pure function, no I/O.

`plan_domain(profile, inputs)` decides every element of the domain vmctl defines. Everything
volatile (uuid, ports, paths, time, MAC, accelerator, passt support) comes in through
`DomainInputs`, so the same inputs always give the same XML: the golden-file tests pin that down.

Hosted networking. QEMU's user-mode stack with ports forwarded on 127.0.0.1 is written
- as ``<interface type='user'><backend type='passt'/><portForward address='127.0.0.1'>`` when the
  caller says libvirt's passt backend works (``passt_supported``) and no ``restrict`` is asked
  (libvirt's passt XML has no equivalent of slirp's ``restrict=on``, and silently dropping an
  isolation the user asked for is not acceptable);
- otherwise as ``<qemu:commandline>``: ``-netdev user,id=vmctl0[,restrict=on],hostfwd=...`` and
  ``-device virtio-net-pci,netdev=vmctl0,bus=pcie.0,addr=0x1c,mac=...,romfile=``.

libvirt 9.0.0 lists passt in its release notes, but its XML parser refuses
``<backend type='passt'>`` ("Invalid value for attribute 'type' in element 'backend'"; checked on
this project's Debian 12 hosts, and libvirt issue #462), hence the qemu:commandline form there.

The device address: libvirt never learns about a device given on QEMU's command line, so the slot
must be one libvirt never fills. On q35 it puts pcie-root-ports (and integrated devices) on the root
bus from slot 0x01 upward and reserves 0x1f (ICH9 LPC/SATA/SMBus), 0x1e (DMI-PCI bridge), 0x1d (ICH9
USB), 0x1b (ICH9 audio): 0x1c is free of all of them. Verified on libvirt 9.0 / QEMU 7.2: defined
through qemu:///session, started, ``info pci`` shows the NIC at bus 0 device 28, ``info usernet``
the forwards bound to 127.0.0.1. ``romfile=`` skips the iPXE option ROM (vmctl never net-boots).
The slot is a profile key (``[network] user_pci_slot``) in case a profile adds such devices.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from vmctl.core.ports import LOOPBACK, PortForward, check_forwards
from vmctl.errors import UsageError
from vmctl.names import check_name
from vmctl.profiles import Profile
from vmctl.xml.domain import (
    CPU, RNG, Channel, Console, Controller, Disk, Domain, Graphics, Interface, Serial, Video,
)

__all__ = ["DomainInputs", "mac_from_uuid", "mark_created", "move_ssh_port", "plan_domain",
           "user_netdev_args"]

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

BOOT_KINDS = ("firmware", "kernel")
NETWORK_KINDS = ("user", "network", "bridge")


@dataclass(frozen=True)
class DomainInputs:
    """Everything `plan_domain` needs besides the profile, already resolved by the caller.

    boot_kind "kernel": direct kernel boot from `kernel` (+ `initrd`, `cmdline`);
    boot_kind "firmware": boot the disk through `firmware` "bios" (SeaBIOS) or "uefi" (OVMF).
    network "user": hosted user-mode networking, SSH forward on 127.0.0.1:`ssh_host_port` plus
    `ports` (PortForward), `restrict` = guest reaches nothing outside; "network"/"bridge": a NIC on
    the libvirt network / host bridge `network_name`.
    """

    name: str
    uuid: str
    mode: str
    profile: str
    image_ref: str
    image_id: str
    virt_type: str                      # "kvm" | "qemu" (TCG), from the caller's verified probe
    cpus: int
    memory_mib: int
    disk: str                           # the qcow2 overlay
    serial_log: str
    network: str = "user"
    boot_kind: str = "firmware"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    firmware: str = "bios"
    seed: str | None = None             # cloud-init NoCloud ISO
    network_name: str | None = None
    ssh_host_port: int | None = None
    ports: tuple[PortForward, ...] = ()
    restrict: bool = False
    passt_supported: bool = False
    ssh_host_key: str | None = None     # pinned public key line
    created: str = ""                   # RFC 3339 UTC
    mac: str | None = None              # default: derived from uuid
    state: str = "creating"


def mac_from_uuid(uuid: str) -> str:
    """A stable locally administered MAC in QEMU's 52:54:00 range, derived from the uuid."""
    digest = hashlib.sha256(uuid.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


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
    for what, path in (("disk", i.disk), ("seed", i.seed), ("serial log", i.serial_log)):
        if path is not None and not path.startswith("/"):
            raise UsageError(f"{what} path must be absolute: {path}")
    if i.boot_kind == "kernel":
        if not i.kernel:
            raise UsageError("direct kernel boot needs a kernel")
        for path in (i.kernel, i.initrd):
            if path is not None and not path.startswith("/"):
                raise UsageError(f"kernel/initrd path must be absolute: {path}")
    elif i.boot_kind == "firmware":
        if i.firmware not in ("bios", "uefi"):
            raise UsageError(f"invalid firmware {i.firmware!r}: bios or uefi")
    else:
        raise UsageError(f"invalid boot kind {i.boot_kind!r}: firmware or kernel")
    if i.mac is not None and not _MAC.fullmatch(i.mac):
        raise UsageError(f"invalid MAC address {i.mac!r}: use 52:54:00:xx:xx:xx (lower case)")
    if i.ssh_host_key is not None and ("\n" in i.ssh_host_key or not i.ssh_host_key.strip()):
        raise UsageError("the SSH host key must be one public key line")
    if i.network == "user":
        if i.ssh_host_port is None:
            raise UsageError("user-mode networking needs a host port for the SSH forward")
        PortForward(i.ssh_host_port, 22)  # range check
        check_forwards(i.ports, reserved=(i.ssh_host_port,))
    elif i.network == "network":
        check_name(i.network_name or "", "network name")
    elif i.network == "bridge":
        if not _IFNAME.fullmatch(i.network_name or ""):
            raise UsageError(f"invalid bridge name {i.network_name!r}")
    else:
        raise UsageError(f"invalid network kind {i.network!r}: user, network or bridge")
    if i.ports and i.network != "user":
        raise UsageError("port forwards need user-mode networking")


# --- the plan ---------------------------------------------------------------------------------------

def _disk_targets(profile: Profile) -> tuple[str, str]:
    prefix = {"virtio": "vd", "sata": "sd", "scsi": "sd"}
    root = prefix[profile.disk.bus] + "a"
    seed_prefix = prefix[profile.disk.seed_bus]
    seed = seed_prefix + ("b" if seed_prefix == prefix[profile.disk.bus] else "a")
    return root, seed


def _pci_bus(machine: str) -> str:
    return "pcie.0" if machine == "q35" or machine.startswith("pc-q35") else "pci.0"


def user_netdev_args(profile: Profile, i: DomainInputs, mac: str) -> list[str]:
    """QEMU arguments for user-mode networking with forwards on 127.0.0.1 (no passt)."""
    netdev = [f"user,id={NETDEV_ID}"]
    if i.restrict:
        netdev.append("restrict=on")
    netdev.append(f"hostfwd=tcp:{LOOPBACK}:{i.ssh_host_port}-:22")
    for fwd in i.ports:
        netdev.append(f"hostfwd={fwd.proto}:{fwd.host_address}:{fwd.host_port}-:{fwd.guest_port}")
    model = {"virtio": "virtio-net-pci", "e1000e": "e1000e", "e1000": "e1000",
             "rtl8139": "rtl8139"}[profile.network.model]
    device = (f"{model},netdev={NETDEV_ID},bus={_pci_bus(profile.machine.machine)},"
              f"addr=0x{profile.network.user_pci_slot:02x},mac={mac},romfile=")
    return ["-netdev", ",".join(netdev), "-device", device]


def _interface(profile: Profile, i: DomainInputs, mac: str, use_passt: bool) -> Interface | None:
    if i.network == "user" and not use_passt:
        return None
    iface = Interface()
    if i.network == "user":
        iface.type = "user"
        iface.mac = mac
        by_proto: dict[str, list[tuple[int, int]]] = {"tcp": [(i.ssh_host_port, 22)]}
        for fwd in i.ports:
            by_proto.setdefault(fwd.proto, []).append((fwd.host_port, fwd.guest_port))
        for proto, pairs in by_proto.items():
            pf = iface.add_port_forward(proto, LOOPBACK)
            for host, guest in pairs:
                pf.add_range(host, guest)
        iface.model = profile.network.model
        iface.backend_type = "passt"
    elif i.network == "network":
        iface.type = "network"
        iface.mac = mac
        iface.source_network = i.network_name
        iface.model = profile.network.model
    else:
        iface.type = "bridge"
        iface.mac = mac
        iface.source_bridge = i.network_name
        iface.model = profile.network.model
    return iface


def plan_domain(profile: Profile, inputs: DomainInputs) -> Domain:
    """Build the domain model for `inputs` on `profile` (pure; raises UsageError on bad input)."""
    _check_inputs(profile, inputs)
    i, p = inputs, profile
    mac = i.mac or mac_from_uuid(i.uuid)
    user_net = i.network == "user"
    use_passt = user_net and i.passt_supported and not i.restrict
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
        meta.ssh_port = i.ssh_host_port
    if i.ssh_host_key:
        meta.ssh_host_key = i.ssh_host_key.strip()
    if user_net:
        for fwd in i.ports:
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
    if i.boot_kind == "firmware" and i.firmware == "uefi":
        os_.firmware = "efi"
    if i.boot_kind == "kernel":
        os_.kernel = i.kernel
        if i.initrd:
            os_.initrd = i.initrd
        os_.cmdline = i.cmdline or ""

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
    # libvirt's DAC driver would chown every file QEMU opens to QEMU's user while the VM runs:
    # the whole backing chain (image layers other VMs share, not always given back), the kernel
    # and initrd blobs. vmctl grants QEMU exactly the access it needs with ACLs instead (overlay
    # and seed: the instance's own; layers, kernel, initrd: read-only), so no relabelling at all.
    # QEMU still runs as the daemon's unprivileged user.
    d.seclabel_type = "none"
    d.seclabel_model = "dac"

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
    disk.source_file = i.disk
    disk.target_dev = root_dev
    disk.target_bus = p.disk.bus
    disk.serial = "vmctl-root"
    if i.boot_kind == "firmware":
        disk.boot_order = 1
    devices.add(disk)

    if i.seed:
        seed = Disk()
        seed.type = "file"
        seed.device = "cdrom"
        seed.driver_name = "qemu"
        seed.driver_type = "raw"
        seed.source_file = i.seed
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
        serial.log_file = i.serial_log
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

    if not p.devices.usb:
        # A server guest has no use for USB; without it the guest kernel probes one controller
        # less at boot (noticeable under TCG) and QEMU exposes less emulated hardware.
        usb = Controller()
        usb.type = "usb"
        usb.model = "none"
        devices.add(usb)

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
        d.qemu_commandline.args = user_netdev_args(p, i, mac)
    return d


# --- edits of a defined domain's XML -------------------------------------------------------------

_HOSTFWD_SSH = re.compile(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-:22(?=,|$)")


def move_ssh_port(xml: str, old: int | None, new: int) -> str:
    """Return `xml` (libvirt's, parsed losslessly) with the SSH forward moved to host port `new`.

    Changes the hostfwd in <qemu:commandline> or the passt <portForward> range, and the metadata.
    """
    PortForward(new, 22)
    d = Domain.from_xml(xml)
    cl = d.qemu_commandline
    if cl.exists:
        args = cl.args
        changed = False
        for n, arg in enumerate(args):
            match = _HOSTFWD_SSH.search(arg)
            if match and (old is None or int(match.group(1)) == old):
                args[n] = arg[:match.start(1)] + str(new) + arg[match.end(1):]
                changed = True
        if changed:
            cl.args = args
    for iface in d.devices.interfaces:
        for pf in iface.port_forwards:
            if pf.proto != "tcp":
                continue
            for rng in pf.ranges:
                if rng.to == 22 and (old is None or rng.start == old):
                    rng.start = new
    if d.metadata.exists:
        d.metadata.ssh_port = new
    return d.to_xml()


def mark_created(xml: str) -> str:
    """Return `xml` with vmctl's creation state set to "created" (the create transaction finished)."""
    d = Domain.from_xml(xml)
    d.metadata.state = "created"
    return d.to_xml()
