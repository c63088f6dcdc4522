"""Which hosts see the same storage: two hosts whose data roots are one file system (NFS, a
cluster file system) share their layers and their VMs' files.

Two hosts share storage when a probe volume made in one's instances pool shows up in the other's
under the same path (`shares`). Whatever deletes files on a host by what *its* domains use must
count the VMs of every host sharing that storage too, or it deletes what they stand on:
``host prune`` (layers no VM uses) and ``doctor --fix`` (files of no VM). `neighbours` finds those
hosts in the host table (same data root, storage shown shared by the probe); one that does not
answer might be one of them, so it is named and the caller deletes nothing it could need.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

from vmctl.backend import pools
from vmctl.backend.fleet import domain_xmls
from vmctl.core.hostplace import HostPlace, record_from_xml
from vmctl.core.records import InstanceRecord
from vmctl.core.session import Session
from vmctl.errors import VmctlError
from vmctl.hosts import HostTable, hosts_file

PROBE = ".vmctl-probe-"


def shares(a: HostPlace, b: HostPlace) -> bool:
    """True when the two hosts' instance pools are one storage: a probe volume made in `a`'s shows
    up in `b`'s under the same path."""
    if a.instances_dir != b.instances_dir:
        return False
    probe = f"{PROBE}{os.urandom(6).hex()}"
    pools.upload(a.backend, a.instances_pool, probe, io.BytesIO(b"vmctl"), 5)
    try:
        return pools.volume(b.backend, b.instances_pool, probe, refresh=True) is not None
    finally:
        pools.delete(a.backend, a.instances_pool, probe)


@dataclass
class Neighbours:
    """What the hosts sharing a host's storage hold there."""
    hosts: list[str] = field(default_factory=list)          # their names in the host table
    domains: set[str] = field(default_factory=set)          # every domain name they have
    records: list[InstanceRecord] = field(default_factory=list)   # their vmctl VMs' records
    xml_text: str = ""                                      # their domains' XML, joined (blob names)
    unreachable: list[str] = field(default_factory=list)    # same data root, not answering


def neighbours(session: Session) -> Neighbours:
    """The other hosts of the table that share `session`'s host's storage (see the module doc)."""
    me = session.host
    out = Neighbours()
    if me is None or not hosts_file().exists():
        return out
    place = HostPlace(session)
    for name, host in sorted(HostTable.read(hosts_file()).hosts.items()):
        if name == me.name or host.root != me.root or host.uri == me.uri:
            continue   # another root, or the same daemon (its domains are this host's own)
        other = session.for_host(host)
        try:
            if not shares(place, HostPlace(other)):
                continue
            xmls = domain_xmls(other.backend)
            out.hosts.append(name)
            out.domains |= set(xmls)
            out.xml_text += " ".join(xml for xml, _a in xmls.values())
            out.records += [r for n, (xml, _a) in sorted(xmls.items())
                            if (r := record_from_xml(xml, f"{name}:{n}")) is not None]
        except VmctlError:
            out.unreachable.append(name)
        finally:
            other.close()
    return out
