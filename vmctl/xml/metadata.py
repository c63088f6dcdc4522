"""vmctl's own metadata inside a domain: ``<metadata><vmctl:instance xmlns:vmctl="...">``.

libvirt stores elements of foreign namespaces under ``<metadata>`` verbatim and hands them back in
``XMLDesc()``, so the domain definition itself records what vmctl needs to manage an instance: the
image it was made from (reference and id), the mode and profile, the forwarded ports, the SSH
forward and the pinned SSH host key, and the creation state (``creating`` until the create
transaction finished, then ``created``) with its time. ``vmctl doctor`` uses the state to find
leftovers of a killed create.

    <vmctl:instance xmlns:vmctl="https://vmctl.dev/xmlns/instance/1">
      <vmctl:image ref="debian:12" id="sha256:..."/>
      <vmctl:mode>hosted</vmctl:mode>
      <vmctl:profile>hosted</vmctl:profile>
      <vmctl:state created="2026-01-01T00:00:00Z">created</vmctl:state>
      <vmctl:ssh address="127.0.0.1" port="40022">
        <vmctl:hostkey>ssh-ed25519 AAAA...</vmctl:hostkey>
      </vmctl:ssh>
      <vmctl:ports>
        <vmctl:port proto="tcp" address="127.0.0.1" host="8080" guest="80"/>
      </vmctl:ports>
      <vmctl:record>{"name": ..., "host_key": ..., ...}</vmctl:record>   (VMs on vmctl hosts only)
    </vmctl:instance>
"""

from __future__ import annotations

from vmctl.xml.base import VMCTL_NS, Children, Prop, XMLNode, make_child, qname

STATES = ("creating", "created")


class PortMeta(XMLNode):
    """One forwarded port as vmctl recorded it (host address/port -> guest port, protocol)."""

    TAG = "vmctl:port"
    NSMAP = {"vmctl": VMCTL_NS}

    proto = Prop("@proto", doc="tcp or udp")
    host_address = Prop("@address", doc="host bind address (always loopback)")
    host_port = Prop("@host", "int")
    guest_port = Prop("@guest", "int")


class VmctlMetadata(XMLNode):
    """Typed access to ``<vmctl:instance>``."""

    TAG = "vmctl:instance"
    NSMAP = {"vmctl": VMCTL_NS}
    ORDER = {"": ("vmctl:image", "vmctl:mode", "vmctl:profile", "vmctl:state", "vmctl:ssh",
                  "vmctl:ports", "vmctl:record")}

    image_ref = Prop("vmctl:image/@ref", doc="image reference the instance was created from")
    image_id = Prop("vmctl:image/@id", doc="image id (digest) the overlay is backed by")
    mode = Prop("vmctl:mode", doc="hosted or system")
    profile = Prop("vmctl:profile", doc="machine profile name")
    state = Prop("vmctl:state", doc="creating | created")
    created = Prop("vmctl:state/@created", doc="creation time, RFC 3339 UTC")
    ssh_address = Prop("vmctl:ssh/@address", doc="host address of the SSH forward")
    ssh_port = Prop("vmctl:ssh/@port", "int", doc="host port of the SSH forward")
    ssh_host_key = Prop("vmctl:ssh/vmctl:hostkey", doc="pinned SSH host public key line")
    ports = Children(PortMeta, "vmctl:ports/vmctl:port")
    record = Prop("vmctl:record", doc="a VM on a vmctl host: its whole instance record (JSON); the "
                  "host keeps no other file of vmctl's about it, and a migration carries it along")

    def add_port(self, proto: str, host_address: str, host_port: int, guest_port: int) -> PortMeta:
        container = self.ensure_path("vmctl:ports")
        el = make_child(container, qname("vmctl:port"))
        port = PortMeta(el)
        port.proto = proto
        port.host_address = host_address
        port.host_port = host_port
        port.guest_port = guest_port
        return port

    def clear_ports(self) -> None:
        el = self.element
        if el is not None:
            container = el.find(qname("vmctl:ports"))
            if container is not None:
                el.remove(container)


