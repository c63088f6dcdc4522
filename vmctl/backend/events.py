"""libvirt's domain lifecycle events, as they happen.

libvirt delivers events only to a connection opened after an event loop implementation was
registered, and only while that loop runs. `open_events` therefore registers libvirt's default
implementation once per process, runs it in one daemon thread (shared by every stream), and opens
a connection of its own -- never the session's, which may predate the loop. Each lifecycle event
becomes a `RawEvent` (libvirt's type and detail numbers, named) in a queue the caller reads with
`EventStream.next`.

libvirt (9.0) has no event for a snapshot being *taken*. A snapshot with memory pauses the
domain while QEMU saves it: that pause and the resume that ends it are reported with the detail
``snapshot`` (found from the domain's state reason, see `EventStream._paused_to_save`). A
disk-only snapshot, or one of a stopped VM, makes no libvirt event at all. A revert's events
carry the detail ``from-snapshot``.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, replace

import libvirt

from vmctl.backend.errors import libvirt_errors
from vmctl.errors import LibvirtUnreachable

# libvirt's lifecycle event types, and the details of each, in vmctl's words (libvirt's enum
# order: virDomainEventType and virDomain*DetailType).
EVENTS = ("defined", "undefined", "started", "paused", "resumed", "stopped", "shutdown", "suspended", "crashed")
DETAILS = {
    "defined": ("added", "updated", "renamed", "from-snapshot"),
    "undefined": ("removed", "renamed"),
    "started": ("booted", "migrated", "restored", "from-snapshot", "wakeup"),
    "paused": ("paused", "migrated", "io-error", "watchdog", "restored", "from-snapshot", "api-error",
               "postcopy", "postcopy-failed"),
    "resumed": ("unpaused", "migrated", "from-snapshot", "postcopy", "postcopy-failed"),
    "stopped": ("shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from-snapshot"),
    "shutdown": ("finished", "guest", "host"),
    "suspended": ("memory", "disk"),
    "crashed": ("panicked", "crashloaded"),
}
SNAPSHOT_PAUSE = "snapshot"   # vmctl's detail for the pause and resume around a snapshot with memory
_SAVING = {libvirt.VIR_DOMAIN_PAUSED_SAVE, libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT}

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


@dataclass(frozen=True)
class RawEvent:
    """One lifecycle event of domain `name` (`time`: seconds since the epoch, when received)."""

    name: str
    uuid: str
    event: str
    detail: str
    time: float


def name_event(event: int, detail: int) -> tuple[str, str]:
    """libvirt's (type, detail) numbers in vmctl's words; numbers newer than this table stay numbers."""
    kind = EVENTS[event] if 0 <= event < len(EVENTS) else f"event-{event}"
    details = DETAILS.get(kind, ())
    return kind, details[detail] if 0 <= detail < len(details) else f"detail-{detail}"


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and start the thread that runs it (once per process)."""
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        _loop_thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _loop_thread.start()


class EventStream:
    """Lifecycle events of every domain on one connection, queued until read; close() ends it."""

    _CLOSED = object()

    def __init__(self, uri: str):
        ensure_event_loop()
        self._queue: queue.Queue = queue.Queue()
        self._saving: set[str] = set()   # UUIDs of domains paused for a snapshot with memory
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise LibvirtUnreachable(f"cannot connect to {uri}: {exc.get_error_message() or exc}") from None
        try:  # a daemon that stops answering must end the stream, not leave it silent forever
            self._conn.setKeepAlive(5, 3)
        except libvirt.libvirtError:
            pass  # a driver inside this process (test:///) has no connection to keep alive
        with libvirt_errors("listen for events"):
            self._conn.registerCloseCallback(lambda *_: self._queue.put(self._CLOSED), None)
            self._callback = self._conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None)

    def _lifecycle(self, _conn, dom, event: int, detail: int, _opaque) -> None:
        kind, how = name_event(event, detail)
        self._queue.put(RawEvent(dom.name(), dom.UUIDString(), kind, how, time.time()))

    def next(self, timeout: float | None = None) -> RawEvent | None:
        """The next event, waiting up to `timeout` seconds (None: no event came in time).

        Raises LibvirtUnreachable when the daemon closed the connection."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is self._CLOSED:
            raise LibvirtUnreachable("libvirt closed the connection; no more events")
        return self._snapshot_window(item)

    def _snapshot_window(self, item: RawEvent) -> RawEvent:
        """Relabel the pause and the resume around a snapshot with memory (detail "snapshot")."""
        if item.event == "paused" and item.detail == "paused" and self._paused_to_save(item.uuid):
            self._saving.add(item.uuid)
            return replace(item, detail=SNAPSHOT_PAUSE)
        if item.uuid in self._saving:
            self._saving.discard(item.uuid)
            if item.event == "resumed" and item.detail == "unpaused":
                return replace(item, detail=SNAPSHOT_PAUSE)
        return item

    def _paused_to_save(self, uuid: str) -> bool:
        """True when the domain is paused while QEMU saves its memory.

        libvirt's event says only "paused"; the domain's state reason tells a snapshot's pause
        from a user's (libvirt 9.0 gives PAUSED_SAVE for an internal snapshot, as seen on QEMU
        here; PAUSED_SNAPSHOT is the reason libvirt names for snapshots in general). A save
        to a file (which vmctl never does) has the same reason but ends "stopped (saved)". Asked
        here, in the reader's thread: an API call inside the event loop's own callback could wait
        on the loop it blocks. A pause over before this runs stays "paused (paused)".
        """
        try:
            state, reason = self._conn.lookupByUUIDString(uuid).state()
        except libvirt.libvirtError:
            return False
        return state == libvirt.VIR_DOMAIN_PAUSED and reason in _SAVING

    def close(self) -> None:
        try:
            self._conn.domainEventDeregisterAny(self._callback)
            self._conn.unregisterCloseCallback()
        except (libvirt.libvirtError, AttributeError):
            pass
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_events(uri: str) -> EventStream:
    """A stream of `uri`'s domain lifecycle events from now on."""
    return EventStream(uri)
