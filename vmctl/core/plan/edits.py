"""Edits of a defined domain's XML (parsed losslessly, so whatever libvirt added is kept)."""

from __future__ import annotations

import re

from vmctl.core.ports import PortForward
from vmctl.xml.domain import Domain

_HOSTFWD_SSH = re.compile(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-:22(?=,|$)")


def move_ssh_port(xml: str, old: int | None, new: int) -> str:
    """Return `xml` with the SSH forward moved to host port `new`: the hostfwd in
    <qemu:commandline> or the passt <portForward> range, and the metadata."""
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

