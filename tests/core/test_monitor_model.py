"""stats and events arithmetic, no libvirt: CPU percent from two samples, memory from balloon
figures, frames, docker-style filters, and libvirt's event numbers named."""

from __future__ import annotations

import pytest

from vmctl.backend.events import RawEvent, name_event
from vmctl.backend.monitor import DomainCounters, counters
from vmctl.core.events import event_dict, matches, parse_filters
from vmctl.core.monitor import cpu_percent, frame, memory, row
from vmctl.errors import UsageError


def _c(name="vm1", state="running", taken=0.0, cpu=None, **kw) -> DomainCounters:
    return DomainCounters(name=name, state=state, taken=taken, cpu_time_ns=cpu, **kw)


def test_cpu_percent_is_cpu_time_over_wall_time():
    assert cpu_percent(_c(taken=10.0, cpu=0), _c(taken=12.0, cpu=1_000_000_000)) == pytest.approx(50.0)
    # two busy vCPUs for one second: 200 %, as docker shows it
    assert cpu_percent(_c(taken=1.0, cpu=5), _c(taken=2.0, cpu=5 + 2_000_000_000)) == pytest.approx(200.0)


@pytest.mark.parametrize("before, after", [
    (None, _c(taken=1.0, cpu=10)),                        # first sample: nothing to compare with
    (_c(taken=1.0, cpu=None), _c(taken=2.0, cpu=10)),     # the counter was not reported
    (_c(taken=1.0, cpu=10**9), _c(taken=2.0, cpu=10)),    # it went back: the domain restarted
    (_c(taken=2.0, cpu=1), _c(taken=2.0, cpu=2)),         # no wall time passed
])
def test_cpu_percent_unknown_is_none_not_a_guess(before, after):
    assert cpu_percent(before, after) is None


def test_memory_prefers_the_guests_view_then_the_hosts():
    guest = {"current": 262144, "available": 240000, "usable": 200000, "unused": 150000, "rss": 90000}
    assert memory(guest) == (40000 * 1024, 240000 * 1024, "guest")
    assert memory({"available": 240000, "unused": 150000}) == (90000 * 1024, 240000 * 1024, "guest")
    assert memory({"current": 262144, "maximum": 262144, "rss": 90000}) == (90000 * 1024, 262144 * 1024, "host")
    assert memory({"current": 262144}) == (None, 262144 * 1024, None)
    assert memory({}) == (None, None, None)


def test_counters_sum_every_disk_and_interface():
    values = {"state.state": 1, "cpu.time": 7, "balloon.current": 1024, "balloon.rss": 512, "balloon.swap_in": 3,
              "block.count": 2, "block.0.rd.bytes": 100, "block.0.wr.bytes": 5, "block.1.rd.bytes": 20,
              "net.count": 1, "net.0.rx.bytes": 9, "net.0.tx.bytes": 4}
    c = counters("vm1", values, 3.0)
    assert (c.state, c.cpu_time_ns, c.block_read_bytes, c.block_write_bytes, c.net_rx_bytes, c.net_tx_bytes) == \
        ("running", 7, 120, 5, 9, 4)
    assert c.balloon_kib == {"current": 1024, "rss": 512}
    off = counters("vm2", {"state.state": 5}, 3.0)
    assert off.state == "stopped" and off.cpu_time_ns is None and off.block_read_bytes is None and off.net_rx_bytes is None


def test_row_and_frame():
    before = {"a": _c("a", taken=0.0, cpu=0), "b": _c("b", state="stopped", taken=0.0)}
    after = {"a": _c("a", taken=1.0, cpu=250_000_000, balloon_kib={"current": 1000, "rss": 250},
                     block_read_bytes=4096, block_write_bytes=0),
             "b": _c("b", state="stopped", taken=1.0)}
    r = row("a", before["a"], after["a"])
    assert r["cpu_percent"] == 25.0 and r["memory_used_bytes"] == 250 * 1024 and r["memory_percent"] == 25.0
    assert r["memory_source"] == "host" and r["block_read_bytes"] == 4096 and r["net_rx_bytes"] is None
    assert [x["name"] for x in frame(before, after, ["b", "a", "gone"], active_only=True)] == ["a"]
    shown = frame(before, after, ["b", "a", "gone"], active_only=False)
    assert [(x["name"], x["state"]) for x in shown] == [("b", "stopped"), ("a", "running"), ("gone", "missing")]
    assert shown[0]["cpu_percent"] is None and shown[2]["memory_limit_bytes"] is None


def test_filters_are_dockers():
    f = parse_filters(["vm=web1", "name=web2", "event=started", "event=stopped"])
    assert f == {"vm": {"web1", "web2"}, "event": {"started", "stopped"}}
    ev = {"vm": "web2", "event": "stopped", "detail": "destroyed"}
    assert matches(f, ev) and not matches(f, {**ev, "event": "paused"}) and not matches(f, {**ev, "vm": "x"})
    assert matches({}, ev) and matches(parse_filters(["detail=destroyed"]), ev)


@pytest.mark.parametrize("bad", ["vm", "vm=", "=x", "color=red", "event=exploded", "detail=nope", "vm=../etc"])
def test_a_bad_filter_is_a_usage_error(bad):
    with pytest.raises(UsageError):
        parse_filters([bad])


def test_libvirt_event_numbers_are_named():
    assert name_event(2, 0) == ("started", "booted")
    assert name_event(5, 1) == ("stopped", "destroyed")
    assert name_event(3, 5) == ("paused", "from-snapshot")
    assert name_event(4, 2) == ("resumed", "from-snapshot")
    assert name_event(8, 0) == ("crashed", "panicked")
    assert name_event(5, 99) == ("stopped", "detail-99") and name_event(42, 0) == ("event-42", "detail-0")
    ev = event_dict(RawEvent("web1", "u-1", "started", "booted", 0.25))
    assert ev == {"time": "1970-01-01T00:00:00.250000Z", "type": "vm", "vm": "web1", "uuid": "u-1",
                  "event": "started", "detail": "booted"}


class _Dom:
    def __init__(self, state):
        self._state = state

    def state(self):
        return self._state


class _Conn:
    def __init__(self, states):
        self.states = states

    def lookupByUUIDString(self, uuid):
        return _Dom(self.states[uuid])


def test_the_pause_and_resume_around_a_memory_snapshot_say_snapshot():
    import libvirt

    from vmctl.backend.events import EventStream

    stream = EventStream.__new__(EventStream)   # no connection: only the relabelling is tested
    stream._saving = set()
    stream._conn = _Conn({"u-snap": (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_SAVE),
                          "u-user": (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER)})

    def seen(uuid, event, detail):
        return stream._snapshot_window(RawEvent("vm", uuid, event, detail, 0.0)).detail

    assert seen("u-snap", "paused", "paused") == "snapshot"
    assert seen("u-snap", "resumed", "unpaused") == "snapshot"
    assert seen("u-snap", "started", "booted") == "booted"   # the window closed with the resume
    assert seen("u-user", "paused", "paused") == "paused"
    assert seen("u-user", "resumed", "unpaused") == "unpaused"
