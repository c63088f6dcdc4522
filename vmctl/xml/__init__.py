"""libvirt XML models (lxml only, no I/O, no libvirt import).

`vmctl.xml.domain.Domain` is the domain model; `vmctl.xml.metadata.VmctlMetadata` is vmctl's own
metadata inside it; `vmctl.xml.base` holds the node/property machinery they are built from.
"""

from vmctl.xml.base import QEMU_NS, VMCTL_NS, XMLNode
from vmctl.xml.domain import (
    CPU, RNG, Channel, Clock, Console, Controller, Devices, Disk, Domain, Features, Graphics, Interface,
    MemBalloon, OS, PortForward, PortRange, QemuCommandline, Serial, Timer, Video,
)
from vmctl.xml.metadata import PortMeta, VmctlMetadata

__all__ = [
    "CPU", "Channel", "Clock", "Console", "Controller", "Devices", "Disk", "Domain", "Features", "Graphics",
    "Interface", "MemBalloon", "OS", "PortForward", "PortMeta", "PortRange", "QEMU_NS",
    "QemuCommandline", "RNG", "Serial", "Timer", "VMCTL_NS", "Video", "VmctlMetadata", "XMLNode",
]
