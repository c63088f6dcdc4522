"""What a domain plan is made from: `DomainInputs`, checked once, in one place.

Everything volatile (uuid, ports, paths, time, MAC, accelerator, passt support) comes in here, so
the same inputs always give the same XML. `validate` is the one check of a plan's inputs; a create
request is turned into inputs and validated by it, nowhere else.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from vmctl.core.limits import Limits, check_limits
from vmctl.core.ports import PortForward, check_forwards
from vmctl.core.volumes import TRANSPORTS, VolumeMount, check_target
from vmctl.errors import UsageError
from vmctl.limits import MAX_CPUS, MAX_MEMORY_MIB, MIN_MEMORY_MIB
from vmctl.names import check_name

VIRT_TYPES = ("kvm", "qemu")
MODES = ("hosted", "system")
STATES = ("creating", "created")
BOOT_KINDS = ("firmware", "kernel")
NETWORK_KINDS = ("user", "network", "bridge")
_MAC = re.compile(r"52:54:00(:[0-9a-f]{2}){3}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


@dataclass(frozen=True)
class Segment:
    """A further NIC, on a stack's private network: hosted, a QEMU multicast socket netdev bound to
    127.0.0.1 (`group`:`port`); system, an interface on the libvirt network `network`."""
    mac: str
    group: str | None = None
    port: int | None = None
    network: str | None = None


MAX_SEGMENTS = 4   # QEMU functions 1-4 of the user NIC's multifunction slot (vmctl.core.plan.network)


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
    secure_boot: bool = False           # UEFI with secure boot (keys enrolled) and SMM
    tpm: bool = False                   # an emulated TPM 2.0 (swtpm)
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
    volumes: tuple[VolumeMount, ...] = ()   # checked and resolved by vmctl.core.volumes
    limits: Limits = Limits()               # over the profile's tuning
    max_cpus: int | None = None             # vCPU hotplug maximum (`cpus` online at boot)
    segments: tuple[Segment, ...] = ()      # NICs on a stack's private networks
    genid: str | None = None                # VM generation ID (a uuid); None: no vmgenid device
    agent_channel: bool = False             # the virtio-serial port of vmctl's guest agent (warm starts)
    machine: str | None = None              # exact machine type (a checkpoint's); None: the profile's
    # a VM on a vmctl host (vmctl.hosts): its forwards listen on the host's address, not 127.0.0.1,
    # and its record travels in the domain's metadata (JSON of vmctl.core.records.InstanceRecord)
    forward_address: str = "127.0.0.1"
    record_json: str | None = None

    @property
    def user_net(self) -> bool:
        return self.network == "user"

    @property
    def use_passt(self) -> bool:
        """passt only when libvirt takes it and no restriction was asked (passt has none)."""
        # A stack VM's segment NICs share the user NIC's multifunction slot, which only the
        # command-line NIC has (see vmctl.core.plan.network).
        return self.user_net and self.passt_supported and not self.restrict and not self.segments

    @property
    def nic_mac(self) -> str:
        return self.mac or mac_from_uuid(self.uuid)


def mac_from_uuid(uuid: str) -> str:
    """A stable locally administered MAC in QEMU's 52:54:00 range, derived from the uuid."""
    digest = hashlib.sha256(uuid.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def _absolute(what: str, path: str | None) -> None:
    if path is not None and not path.startswith("/"):
        raise UsageError(f"{what} path must be absolute: {path}")


def validate(i: DomainInputs) -> DomainInputs:
    """Refuse inputs no domain can be planned from (UsageError, one line); return them."""
    check_name(i.name, "VM name")
    if not _UUID.fullmatch(i.uuid):
        raise UsageError(f"invalid uuid {i.uuid!r}")
    if i.mode not in MODES:
        raise UsageError(f"invalid mode {i.mode!r}: choose one of {', '.join(MODES)}")
    if i.virt_type not in VIRT_TYPES:
        raise UsageError(f"invalid domain type {i.virt_type!r}: kvm or qemu")
    if i.state not in STATES:
        raise UsageError(f"invalid creation state {i.state!r}")
    if not 1 <= i.cpus <= MAX_CPUS:
        raise UsageError(f"invalid CPU count {i.cpus}: 1-{MAX_CPUS}")
    if not MIN_MEMORY_MIB <= i.memory_mib <= MAX_MEMORY_MIB:
        raise UsageError(f"invalid memory size {i.memory_mib} MiB: a guest needs at least {MIN_MEMORY_MIB} MiB")
    for what, path in (("disk", i.disk), ("seed", i.seed), ("serial log", i.serial_log)):
        _absolute(what, path)
    if i.boot_kind == "kernel":
        if not i.kernel:
            raise UsageError("direct kernel boot needs a kernel")
        _absolute("kernel", i.kernel)
        _absolute("initrd", i.initrd)
    elif i.boot_kind == "firmware":
        if i.firmware not in ("bios", "uefi"):
            raise UsageError(f"invalid firmware {i.firmware!r}: bios or uefi")
    else:
        raise UsageError(f"invalid boot kind {i.boot_kind!r}: firmware or kernel")
    if i.tpm and i.boot_kind != "firmware":
        raise UsageError("--tpm needs firmware boot (BIOS or UEFI): this image boots its kernel directly")
    if i.secure_boot and (i.boot_kind != "firmware" or i.firmware != "uefi"):
        raise UsageError("secure boot needs UEFI firmware: the image boots "
                         + ("a kernel directly" if i.boot_kind == "kernel" else "with BIOS"))
    if i.mac is not None and not _MAC.fullmatch(i.mac):
        raise UsageError(f"invalid MAC address {i.mac!r}: use 52:54:00:xx:xx:xx (lower case)")
    if i.ssh_host_key is not None and ("\n" in i.ssh_host_key or not i.ssh_host_key.strip()):
        raise UsageError("the SSH host key must be one public key line")
    try:
        if ipaddress.IPv4Address(i.forward_address).is_unspecified:
            raise ValueError
    except ValueError:
        raise UsageError(f"invalid forward address {i.forward_address!r}") from None
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
    check_limits(i.limits, i.memory_mib, i.cpus)
    if i.max_cpus is not None and not i.cpus <= i.max_cpus <= MAX_CPUS:
        raise UsageError(f"invalid --max-cpus {i.max_cpus}: from the VM's {i.cpus} vCPUs to {MAX_CPUS}")
    targets = set()
    for m in i.volumes:
        _absolute("volume source", m.shared_path)
        check_target(m.target)
        if m.transport not in TRANSPORTS:
            raise UsageError(f"invalid volume transport {m.transport!r}")
        if m.target in targets:
            raise UsageError(f"two volumes are mounted on {m.target}")
        targets.add(m.target)
    _check_segments(i)
    if i.ports and i.network != "user":
        raise UsageError("port forwards need user-mode networking (hosted mode); on a libvirt network or "
                         "bridge the guest has its own address")
    return i


def _check_segments(i: DomainInputs) -> None:
    if len(i.segments) > MAX_SEGMENTS:
        raise UsageError(f"a VM joins at most {MAX_SEGMENTS} stack networks")
    macs = {i.nic_mac}
    for s in i.segments:
        if not _MAC.fullmatch(s.mac) or s.mac in macs:
            raise UsageError(f"invalid or repeated MAC address {s.mac!r} for a stack network")
        macs.add(s.mac)
        if s.group is not None:
            if i.network != "user":
                raise UsageError("a multicast segment goes with user-mode networking (hosted mode)")
            try:
                group = ipaddress.IPv4Address(s.group)
            except ValueError:
                raise UsageError(f"invalid multicast group {s.group!r}") from None
            if not group.is_multicast or s.port is None or not 1024 <= s.port <= 65535:
                raise UsageError(f"invalid multicast segment {s.group}:{s.port}")
        else:
            check_name(s.network or "", "network name")
