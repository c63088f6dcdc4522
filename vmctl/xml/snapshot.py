"""libvirt's ``<domainsnapshot>`` document: built for create/redefine, parsed back from libvirt.

vmctl uses internal qcow2 snapshots only (see `vmctl.core.snapshots`), so the model covers what
that needs: name, description, state, creation time, parent, the memory and per-disk snapshot
modes, and the embedded ``<domain>`` (required when redefining a snapshot's metadata). Elements it
does not model (``<cookie>``, ``<inactiveDomain>``, disk sources of external snapshots) are kept as
they are when a parsed document is edited.

    <domainsnapshot>
      <name>before-upgrade</name>
      <description>known good</description>
      <state>running</state>
      <creationTime>1795911875</creationTime>
      <parent><name>base</name></parent>
      <memory snapshot='internal'/>
      <disks>
        <disk name='vda' snapshot='internal'/>
        <disk name='sda' snapshot='no'/>
      </disks>
      <domain type='qemu'>...</domain>
    </domainsnapshot>
"""

from __future__ import annotations

from lxml import etree

from vmctl.xml.base import Children, Prop, XMLNode, insert_ordered, make_child

STATES = ("running", "blocked", "paused", "shutdown", "shutoff", "crashed", "disk-snapshot")
MEMORY_MODES = ("no", "internal")
DISK_MODES = ("no", "internal", "external", "manual")


class SnapshotDisk(XMLNode):
    """One ``<disk name='vda' snapshot='internal'/>`` of a snapshot."""

    TAG = "disk"

    ORDER = {"": ("driver", "source")}

    name = Prop("@name", doc="target device name (vda) or source path")
    snapshot = Prop("@snapshot", doc="no | internal | external | manual")
    type = Prop("@type", doc="external: file")
    driver_type = Prop("driver/@type", doc="external: the new overlay's format (qcow2)")
    source_file = Prop("source/@file", doc="external: the new overlay QEMU writes to from now on")


class DomainSnapshot(XMLNode):
    """Typed access to ``<domainsnapshot>`` (element order as libvirt formats it)."""

    TAG = "domainsnapshot"
    ORDER = {"": ("name", "description", "state", "creationTime", "parent", "memory", "disks",
                  "active", "domain", "inactiveDomain", "cookie")}

    name = Prop("name", doc="snapshot name")
    description = Prop("description", doc="free text")
    state = Prop("state", doc="domain state when taken: running | paused | shutoff | disk-snapshot ...")
    creation_time = Prop("creationTime", "int", doc="seconds since the epoch")
    parent = Prop("parent/name", doc="name of the parent snapshot")
    memory = Prop("memory/@snapshot", doc="no | internal (external memory is not used by vmctl)")
    disks = Children(SnapshotDisk, "disks/disk")

    def add_disk(self, name: str, snapshot: str) -> SnapshotDisk:
        """Append ``<disk name= snapshot=/>`` under ``<disks>``."""
        if snapshot not in DISK_MODES:
            raise ValueError(f"unknown disk snapshot mode {snapshot!r}")
        container = self.ensure_path("disks")
        disk = SnapshotDisk(make_child(container, "disk"))
        disk.name = name
        disk.snapshot = snapshot
        return disk

    def disk_modes(self) -> dict[str, str]:
        """target -> snapshot mode, for the disks listed."""
        return {d.name: d.snapshot for d in self.disks}

    @property
    def domain(self) -> etree._Element | None:
        """The embedded ``<domain>`` element (the definition the snapshot restores), if any."""
        el = self.element
        return None if el is None else el.find("domain")

    def set_domain(self, domain_xml: str | bytes) -> None:
        """Embed a domain definition (replacing any), parsed safely, at its ordered place."""
        parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)
        data = domain_xml.encode() if isinstance(domain_xml, str) else domain_xml
        new = etree.fromstring(data, parser)
        if new.tag != "domain":
            raise ValueError(f"expected <domain>, got <{new.tag}>")
        old = self.domain
        el = self.ensure()
        if old is not None:
            el.remove(old)
        insert_ordered(el, new, self.order_for(""))

    def domain_xml(self) -> str | None:
        dom = self.domain
        return None if dom is None else etree.tostring(dom, encoding="unicode")


def build_snapshot(name: str, *, description: str | None = None, state: str | None = None,
                   creation_time: int | None = None, parent: str | None = None,
                   memory: str | None = None, disks: dict[str, str] | None = None,
                   domain_xml: str | None = None) -> DomainSnapshot:
    """A new snapshot document; values are set through lxml, so any text is escaped."""
    if state is not None and state not in STATES:
        raise ValueError(f"unknown snapshot state {state!r}")
    if memory is not None and memory not in MEMORY_MODES:
        raise ValueError(f"unsupported memory snapshot mode {memory!r}")
    snap = DomainSnapshot()
    snap.name = name
    if description:
        snap.description = description
    if state is not None:
        snap.state = state
    if creation_time is not None:
        snap.creation_time = int(creation_time)
    if parent is not None:
        snap.parent = parent
    if memory is not None:
        snap.memory = memory
    for target, mode in (disks or {}).items():
        snap.add_disk(target, mode)
    if domain_xml is not None:
        snap.set_domain(domain_xml)
    return snap
