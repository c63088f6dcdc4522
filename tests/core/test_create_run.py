"""create and run on libvirt's test driver: progress phases, and run as one transaction."""

from __future__ import annotations

import pytest

from vmctl.config import load_settings
from vmctl.core import create
from vmctl.core.records import InstanceRecord
from vmctl.core.session import Session
from vmctl.errors import LibvirtError
from vmctl.xml.domain import Domain

pytestmark = pytest.mark.contract


@pytest.fixture
def session(tmp_path, monkeypatch):
    (tmp_path / "cfg.toml").write_text('accelerator = "tcg"\n')
    monkeypatch.setenv("VMCTL_CONFIG", str(tmp_path / "cfg.toml"))
    seen: list[str] = []
    s = Session(settings=load_settings(uri="test:///default", root=tmp_path / "root"),
                progress=lambda phase, fraction: seen.append(phase))
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    s.store.import_image(disk, "base:1", cloud_init=True, created=1)
    s.seen = seen
    yield s
    s.close()


def test_create_and_run_report_their_phases(session):
    create.create(session, create.CreateRequest(name="a", image="base:1"))
    assert session.seen == ["a: creating the disk", "a: writing the cloud-init seed", "a: defining the domain"]
    # the definition says the create finished (doctor treats a "creating" one as half-made)
    assert Domain.from_xml(session.backend.xml("a", inactive=True)).metadata.state == "created"
    session.seen.clear()
    inst = create.run(session, create.CreateRequest(name="b", image="base:1"), wait=False)
    assert session.seen[-1] == "b: starting" and inst.state() == "running"
    assert session.backend.state("b").state == "running"


def test_a_run_that_cannot_start_leaves_nothing(session, monkeypatch):
    """run undoes the create (record, disk, domain, image hold) when the start fails. The test
    driver never refuses a start, so it is made to here; the real refusal (a memory limit the
    daemon may not set) is tests/e2e/test_system_mode_e2e.py's."""
    def refuse(name):
        raise LibvirtError(f"start {name}: refused for the test")

    monkeypatch.setattr(session.backend, "start", refuse)
    with pytest.raises(LibvirtError):
        create.run(session, create.CreateRequest(name="c", image="base:1"), wait=False)
    assert not session.backend.exists("c")
    assert not (session.settings.paths.instances / "c").exists()
    assert session.store.holders("base:1") == []


def test_run_looks_nothing_up_again(session, monkeypatch):
    """The handle run returns carries the record it wrote and the state it set: no record file is
    read back and libvirt is not asked for the state (the old core read each three times)."""
    loads, states = [], []
    real_load, real_state = InstanceRecord.load.__func__, session.backend.state
    monkeypatch.setattr(InstanceRecord, "load", classmethod(lambda cls, d: loads.append(d) or real_load(cls, d)))
    monkeypatch.setattr(session.backend, "state", lambda name: states.append(name) or real_state(name))
    inst = create.run(session, create.CreateRequest(name="d", image="base:1"), wait=False)
    assert inst.state() == "running" and inst.record.name == "d"
    assert (loads, states) == ([], [])
