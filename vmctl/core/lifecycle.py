"""Power verbs: start, stop, kill, restart, pause, resume — each through the state machine.

Every verb enters through `vmctl.core.states.guard` (lock, state read once, the table's verdict);
on a remote daemon (``qemu+ssh://``) a domain without a local record is acted on alone, as virsh
would. Stopping presses the ACPI power button and waits, then powers off.
"""

from __future__ import annotations

from vmctl.core.limits import apply_after_start, start_domain
from vmctl.core.volumes import ensure_binds
from vmctl.core.warm import start_fresh
from vmctl.core.session import Session
from vmctl.core.states import ACTIVE, OFF, guard
from vmctl.errors import ConflictError


def start(session: Session, name: str) -> bool:
    """Start `name`; False when it was running already."""
    with guard(session, name, "start", remote_ok=True) as g:
        if not g.run:
            return False
        _clear_crash(session, name, g.state)
        g.instance.ensure_ssh_port()
        ensure_binds(g.instance.record.volumes)
        if g.instance.record is not None:
            start_fresh(session, g.instance, boot=lambda: start_domain(session, name, g.instance.record.limits))
        else:
            start_domain(session, name, None)
        apply_after_start(session.backend, name, g.instance.record.limits)
        return True


def _clear_crash(session: Session, name: str, state: str) -> None:
    """A crashed domain kept by libvirt (``on_crash=preserve``) is still active: power it off
    before it can start again (vmctl's profiles destroy crashed guests, so this is rare)."""
    if state == "crashed":
        try:
            session.backend.destroy(name)
        except ConflictError:
            pass  # already gone


def power_off(backend, name: str, state: str, timeout: float) -> str:
    """Press the power button, wait up to `timeout` s, then force; "graceful" or "forced".
    The caller holds the name lock and has read `state` (an active one).

    A crashed guest cannot react and one asleep in S3 cannot see the button (Linux syncs its
    file systems before it sleeps): both are powered off at once, as a timeout would end anyway."""
    if state in ("crashed", "suspended") or timeout <= 0:
        backend.destroy(name)
        return "forced"
    if state == "paused":
        backend.resume(name)  # a paused guest cannot see the power button
    try:
        backend.shutdown(name)
    except ConflictError:
        pass  # it went down on its own between the two calls
    if backend.wait_state(name, set(OFF), timeout) in OFF:
        return "graceful"
    try:
        backend.destroy(name)
    except ConflictError:
        return "graceful"  # it went down between the last poll and the destroy
    return "forced"


def stop(session: Session, name: str, timeout: float) -> str:
    """Shut `name` down: "graceful", "forced" (after `timeout` s) or "noop" (it was stopped)."""
    with guard(session, name, "stop", remote_ok=True) as g:
        if not g.run:
            return "noop"
        return power_off(session.backend, name, g.state, timeout)


def kill(session: Session, name: str) -> None:
    with guard(session, name, "kill", remote_ok=True):
        session.backend.destroy(name)


def restart(session: Session, name: str, timeout: float) -> None:
    """Stop (gracefully within `timeout`, then forced) and start again, under one lock."""
    with guard(session, name, "restart", remote_ok=True) as g:
        if g.state in ACTIVE:
            power_off(session.backend, name, g.state, timeout)  # a crashed one at once
        g.instance.ensure_ssh_port()
        ensure_binds(g.instance.record.volumes)
        start_domain(session, name, g.instance.record.limits)
        apply_after_start(session.backend, name, g.instance.record.limits)


def pause(session: Session, name: str) -> None:
    with guard(session, name, "pause", remote_ok=True):
        session.backend.suspend(name)


def resume(session: Session, name: str) -> None:
    with guard(session, name, "resume", remote_ok=True):
        session.backend.resume(name)
