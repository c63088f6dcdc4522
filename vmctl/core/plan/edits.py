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



def _moved(value: str, roots: tuple[tuple[str, str], ...]) -> str:
    for old, new in roots:
        if value == old or value.startswith(old.rstrip("/") + "/"):
            return new.rstrip("/") + value[len(old.rstrip("/")):]
    return value


def retarget(xml: str, *, roots: tuple[tuple[str, str], ...], old_address: str, new_address: str,
             record_json: str | None) -> str:
    """`xml` (a domain of a vmctl host) made fit for another host: every file path under one of
    `roots`' old directories moved under the new one (disk sources and their backing chains,
    kernel, initrd, serial log), forwards listening on `new_address` instead of `old_address`
    (``hostfwd`` arguments, passt's ``portForward``, vmctl's metadata) and the record replaced.
    Everything else is kept as libvirt wrote it."""
    d = Domain.from_xml(xml)
    root = d.element
    for el in root.iter("source", "log"):
        if el.get("file"):
            el.set("file", _moved(el.get("file"), roots))
    os_ = d.os
    if os_.kernel:
        os_.kernel = _moved(os_.kernel, roots)
    if os_.initrd:
        os_.initrd = _moved(os_.initrd, roots)
    cl = d.qemu_commandline
    if cl.exists:
        old = re.compile(r"(hostfwd=(?:tcp|udp):)" + re.escape(old_address) + ":")
        cl.args = [old.sub(lambda m: f"{m.group(1)}{new_address}:", a) for a in cl.args]
    for iface in d.devices.interfaces:
        for pf in iface.port_forwards:
            if pf.address == old_address:
                pf.address = new_address
    meta = d.metadata
    if meta.exists:
        if meta.ssh_address == old_address:
            meta.ssh_address = new_address
        for port in meta.ports:
            if port.host_address == old_address:
                port.host_address = new_address
        if record_json is not None:
            meta.record = record_json
    return d.to_xml()


def copied_disks(xml: str, directory: str) -> tuple[str, ...]:
    """Target names (``vda``) of the domain's writable file disks under `directory`: what a
    migration between hosts without shared storage copies."""
    d = Domain.from_xml(xml)
    prefix = directory.rstrip("/") + "/"
    return tuple(disk.target_dev for disk in d.devices.disks
                 if disk.source_file and disk.source_file.startswith(prefix) and not disk.readonly
                 and disk.device != "cdrom")


def boot_files(xml: str) -> tuple[str, ...]:
    """The kernel and initrd a domain boots directly (none for firmware boot)."""
    os_ = Domain.from_xml(xml).os
    return tuple(p for p in (os_.kernel, os_.initrd) if p)


def drop_io_weight(xml: str) -> str:
    """`xml` without ``<blkiotune><weight>`` (for a host whose disks cannot weigh I/O)."""
    d = Domain.from_xml(xml)
    d.blkio_weight = None
    tune = d.element.find("blkiotune")
    if tune is not None and len(tune) == 0:   # nothing else tuned there: no empty element left
        d.element.remove(tune)
    return d.to_xml()
