"""stats and events on libvirt's test driver: the bulk stats call, the event loop, only vmctl's
domains, docker-style filters and the CLI's errors.

``test:///default`` is one shared state per process (every connection sees the same domains): each
test defines its own domains and undefines them at the end. The test driver (9.0) reports only
the state in bulk stats; the figures themselves are checked on a real guest in
tests/e2e/test_monitor_e2e.py.
"""

from __future__ import annotations

import json
import uuid

import libvirt
import pytest

from vmctl import errors
from vmctl.backend.events import DETAILS, EVENTS

pytestmark = pytest.mark.contract
URI = "test:///default"


def _domain_xml(name: str) -> str:
    return (f"<domain type='test'><name>{name}</name><memory>262144</memory>"
            "<os><type>hvm</type></os></domain>")


@pytest.fixture
def conn():
    c = libvirt.open(URI)
    made = []

    def define(name: str, start: bool = True) -> libvirt.virDomain:
        dom = c.defineXML(_domain_xml(name))
        made.append(dom)
        if start:
            dom.create()
        return dom

    c.define = define
    yield c
    for dom in made:
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass
    c.close()


def _record(root, name: str) -> None:
    """A vmctl instance record for `name` (what makes a domain vmctl's)."""
    from vmctl.core.records import InstanceRecord

    directory = root / "instances" / name
    directory.mkdir(parents=True)
    InstanceRecord(name=name, uuid=str(uuid.uuid4()), mode="hosted", uri=URI, profile="hosted", image_ref="base:1",
                   image_id="sha256:" + "0" * 64, created="2026-01-01T00:00:00Z", ssh_user="vmctl",
                   host_key="").save(directory)


@pytest.fixture
def session(vmctl_root):
    from vmctl.config import load_settings
    from vmctl.core.session import Session

    s = Session(settings=load_settings(uri=URI, root=vmctl_root))
    yield s
    s.close()


def test_event_names_follow_libvirts_enums():
    for i, kind in enumerate(EVENTS):
        assert getattr(libvirt, f"VIR_DOMAIN_EVENT_{kind.upper()}", None) == i or \
            (kind == "paused" and libvirt.VIR_DOMAIN_EVENT_SUSPENDED == i) or \
            (kind == "suspended" and libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED == i), kind
    prefix = {"paused": "SUSPENDED", "suspended": "PMSUSPENDED"}
    for kind, details in DETAILS.items():
        for i, detail in enumerate(details):
            const = f"VIR_DOMAIN_EVENT_{prefix.get(kind, kind.upper())}_{detail.upper().replace('-', '_')}"
            alias = {"VIR_DOMAIN_EVENT_SUSPENDED_IO_ERROR": "VIR_DOMAIN_EVENT_SUSPENDED_IOERROR"}
            assert getattr(libvirt, alias.get(const, const)) == i, const


def test_bulk_sample_is_one_call_with_every_domain(conn, session, monkeypatch):
    from vmctl.backend import monitor as bmon

    conn.define("mon-a")
    conn.define("mon-b", start=False)
    calls = []
    real = session.backend.raw.getAllDomainStats
    monkeypatch.setattr(session.backend.raw, "getAllDomainStats",
                        lambda *a: calls.append(a) or real(*a), raising=False)
    got = bmon.sample(session.backend)
    assert len(calls) == 1
    assert got["mon-a"].state == "running" and got["mon-b"].state == "stopped"
    # the test driver reports states only: absent figures are None, never 0
    assert got["mon-a"].cpu_time_ns is None and got["mon-a"].block_read_bytes is None


def test_events_stream_sees_lifecycle_changes_from_another_connection(conn):
    from vmctl.backend.events import open_events

    dom = conn.define("ev-raw", start=False)
    with open_events(URI) as stream:
        dom.create()
        dom.suspend()
        dom.resume()
        dom.destroy()
        seen = []
        while len(seen) < 4:
            ev = stream.next(timeout=5)
            assert ev is not None, seen
            if ev.name == "ev-raw":
                seen.append((ev.event, ev.detail))
    assert seen == [("started", "booted"), ("paused", "paused"), ("resumed", "unpaused"), ("stopped", "destroyed")]


def test_watch_shows_only_vmctls_vms_and_applies_filters(conn, session, vmctl_root):
    from vmctl.core import events

    _record(vmctl_root, "ev-mine")
    mine = conn.define("ev-mine", start=False)
    other = conn.define("ev-other", start=False)

    def act():
        other.create()
        mine.create()
        other.suspend()
        mine.suspend()
        mine.resume()
        mine.destroy()

    got = list(events.watch(session, events.parse_filters(["event=paused", "event=stopped"]), max_events=2,
                            timeout=10, on_ready=act))
    assert [(e["vm"], e["event"], e["detail"]) for e in got] == [("ev-mine", "paused", "paused"),
                                                                 ("ev-mine", "stopped", "destroyed")]


def test_watch_still_shows_the_undefine_of_a_removed_vm(conn, session, vmctl_root):
    import shutil

    from vmctl.core import events

    _record(vmctl_root, "ev-gone")
    dom = conn.define("ev-gone", start=False)

    def remove():
        dom.undefine()
        shutil.rmtree(vmctl_root / "instances" / "ev-gone")   # as vmctl rm does, right after

    got = list(events.watch(session, {}, max_events=1, timeout=10, on_ready=remove))
    assert [(e["vm"], e["event"]) for e in got] == [("ev-gone", "undefined")]


def test_watch_ends_at_its_timeout(session):
    from vmctl.core import events

    assert list(events.watch(session, {}, timeout=0.3)) == []


def test_cli_stats_no_stream_json_lists_running_vmctl_vms(conn, cli_run, vmctl_root):
    _record(vmctl_root, "st-run")
    _record(vmctl_root, "st-off")
    conn.define("st-run")
    conn.define("st-off", start=False)
    conn.define("st-foreign")
    result = cli_run("--connect", URI, "stats", "--no-stream", "--json", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["name"], r["state"]) for r in rows] == [("st-run", "running")]
    named = json.loads(cli_run("--connect", URI, "stats", "--no-stream", "--json", "--interval", "0.05",
                               "st-off", "st-run").stdout)
    assert [(r["name"], r["state"]) for r in named] == [("st-off", "stopped"), ("st-run", "running")]
    table = cli_run("--connect", URI, "stats", "--interval", "0.05", "--frames", "2")
    assert table.exit_code == 0 and table.stdout.count("NAME") == 2 and "st-run" in table.stdout
    assert "st-foreign" not in table.stdout
    lines = cli_run("--connect", URI, "stats", "--json", "--interval", "0.05", "--frames", "2").stdout.splitlines()
    assert len(lines) == 2 and all(json.loads(line)[0]["name"] == "st-run" for line in lines)


def test_cli_stats_of_an_unknown_vm_is_not_found(cli_run):
    result = cli_run("--connect", URI, "stats", "--no-stream", "nosuchvm")
    assert result.exit_code == errors.NotFoundError.exit_code
    assert result.stderr == "vmctl: error: no such VM: nosuchvm\n"


@pytest.mark.parametrize("bad", ["color=red", "event=exploded", "vm"])
def test_cli_events_with_a_bad_filter_is_a_usage_error(cli_run, bad):
    result = cli_run("--connect", URI, "events", "--filter", bad)
    assert result.exit_code == errors.UsageError.exit_code
    assert result.stderr.startswith("vmctl: error: invalid --filter") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_events_prints_each_event_as_a_line(conn, cli_run, vmctl_root, monkeypatch, as_json):
    from vmctl.core import events

    _record(vmctl_root, "ev-cli")
    dom = conn.define("ev-cli", start=False)
    real = events.open_events
    acted = []

    def listening_then_act(uri):
        stream = real(uri)
        if not acted:   # once: the second run below only waits
            acted.append(dom.create())
            dom.suspend()
        return stream

    monkeypatch.setattr(events, "open_events", listening_then_act)
    result = cli_run("--connect", URI, "events", *(["--json"] if as_json else []), "--filter", "vm=ev-cli",
                     "--max-events", "2", "--timeout", "10")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    if as_json:
        got = [json.loads(line) for line in lines]
        assert [(e["vm"], e["event"], e["detail"]) for e in got] == [("ev-cli", "started", "booted"),
                                                                     ("ev-cli", "paused", "paused")]
        assert got[0]["time"].endswith("Z") and got[0]["uuid"] == dom.UUIDString()
    else:
        assert [line.split(" ", 1)[1] for line in lines] == ["vm ev-cli started (booted)", "vm ev-cli paused (paused)"]
    quiet = cli_run("--connect", URI, "events", "--timeout", "0.2")
    assert quiet.exit_code == 0 and quiet.stdout == ""
