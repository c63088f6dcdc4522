"""``vmctl events``: lifecycle events of vmctl's VMs as libvirt reports them, with docker's filters.

An event is vmctl's when its domain has an instance record in this store, or had one at any
moment this stream saw it: a ``vmctl rm`` removes the record right after undefining the domain,
and its "undefined" event must still be shown. Other domains on the same libvirt are never shown.

Filters are docker's ``--filter KEY=VALUE``: values of one key are alternatives, different keys
must all match. Keys: ``vm`` (a VM name), ``event`` (one of `EVENTS`), ``detail`` (libvirt's
detail word, e.g. ``from-snapshot``, ``crashed``, ``destroyed``; ``snapshot`` for the pause of a
snapshot with memory).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator

from vmctl.backend.events import DETAILS, EVENTS, SNAPSHOT_PAUSE, RawEvent, open_events
from vmctl.core.hostplace import HostPlace
from vmctl.core.records import RECORD, list_records
from vmctl.core.session import Session
from vmctl.errors import IntegrityError, NotFoundError, UsageError
from vmctl.names import check_name

FILTER_KEYS = ("vm", "event", "detail")
_ALL_DETAILS = frozenset(d for ds in DETAILS.values() for d in ds) | {SNAPSHOT_PAUSE}
# how often a waiting stream wakes to check its deadline (Ctrl-C interrupts the wait at once)
_POLL = 0.5

Filters = dict[str, frozenset[str]]


def parse_filters(items: Iterable[str]) -> Filters:
    """Docker-style ``KEY=VALUE`` filters by key; UsageError for an unknown key or value."""
    found: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not value:
            raise UsageError(f"invalid --filter {item!r}: expected KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}")
        if key == "name":   # docker's word for the same thing
            key = "vm"
        if key not in FILTER_KEYS:
            raise UsageError(f"invalid --filter key {key!r}: one of {', '.join(FILTER_KEYS)}")
        if key == "vm":
            check_name(value, "VM name")
        elif key == "event" and value not in EVENTS:
            raise UsageError(f"invalid --filter event={value!r}: one of {', '.join(EVENTS)}")
        elif key == "detail" and value not in _ALL_DETAILS:
            raise UsageError(f"invalid --filter detail={value!r}: one of {', '.join(sorted(_ALL_DETAILS))}")
        found.setdefault(key, set()).add(value)
    return {k: frozenset(v) for k, v in found.items()}


def matches(filters: Filters, event: dict) -> bool:
    """True when `event` passes every key of `filters` (any one of a key's values)."""
    return all(event[key] in values for key, values in filters.items())


def event_dict(raw: RawEvent) -> dict:
    """An event as ``events --json`` prints it (time: RFC 3339, UTC, microseconds)."""
    stamp = datetime.fromtimestamp(raw.time, timezone.utc).isoformat(timespec="microseconds")
    return {"time": stamp.replace("+00:00", "Z"), "type": "vm", "vm": raw.name, "uuid": raw.uuid,
            "event": raw.event, "detail": raw.detail}


class Owners:
    """Which domain names are this store's VMs (see the module's docstring)."""

    def __init__(self, session: Session):
        self._instances = session.paths.instances
        # a vmctl host's VMs are the domains there that carry vmctl's record (vmctl.core.hostplace)
        self._place = HostPlace(session) if session.host is not None else None
        self._known = ({r.name for r in self._place.records()} if self._place is not None else
                       {r.name for r in list_records(self._instances, include_unfinished=True)})

    def owns(self, name: str) -> bool:
        if name in self._known:
            return True
        try:
            check_name(name, "VM name")
        except UsageError:
            return False   # not a name vmctl could have given: some other tool's domain
        if self._place is not None:
            try:
                self._place.record(name)   # one made (or migrated here) since the stream began
            except (NotFoundError, IntegrityError):
                return False
            self._known.add(name)
            return True
        if (self._instances / name / RECORD).is_file():
            self._known.add(name)
            return True
        return False


def watch(session: Session, filters: Filters | None = None, *, max_events: int | None = None,
          timeout: float | None = None, on_ready: Callable[[], None] = lambda: None) -> Iterator[dict]:
    """vmctl's VMs' events as they happen (`event_dict`s passing `filters`), until the caller
    stops reading, `max_events` were given, or `timeout` seconds passed. `on_ready` is called
    once libvirt is listening: an event after it is never missed."""
    filters = filters or {}
    owners = Owners(session)
    deadline = None if timeout is None else time.monotonic() + timeout
    given = 0
    with open_events(session.settings.uri) as stream:
        on_ready()
        while max_events is None or given < max_events:
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if wait <= 0:
                return
            raw = stream.next(timeout=wait)
            if raw is None or not owners.owns(raw.name):
                continue
            event = event_dict(raw)
            if matches(filters, event):
                given += 1
                yield event
