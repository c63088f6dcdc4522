"""A running machine saved to a file and restored from one (libvirt ``virDomainSave`` /
``virDomainRestoreFlags``), and the few QMP calls a warm start needs. Errors translated.

The policy — what a checkpoint holds, when a clone may be restored, its identity — is
`vmctl.core.checkpoint` and `vmctl.core.warm`; this module only makes the calls.
"""

from __future__ import annotations

import json
import time

import libvirt
import libvirt_qemu
from lxml import etree

from vmctl.backend.errors import libvirt_errors
from vmctl.backend.events import ensure_event_loop
from vmctl.backend.snapshots import qmp
from vmctl.errors import LibvirtError


def save(backend, name: str, path: str) -> None:
    """Save running domain `name`'s memory and device state to `path` (libvirt's save-image
    format, raw); the domain is stopped afterwards, its disks flushed."""
    dom = backend._domain(name)
    with libvirt_errors(f"save {name}"):
        dom.saveFlags(path, None, libvirt.VIR_DOMAIN_SAVE_RUNNING)


def restore(backend, path: str, *, paused: bool) -> None:
    """Start the domain described by save image `path` from the state it holds (the domain of
    that name and UUID stays defined as it was)."""
    flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
    with libvirt_errors("restore the checkpoint"):
        backend.raw.restoreFlags(path, None, flags)


def live_xml(backend, name: str) -> str:
    """The running domain's XML with everything libvirt needs to start it again (migratable)."""
    dom = backend._domain(name)
    with libvirt_errors(f"read {name}'s definition"):
        return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)


def inactive_xml(backend, name: str) -> str:
    """The persistent definition, with what a restore must carry (migratable, secure)."""
    dom = backend._domain(name)
    with libvirt_errors(f"read {name}'s definition"):
        return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
                           | libvirt.VIR_DOMAIN_XML_INACTIVE)


def has_channel(backend, name: str, target: str) -> bool:
    """True when running domain `name` has a virtio-serial channel named `target`."""
    dom = backend._domain(name)
    with libvirt_errors(f"read {name}'s channels"):
        root = etree.fromstring(dom.XMLDesc(0).encode())
    return any(ch.find("target") is not None and ch.find("target").get("name") == target
               for ch in root.iterfind("devices/channel"))


class ChannelStream:
    """Bytes to and from a running domain's virtio-serial channel through libvirt itself
    (``virDomainOpenChannel``): the daemon connects to the channel's socket, so this works where
    the socket's path is not reachable from here (a daemon in another mount namespace or host)."""

    def __init__(self, backend, name: str, target: str):
        self.name = name
        # A connection of its own, made after libvirt's event loop runs: only then does the
        # client read the stream's data as it arrives (a non-blocking stream is fed by the loop).
        ensure_event_loop()
        with libvirt_errors(f"open {name}'s channel {target}"):
            self.conn = libvirt.open(backend.uri)
            try:
                dom = self.conn.lookupByName(name)
                self.stream = self.conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
                dom.openChannel(target, self.stream, 0)
            except libvirt.libvirtError:
                self.close()
                raise

    def sendall(self, data: bytes, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            with libvirt_errors(f"write to {self.name}'s channel"):
                n = self.stream.send(bytes(view))
            if n == -2:
                if time.monotonic() > deadline:
                    raise LibvirtError(f"{self.name}'s channel takes no data")
                time.sleep(0.005)
                continue
            view = view[n:]

    def recv(self, size: int, timeout: float) -> bytes | None:
        """Up to `size` bytes; b"" at end of stream; None when nothing came within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            with libvirt_errors(f"read {self.name}'s channel"):
                data = self.stream.recv(size)
            if data != -2:
                return data
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)

    def close(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass   # already gone with its domain
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass


def nics(backend, name: str) -> list[str]:
    """QEMU's names of the running domain's NICs."""
    return [f["name"] for f in qmp(backend, name, "query-rx-filter") or [] if isinstance(f, dict) and "name" in f]


def set_links(backend, name: str, up: bool) -> list[str]:
    """Set every NIC's link up or down (the guest sees carrier change; no packet passes while
    down); return the NICs' names."""
    names = nics(backend, name)
    for nic in names:
        qmp(backend, name, "set_link", {"name": nic, "up": up})
    return names


def guest_agent(backend, name: str, command: str, arguments: dict | None = None, *, timeout: int = 10):
    """One qemu-guest-agent command through libvirt; its "return", or LibvirtError (no agent,
    an agent error). The reply is the guest's: the caller checks every field it uses."""
    dom = backend._domain(name)
    payload = {"execute": command, **({"arguments": arguments} if arguments is not None else {})}
    with libvirt_errors(f"{command} in {name}'s guest agent"):
        raw = libvirt_qemu.qemuAgentCommand(dom, json.dumps(payload), timeout, 0)
    if raw is None or len(raw) > 1 << 20:
        raise LibvirtError(f"{command} in {name}'s guest agent: no usable answer")
    try:
        reply = json.loads(raw)
    except ValueError:
        raise LibvirtError(f"{command} in {name}'s guest agent: the answer is not JSON") from None
    if not isinstance(reply, dict) or "error" in reply:
        raise LibvirtError(f"{command} in {name}'s guest agent refused it")
    return reply.get("return")


def qemu_version(backend) -> str:
    """The hypervisor's version as ``major.minor.micro``."""
    with libvirt_errors("read QEMU's version"):
        v = backend.raw.getVersion()
    return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"
