"""The libvirt domain model: the parts of ``<domain>`` vmctl writes and reads.

Each class binds one element; its `Prop`s are the attributes and sub-elements vmctl uses. Child
order follows libvirt's own formatter (``virDomainDefFormatInternal`` and the per-device format
functions), so new XML comes out in the order libvirt would print it and a parse -> change ->
serialize cycle never reshuffles what libvirt wrote. Elements not modelled here are kept untouched.
"""

from __future__ import annotations

from typing import Iterable

from lxml import etree

from vmctl.xml.base import (
    NSMAP,
    QEMU_NS,
    Child,
    Children,
    Prop,
    XMLNode,
    insert_ordered,
    make_child,
    qname,
)
from vmctl.xml.filesystem import Filesystem
from vmctl.xml.metadata import VmctlMetadata

# libvirt's memory units (docs/formatdomain: "unit" attribute), as multiples of one KiB
_UNITS_KIB = {
    "b": 1 / 1024, "bytes": 1 / 1024,
    "KB": 1000 / 1024, "k": 1, "KiB": 1,
    "MB": 1000 ** 2 / 1024, "M": 1024, "MiB": 1024,
    "GB": 1000 ** 3 / 1024, "G": 1024 ** 2, "GiB": 1024 ** 2,
    "TB": 1000 ** 4 / 1024, "T": 1024 ** 3, "TiB": 1024 ** 3,
}


class MemoryProp(Prop):
    """A memory size element (``<memory unit='KiB'>``) read in KiB whatever unit it carries.

    Written as ``unit='KiB'``, libvirt's own canonical form, so a value read back is unchanged.
    """

    def __init__(self, path: str, doc: str = ""):
        super().__init__(path, "int", doc)

    def __get__(self, node, owner):
        if node is None:
            return self
        el = node.element
        if el is None:
            return None
        target = el
        for step in self.steps:
            target = target.find(step)
            if target is None:
                return None
        if target.text is None:
            return None
        unit = target.get("unit", "KiB")
        if unit not in _UNITS_KIB:
            raise ValueError(f"unknown memory unit {unit!r} in <{target.tag}>")
        return int(int(target.text.strip()) * _UNITS_KIB[unit])

    def __set__(self, node, value):
        if value is None:
            self._delete(node)
            return
        target = node.ensure_path(self.path)
        target.text = self._encode(value)
        target.set("unit", "KiB")


# --- <os> ---------------------------------------------------------------------------------------

class OS(XMLNode):
    TAG = "os"
    ORDER = {"": ("type", "firmware", "loader", "nvram", "initarg", "initenv", "init", "inituser",
                  "initgroup", "initdir", "kernel", "initrd", "cmdline", "shim", "dtb", "root",
                  "acpi", "boot", "bootmenu", "smbios", "bios")}

    os_type = Prop("type", doc="hvm")
    arch = Prop("type/@arch")
    machine = Prop("type/@machine", doc="machine type, e.g. q35")
    firmware = Prop("@firmware", doc="firmware auto-selection: efi (absent: BIOS)")
    loader_secure = Prop("loader/@secure", "yesno", doc="the loader must be one with secure boot")

    def boots_pflash(self) -> bool:
        """Whether the firmware is UEFI from pflash: autoselected (``firmware='efi'``) or a loader
        of ``type='pflash'`` (a definition made elsewhere)."""
        if self.firmware == "efi":
            return True
        loader = self.element.find("loader") if self.element is not None else None
        return loader is not None and loader.get("type") == "pflash"

    def firmware_feature(self, name: str, enabled: bool) -> None:
        """Ask libvirt's firmware autoselection for a firmware with (or without) feature `name`
        (``secure-boot``, ``enrolled-keys``)."""
        fw = self.ensure_path("firmware")
        el = make_child(fw, "feature")
        el.set("enabled", "yes" if enabled else "no")
        el.set("name", name)

    kernel = Prop("kernel", doc="direct kernel boot: kernel path")
    initrd = Prop("initrd", doc="direct kernel boot: initrd path")
    cmdline = Prop("cmdline", doc="direct kernel boot: kernel command line")


# --- <features>, <cpu>, <clock> -------------------------------------------------------------------

class Features(XMLNode):
    TAG = "features"
    ORDER = {"": ("acpi", "apic", "pae", "hap", "viridian", "privnet", "hyperv", "kvm", "xen",
                  "pvspinlock", "pmu", "vmport", "gic", "smm", "ioapic", "hpt", "htm",
                  "nested-hv", "msrs", "ccf-assist", "cfpc", "sbbc", "ibs", "tcg", "async-teardown")}

    acpi = Prop("acpi", "present", doc="ACPI: needed for graceful shutdown")
    apic = Prop("apic", "present")
    vmport = Prop("vmport/@state", "onoff", doc="VMware I/O port emulation")
    smm = Prop("smm/@state", "onoff", doc="System Management Mode: secure boot's firmware needs it")
    tcg_tb_cache = Prop("tcg/tb-cache", "int", doc="TCG translation cache size, in tcg_tb_cache_unit")
    tcg_tb_cache_unit = Prop("tcg/tb-cache/@unit", doc="KiB (libvirt's default) | MiB ...")


class CPU(XMLNode):
    TAG = "cpu"
    ORDER = {"": ("model", "vendor", "topology", "cache", "maxphysaddr", "feature", "numa")}

    mode = Prop("@mode", doc="host-passthrough | maximum | host-model | custom")
    model = Prop("model", doc="custom mode: CPU model name")
    model_fallback = Prop("model/@fallback")

    def disable_feature(self, name: str) -> None:
        """``<feature policy='disable' name=NAME/>``: the guest does not see that CPU feature."""
        el = make_child(self.ensure(), "feature")
        insert_ordered(self.element, el, self.order_for(""))
        el.set("policy", "disable")
        el.set("name", name)


class Timer(XMLNode):
    TAG = "timer"

    name = Prop("@name")
    tickpolicy = Prop("@tickpolicy")
    present = Prop("@present", "yesno")


class Clock(XMLNode):
    TAG = "clock"

    offset = Prop("@offset", doc="utc | localtime")
    timers = Children(Timer, "timer")

    def add_timer(self, name: str, *, tickpolicy: str | None = None,
                  present: bool | None = None) -> Timer:
        timer = Timer(make_child(self.ensure(), "timer"))
        timer.name = name
        timer.tickpolicy = tickpolicy
        timer.present = present
        return timer


# --- devices ---------------------------------------------------------------------------------------

class Disk(XMLNode):
    TAG = "disk"
    ORDER = {"": ("driver", "source", "backingStore", "geometry", "blockio", "mirror", "target",
                  "iotune", "readonly", "shareable", "transient", "serial", "wwn", "vendor",
                  "product", "encryption", "boot", "alias", "address"),
             "iotune": ("total_bytes_sec", "read_bytes_sec", "write_bytes_sec", "total_iops_sec",
                        "read_iops_sec", "write_iops_sec")}

    type = Prop("@type", doc="file")
    device = Prop("@device", doc="disk | cdrom")
    driver_name = Prop("driver/@name", doc="qemu")
    driver_type = Prop("driver/@type", doc="image format, always explicit: qcow2 | raw")
    driver_cache = Prop("driver/@cache", doc="none | writeback | ...")
    driver_discard = Prop("driver/@discard", doc="unmap | ignore")
    source_seclabel_model = Prop("source/seclabel/@model", doc="dac")
    source_seclabel_relabel = Prop("source/seclabel/@relabel", "yesno",
                                   doc="no: libvirt leaves this file (and its backing chain) as it is")
    source_file = Prop("source/@file")
    target_dev = Prop("target/@dev")
    target_bus = Prop("target/@bus", doc="virtio | sata | scsi")
    readonly = Prop("readonly", "present")
    serial = Prop("serial")
    boot_order = Prop("boot/@order", "int")
    iotune_read_bytes_sec = Prop("iotune/read_bytes_sec", "int", doc="QEMU's read throttle, bytes/s")
    iotune_write_bytes_sec = Prop("iotune/write_bytes_sec", "int", doc="QEMU's write throttle, bytes/s")


class PortRange(XMLNode):
    TAG = "range"

    start = Prop("@start", "int")
    to = Prop("@to", "int")


class PortForward(XMLNode):
    """``<portForward>`` of a passt-backed user interface (libvirt with working passt support)."""

    TAG = "portForward"

    proto = Prop("@proto")
    address = Prop("@address")
    ranges = Children(PortRange, "range")

    def add_range(self, start: int, to: int | None = None) -> PortRange:
        rng = PortRange(make_child(self.ensure(), "range"))
        rng.start = start
        rng.to = to
        return rng


class Interface(XMLNode):
    TAG = "interface"
    # virDomainNetDefFormat
    ORDER = {"": ("mac", "source", "vlan", "virtualport", "ip", "route", "portForward", "script",
                  "downscript", "backenddomain", "target", "guest", "model", "driver", "backend",
                  "filterref", "tune", "teaming", "link", "mtu", "coalesce", "rom", "boot",
                  "alias", "address", "acpi")}

    type = Prop("@type", doc="user | network | bridge")
    mac = Prop("mac/@address")
    source_network = Prop("source/@network")
    source_bridge = Prop("source/@bridge")
    model = Prop("model/@type", doc="virtio")
    backend_type = Prop("backend/@type", doc="passt (absent: QEMU's built-in slirp)")
    port_forwards = Children(PortForward, "portForward")

    def add_port_forward(self, proto: str, address: str | None = None) -> PortForward:
        el = make_child(self.ensure(), "portForward")

        insert_ordered(self.element, el, self.order_for(""))
        pf = PortForward(el)
        pf.proto = proto
        pf.address = address
        return pf


class Serial(XMLNode):
    TAG = "serial"
    ORDER = {"": ("source", "log", "protocol", "target", "alias", "address")}

    type = Prop("@type", doc="pty")
    log_file = Prop("log/@file", doc="console output copied to this file by virtlogd")
    log_append = Prop("log/@append", "onoff")
    target_type = Prop("target/@type", doc="isa-serial")
    target_port = Prop("target/@port", "int")


class Console(XMLNode):
    TAG = "console"
    ORDER = {"": ("source", "log", "protocol", "target", "alias", "address")}

    type = Prop("@type", doc="pty")
    target_type = Prop("target/@type", doc="serial | virtio")
    target_port = Prop("target/@port", "int")


class Channel(XMLNode):
    TAG = "channel"
    ORDER = {"": ("source", "log", "protocol", "target", "alias", "address")}

    type = Prop("@type", doc="unix")
    target_type = Prop("target/@type", doc="virtio")
    target_name = Prop("target/@name", doc="org.qemu.guest_agent.0")


class Graphics(XMLNode):
    """Graphics: vmctl only ever listens on 127.0.0.1 (set by the plan, checked by tests)."""

    TAG = "graphics"
    ORDER = {"": ("listen", "channel", "image", "streaming", "clipboard", "mouse", "filetransfer",
                  "gl", "audio")}

    type = Prop("@type", doc="vnc")
    port = Prop("@port", "int", doc="-1 with autoport")
    autoport = Prop("@autoport", "yesno")
    listen = Prop("@listen")
    listen_type = Prop("listen/@type", doc="address")
    listen_address = Prop("listen/@address")


class Video(XMLNode):
    TAG = "video"

    model_type = Prop("model/@type", doc="virtio | vga | none")


class Controller(XMLNode):
    """``<controller>``: vmctl only uses it to turn the USB controller off on headless guests."""

    TAG = "controller"
    ORDER = {"": ("model", "driver", "master", "alias", "address", "target")}

    type = Prop("@type", doc="usb | pci | sata | scsi | virtio-serial ...")
    model = Prop("@model", doc="for usb: none (no USB controller at all) | qemu-xhci ...")


class MemBalloon(XMLNode):
    TAG = "memballoon"
    ORDER = {"": ("alias", "address", "stats", "driver")}

    model = Prop("@model", doc="virtio | none")
    stats_period = Prop("stats/@period", "int")
    free_page_reporting = Prop("@freePageReporting", "onoff", doc="the guest gives freed pages back")


class RNG(XMLNode):
    TAG = "rng"
    ORDER = {"": ("driver", "rate", "backend", "alias", "address")}

    model = Prop("@model", doc="virtio")
    rate_bytes = Prop("rate/@bytes", "int")
    rate_period = Prop("rate/@period", "int")
    backend_model = Prop("backend/@model", doc="random")
    backend_device = Prop("backend", doc="/dev/urandom")


class TPM(XMLNode):
    """An emulated TPM (swtpm, started by libvirt for the VM)."""

    TAG = "tpm"
    ORDER = {"": ("backend", "alias", "address")}

    model = Prop("@model", doc="tpm-crb | tpm-tis")
    backend_type = Prop("backend/@type", doc="emulator")
    backend_version = Prop("backend/@version", doc="2.0")


class Devices(XMLNode):
    TAG = "devices"
    # virDomainDefFormatInternalSetRootName: devices in this order
    ORDER = {"": ("emulator", "disk", "controller", "lease", "filesystem", "interface",
                  "smartcard", "serial", "parallel", "console", "channel", "input", "tpm",
                  "graphics", "sound", "audio", "video", "hostdev", "redirdev", "redirfilter",
                  "hub", "watchdog", "memballoon", "rng", "nvram", "panic", "shmem", "memory",
                  "iommu", "vsock", "crypto")}

    disks = Children(Disk, "disk")
    filesystems = Children(Filesystem, "filesystem")
    controllers = Children(Controller, "controller")
    interfaces = Children(Interface, "interface")
    serials = Children(Serial, "serial")
    consoles = Children(Console, "console")
    channels = Children(Channel, "channel")
    graphics = Children(Graphics, "graphics")
    videos = Children(Video, "video")
    memballoon = Child(MemBalloon, "memballoon")
    rngs = Children(RNG, "rng")

    def add(self, device: XMLNode) -> XMLNode:
        """Add a detached device node at its ordered place (after devices of the same kind)."""
        return self.add_child(device)


# --- <qemu:commandline> --------------------------------------------------------------------------

class QemuCommandline(XMLNode):
    """Extra QEMU arguments, for what libvirt cannot express (user-mode hostfwd before passt)."""

    TAG = "qemu:commandline"
    NSMAP = {"qemu": QEMU_NS}

    @property
    def args(self) -> list[str]:
        el = self.element
        if el is None:
            return []
        return [a.get("value", "") for a in el.findall(qname("qemu:arg"))]

    @args.setter
    def args(self, values: Iterable[str]) -> None:
        el = self.ensure()
        for old in el.findall(qname("qemu:arg")):
            el.remove(old)
        anchor = None
        for value in values:
            arg = make_child(el, qname("qemu:arg"))
            arg.set("value", value)
            if anchor is not None:
                anchor.addnext(arg)
            anchor = arg


# --- <domain> -----------------------------------------------------------------------------------

DOMAIN_ORDER = (
    "name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory",
    "currentMemory", "blkiotune", "memtune", "memoryBacking", "vcpu", "vcpus", "iothreads",
    "iothreadids", "defaultiothread", "cputune", "numatune", "resource", "sysinfo", "bootloader",
    "bootloader_args", "os", "idmap", "features", "cpu", "clock", "on_poweroff", "on_reboot",
    "on_crash", "on_lockfailure", "pm", "perf", "devices", "seclabel", "keywrap", "launchSecurity",
    "qemu:commandline", "qemu:capabilities", "qemu:override", "qemu:deprecation",
)


class Domain(XMLNode):
    """A libvirt ``<domain>``: build one with `Domain()` or parse one with `Domain.from_xml()`."""

    TAG = "domain"
    ORDER = {
        "": DOMAIN_ORDER,
        "blkiotune": ("weight", "device"),
        "memtune": ("hard_limit", "soft_limit", "min_guarantee", "swap_hard_limit"),
        "memoryBacking": ("hugepages", "nosharepages", "locked", "source", "access",
                          "allocation", "discard"),
        "cputune": ("shares", "period", "quota", "global_period", "global_quota",
                    "emulator_period", "emulator_quota", "iothread_period", "iothread_quota",
                    "vcpupin", "emulatorpin", "iothreadpin", "vcpusched", "iothreadsched",
                    "cachetune", "memorytune"),
    }

    type = Prop("@type", doc="kvm | qemu (TCG)")
    name = Prop("name")
    uuid = Prop("uuid")
    genid = Prop("genid", doc="VM generation ID: a new one tells a restored guest's kernel to reseed its RNG")
    title = Prop("title")
    description = Prop("description")
    memory_kib = MemoryProp("memory")
    current_memory_kib = MemoryProp("currentMemory")
    vcpus = Prop("vcpu", "int")
    vcpu_placement = Prop("vcpu/@placement")
    vcpus_current = Prop("vcpu/@current", "int", doc="vCPUs online at boot (<vcpu> is the hotplug maximum)")
    blkio_weight = Prop("blkiotune/weight", "int", doc="cgroup blkio weight 100-1000")
    memtune_hard_limit_kib = MemoryProp("memtune/hard_limit", doc="cgroup memory hard limit")
    memory_source_type = Prop("memoryBacking/source/@type", doc="memfd: guest memory a vhost-user daemon can map")
    memory_access_mode = Prop("memoryBacking/access/@mode", doc="shared (virtio-fs needs it)")
    cpu_shares = Prop("cputune/shares", "int", doc="cgroup cpu shares (relative weight)")
    cpu_period = Prop("cputune/period", "int", doc="CFS period, microseconds")
    cpu_quota = Prop("cputune/quota", "int", doc="CFS quota per vCPU, microseconds")
    cpu_global_period = Prop("cputune/global_period", "int", doc="CFS period of the whole VM, microseconds")
    cpu_global_quota = Prop("cputune/global_quota", "int", doc="CFS quota of the whole VM, microseconds")
    on_poweroff = Prop("on_poweroff")
    on_reboot = Prop("on_reboot")
    on_crash = Prop("on_crash")
    seclabel_type = Prop("seclabel/@type", doc="none: libvirt relabels (chowns) no file for this domain")
    seclabel_model = Prop("seclabel/@model", doc="dac")
    seclabel_relabel = Prop("seclabel/@relabel", "yesno")

    metadata = Child(VmctlMetadata, "metadata/vmctl:instance")
    os = Child(OS, "os")
    features = Child(Features, "features")
    cpu = Child(CPU, "cpu")
    clock = Child(Clock, "clock")
    devices = Child(Devices, "devices")
    qemu_commandline = Child(QemuCommandline, "qemu:commandline")

    def __init__(self, element: etree._Element | None = None, *, qemu_namespace: bool = False,
                 **kw):
        if element is None and kw.get("parent") is None:
            element = etree.Element("domain", nsmap={"qemu": QEMU_NS} if qemu_namespace else None)
        super().__init__(element, **kw)

    @property
    def memory_mib(self) -> int | None:
        kib = self.memory_kib
        return None if kib is None else kib // 1024

    @memory_mib.setter
    def memory_mib(self, mib: int) -> None:
        """Set both <memory> and <currentMemory> (vmctl does not use a balloon target)."""
        self.memory_kib = mib * 1024
        self.current_memory_kib = mib * 1024


__all__ = [
    "CPU", "Channel", "Clock", "Console", "Devices", "Disk", "Domain", "Features", "Filesystem", "Graphics",
    "Interface", "MemBalloon", "MemoryProp", "NSMAP", "OS", "PortForward", "PortRange",
    "QemuCommandline", "RNG", "Serial", "Timer", "Video", "VmctlMetadata",
]
