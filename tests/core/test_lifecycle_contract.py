"""Lifecycle rules on libvirt's test driver: the state machine, and which domains vmctl touches."""

from __future__ import annotations

import pytest

from vmctl.cli.context import App
from vmctl.config import load_settings
from vmctl.core import instances, lifecycle
from vmctl.errors import ConflictError, NotFoundError

pytestmark = pytest.mark.contract


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_CONFIG", "/dev/null")
    application = App(settings=load_settings(uri="test:///default", root=tmp_path / "root"))
    yield application
    application.close()


def test_the_state_machine_names_the_state_it_refuses(app):
    backend = app.backend  # test:///default has one running domain, "test"
    assert backend.state("test").state == "running"
    assert lifecycle.start(backend, "test") is False  # start on a running VM is a no-op
    with pytest.raises(ConflictError, match="cannot resume test: it is running"):
        lifecycle.resume(backend, "test")
    lifecycle.pause(backend, "test")
    assert backend.state("test").state == "paused"
    with pytest.raises(ConflictError, match="it is paused"):
        lifecycle.pause(backend, "test")
    assert lifecycle.stop(backend, "test", timeout=0) == "forced"  # the test driver has no ACPI button
    assert backend.state("test").state == "stopped"
    assert lifecycle.stop(backend, "test", timeout=5) == "noop"
    with pytest.raises(ConflictError, match="cannot kill test: it is stopped"):
        lifecycle.kill(backend, "test")
    assert lifecycle.start(backend, "test") is True


def test_a_local_domain_without_a_vmctl_record_is_left_alone(app):
    with pytest.raises(NotFoundError, match="no such VM: test"):
        instances.stop(app, "test", timeout=5)
    assert app.backend.state("test").state == "running"


def test_on_a_remote_daemon_lifecycle_commands_act_on_the_domain_alone(app, monkeypatch):
    # Records live on the remote host; vmctl acts like virsh there. (The test driver stands in for
    # a qemu+ssh:// daemon; only the remoteness is asserted, not faked behaviour.)
    monkeypatch.setattr(type(app.backend), "is_remote", lambda self: True)
    instances.kill(app, "test")
    assert app.backend.state("test").state == "stopped"
    assert instances.start(app, "test") is True
    assert app.backend.state("test").state == "running"
    with pytest.raises(NotFoundError):
        instances.stop(app, "nosuchvm", timeout=1)
