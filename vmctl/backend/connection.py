"""A connection to libvirt and the calls vmctl makes through it.

`Backend` is deliberately thin: each method is one libvirt operation (or one bulk query) with
libvirt's errors translated. Policy (what may happen in which state) lives in `vmctl.core`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import libvirt

from vmctl.backend.errors import libvirt_errors, translate
from vmctl.backend.events import open_events
from vmctl.backend.start_hints import MEMLOCK_DENIED, memlock_hint, swtpm_hint
from vmctl.errors import ConflictError, LibvirtError, LibvirtUnreachable, NotFoundError

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}

# libvirt accepts virtio-fs in session mode (unprivileged virtiofsd) from 10.0.0.
VIRTIOFS_SESSION_MIN_VERSION = 10_000_000

# libvirt learnt the passt backend for <interface type='user'> (with <portForward>) in 9.2.0.
PASST_MIN_VERSION = 9_002_000


def _version_text(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _unsupported_flags(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT) and \
        "unsupported flags" in (exc.get_error_message() or "")


def bindings_version() -> str:
    """Version of the libvirt library these bindings run against (no connection needed)."""
    return _version_text(libvirt.getVersion())


@dataclass(frozen=True)
class DomainState:
    """A domain's name, lifecycle state (vmctl's words) and libvirt's reason code."""

    name: str
    uuid: str
    state: str
    reason: int
    persistent: bool


class Backend:
    """One open libvirt connection."""

    def __init__(self, conn: libvirt.virConnect, uri: str):
        self._conn = conn
        self.uri = uri

    # ---- host facts -------------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        """libvirt library/daemon versions and the hypervisor's name and version."""
        with libvirt_errors("version query"):
            return {
                "libvirt_library": _version_text(libvirt.getVersion()),
                "libvirt_daemon": _version_text(self._conn.getLibVersion()),
                "hypervisor": self._conn.getType(),
                "hypervisor_version": _version_text(self._conn.getVersion()),
            }

    def supports_passt(self) -> bool:
        """True when the daemon can use passt for user-mode networking with port forwards."""
        with libvirt_errors("version query"):
            return self._conn.getLibVersion() >= PASST_MIN_VERSION

    def supports_virtiofs(self) -> bool:
        """True when the daemon can share a directory through virtio-fs on this connection: its
        domain capabilities list the virtiofs driver, and the daemon is privileged (qemu:///system,
        or a root client's session, which the system daemon serves) or libvirt is 10.0 or newer
        (before 10.0 an unprivileged session daemon refuses virtio-fs at define)."""
        with libvirt_errors("domain capabilities"):
            caps = self._conn.getDomainCapabilities(None, None, None, None, 0)
            version = self._conn.getLibVersion()
        # lazy: lxml (15 ms of start-up) is not loaded by commands that never read XML, as ls
        from lxml import etree

        drivers = etree.fromstring(caps.encode()).xpath(
            "devices/filesystem[@supported='yes']/enum[@name='driverType']/value/text()")
        listed = "virtiofs" in drivers
        path = self.uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        privileged = path == "system" or (path == "session" and os.geteuid() == 0 and not self.is_remote())
        return listed and (privileged or version >= VIRTIOFS_SESSION_MIN_VERSION)

    def supports_kvm(self) -> bool:
        """True when the daemon's domain capabilities offer the kvm domain type."""
        from lxml import etree  # lazy: see supports_virtiofs

        with libvirt_errors("capabilities"):
            caps = etree.fromstring(self._conn.getCapabilities().encode())
        return bool(caps.xpath("guest[arch/@name='x86_64']/arch/domain[@type='kvm']"))

    def is_remote(self) -> bool:
        """True when the daemon runs on another host (local files are then out of reach)."""
        return "+" in self.uri.split(":", 1)[0] and not self.uri.split(":", 1)[0].endswith("+unix")

    # ---- definitions ------------------------------------------------------------------------
    def define(self, xml: str) -> str:
        """Define (or redefine) a persistent domain, validated against libvirt's schema; return its UUID."""
        with libvirt_errors("define"):
            dom = self._conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        return dom.UUIDString()

    def undefine(self, name: str) -> None:
        """Remove a domain's definition with its snapshot/checkpoint metadata, NVRAM and managed save."""
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA", 0)
        )
        dom = self._domain(name)
        with libvirt_errors(f"undefine {name}"):
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as exc:
                # a driver without snapshot/NVRAM support (the test driver) refuses the flags;
                # such a domain has neither, so the plain undefine removes everything
                if not _unsupported_flags(exc):
                    raise
                dom.undefine()

    def exists(self, name: str) -> bool:
        try:
            self._conn.lookupByName(name)
            return True
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise translate(exc, name) from exc

    def xml(self, name: str, *, inactive: bool = False, secure: bool = False) -> str:
        flags = (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0) | (
            libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
        )
        dom = self._domain(name)
        with libvirt_errors(name):
            return dom.XMLDesc(flags)

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self, name: str) -> None:
        dom = self._domain(name)
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            message = exc.get_error_message() or ""
            if MEMLOCK_DENIED in message:
                raise LibvirtError(memlock_hint(name)) from exc
            hint = swtpm_hint(name, message)
            if hint:
                raise LibvirtError(hint) from exc
            raise translate(exc, f"start {name}") from exc

    def shutdown(self, name: str) -> None:
        """Ask the guest to power off: through its guest agent when one answers (a guest that
        ignores ACPI still stops), else by pressing the ACPI power button."""
        dom = self._domain(name)
        with libvirt_errors(f"stop {name}"):
            try:
                # with both flags libvirt tries the agent first and falls back to ACPI by itself
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT
                                  | libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            except libvirt.libvirtError as exc:
                if not _unsupported_flags(exc):
                    raise
                dom.shutdown()  # the hypervisor's default way (the test driver has no ACPI)

    # ---- live tuning ------------------------------------------------------------------------
    # Each applies to the persistent definition and, when `live`, to the running QEMU first
    # (libvirt writes its cgroup files, or asks QEMU, at once). Two calls, not one with both
    # flags: some drivers (the test driver) take only one of AFFECT_LIVE and AFFECT_CONFIG a call.
    def _tune(self, name: str, live: bool, call, persistent: bool = True) -> None:
        dom = self._domain(name)
        with libvirt_errors(f"update {name}"):
            if live:
                call(dom, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            if persistent:
                call(dom, libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def set_scheduler(self, name: str, params: dict, live: bool) -> None:
        """cgroup CPU parameters: ``cpu_shares``, ``global_period``, ``global_quota``."""
        self._tune(name, live, lambda dom, flags: dom.setSchedulerParametersFlags(params, flags))

    def set_memory_limits(self, name: str, params: dict, live: bool, persistent: bool = True) -> None:
        """cgroup memory parameters in KiB: ``hard_limit``."""
        self._tune(name, live, lambda dom, flags: dom.setMemoryParameters(params, flags), persistent)

    def set_blkio(self, name: str, params: dict, live: bool) -> None:
        """cgroup block I/O parameters: ``weight``."""
        self._tune(name, live, lambda dom, flags: dom.setBlkioParameters(params, flags))

    def set_disk_throttle(self, name: str, disk: str, params: dict, live: bool) -> None:
        """QEMU's throttle of one disk: ``read_bytes_sec``, ``write_bytes_sec``."""
        self._tune(name, live, lambda dom, flags: dom.setBlockIoTune(disk, params, flags))

    def disk_throttle(self, name: str, disk: str) -> dict:
        """The running QEMU's throttle of `disk` (what QEMU itself reports)."""
        with libvirt_errors(f"block I/O tune of {name}"):
            return self._domain(name).blockIoTune(disk, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def set_balloon(self, name: str, kib: int, live: bool) -> None:
        """The balloon's target (the memory the guest has), at most the domain's <memory>."""
        self._tune(name, live, lambda dom, flags: dom.setMemoryFlags(kib, flags))

    def set_vcpus(self, name: str, count: int, live: bool) -> None:
        """vCPUs online (hot-plugged when `live`), at most the domain's <vcpu> maximum."""
        self._tune(name, live, lambda dom, flags: dom.setVcpusFlags(count, flags))

    def fs_freeze(self, name: str) -> bool:
        """Freeze the guest's file systems through its guest agent (flushed, no writes until
        `fs_thaw`); False when no agent answers -- the caller goes on crash-consistent."""
        dom = self._domain(name)
        try:
            dom.fsFreeze(None, 0)
        except libvirt.libvirtError:
            return False
        return True

    def fs_thaw(self, name: str) -> None:
        dom = self._domain(name)
        with libvirt_errors(f"thaw the file systems of {name}"):
            dom.fsThaw(None, 0)

    def destroy(self, name: str) -> None:
        """Power off at once (the guest gets no chance to sync)."""
        dom = self._domain(name)
        with libvirt_errors(f"kill {name}"):
            dom.destroy()

    def suspend(self, name: str) -> None:
        dom = self._domain(name)
        with libvirt_errors(f"pause {name}"):
            dom.suspend()

    def resume(self, name: str) -> None:
        dom = self._domain(name)
        with libvirt_errors(f"resume {name}"):
            dom.resume()

    def state(self, name: str) -> DomainState:
        dom = self._domain(name)
        with libvirt_errors(name):
            state, reason = dom.state()
            return DomainState(name, dom.UUIDString(), STATE_NAMES.get(state, "unknown"), reason,
                               bool(dom.isPersistent()))

    def wait_state(self, name: str, wanted: set[str], timeout: float) -> str:
        """Wait until the domain is in one of `wanted` states or `timeout` passes; return the last state.

        Woken by libvirt's lifecycle events (a stop is seen as it happens, not at the next poll);
        the state is read again after every event of this domain and at least once a second, so a
        lost event costs a second, never the whole timeout. Without events (a daemon refusing
        them) it polls every 100 ms."""
        deadline = time.monotonic() + timeout
        try:
            stream = open_events(self.uri)
        except (LibvirtError, LibvirtUnreachable):
            stream = None
        try:
            while True:
                # read after subscribing: a change between the two is caught either way
                current = self.state(name).state
                left = deadline - time.monotonic()
                if current in wanted or left <= 0:
                    return current
                if stream is None:
                    time.sleep(min(0.1, left))
                    continue
                until = time.monotonic() + min(1.0, left)
                while (remaining := until - time.monotonic()) > 0:
                    try:
                        event = stream.next(timeout=remaining)
                    except LibvirtUnreachable:
                        stream.close()
                        stream = None
                        break
                    if event is not None and event.name == name:
                        break
        finally:
            if stream is not None:
                stream.close()

    def list_states(self) -> dict[str, DomainState]:
        """All domains and their states, from one bulk libvirt call."""
        with libvirt_errors("list domains"):
            stats = self._conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
        result = {}
        for dom, values in stats:
            state = values.get("state.state", libvirt.VIR_DOMAIN_NOSTATE)
            result[dom.name()] = DomainState(
                dom.name(), dom.UUIDString(), STATE_NAMES.get(state, "unknown"),
                values.get("state.reason", 0), True,
            )
        return result

    def interface_addresses(self, name: str, source: str = "lease") -> list[str]:
        """IPv4 addresses of the domain's interfaces from DHCP leases or the guest agent."""
        src = {
            "lease": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            "agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
            "arp": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
        }[source]
        dom = self._domain(name)
        try:
            ifaces = dom.interfaceAddresses(src)
        except libvirt.libvirtError:
            return []
        addrs = []
        for info in (ifaces or {}).values():
            for addr in info.get("addrs") or []:
                if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and addr.get("addr") != "127.0.0.1":
                    addrs.append(addr["addr"])
        return addrs

    def close(self) -> None:
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass

    # ---- internals --------------------------------------------------------------------------
    def _domain(self, name: str) -> libvirt.virDomain:
        try:
            return self._conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFoundError(f"no such VM: {name}") from None
            raise translate(exc, name) from exc

    @property
    def raw(self) -> libvirt.virConnect:
        """The libvirt connection, for other modules of this backend package only."""
        return self._conn


def open_backend(uri: str) -> Backend:
    """Open `uri`; raise LibvirtUnreachable with a hint when the daemon cannot be reached."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        message = exc.get_error_message() or str(exc)
        hint = ""
        if uri.startswith("qemu:///"):
            hint = " (is libvirtd running? start it with 'virtlogd -d; libvirtd -d')"
        elif "+" in uri.split(":", 1)[0] and not uri.startswith("qemu+unix:"):
            hint = " (is the host up, and its libvirtd listening for this transport?)"
        raise LibvirtUnreachable(f"cannot connect to {uri}: {message}{hint}") from None
    if conn is None:  # pragma: no cover - older bindings
        raise LibvirtUnreachable(f"cannot connect to {uri}")
    return Backend(conn, uri)


__all__ = ["Backend", "DomainState", "open_backend", "ConflictError"]
