"""The VM lifecycle as an explicit state machine.

Each action names the states it is legal in, what it does there, and which states make it a no-op
(as ``docker start`` on a running container succeeds without doing anything). Everything else is a
`ConflictError` that names the current state, instead of scattered ``if`` checks or a raw libvirt
"domain is not running".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vmctl.errors import ConflictError

ACTIVE = {"running", "paused", "stopping", "suspended"}


@dataclass(frozen=True)
class Action:
    name: str
    legal: frozenset[str]
    noop: frozenset[str] = frozenset()


ACTIONS = {
    "start": Action("start", frozenset({"stopped", "crashed"}), frozenset({"running"})),
    "stop": Action("stop", frozenset({"running", "paused", "stopping", "suspended"}), frozenset({"stopped", "crashed"})),
    "kill": Action("kill", frozenset({"running", "paused", "stopping", "suspended", "crashed"})),
    "restart": Action("restart", frozenset({"running", "paused", "stopping", "stopped", "crashed"})),
    "pause": Action("pause", frozenset({"running"})),
    "resume": Action("resume", frozenset({"paused"})),
    "remove": Action("remove", frozenset({"stopped", "crashed", "unknown"})),
}


def check_action(action: str, name: str, state: str) -> bool:
    """Return True when `action` must run, False when it is a no-op; ConflictError when illegal."""
    spec = ACTIONS[action]
    if state in spec.noop:
        return False
    if state not in spec.legal:
        hint = {"remove": " (stop it first, or use rm -f)", "resume": "", "pause": ""}.get(action, "")
        raise ConflictError(f"cannot {action} {name}: it is {state}{hint}")
    return True


def start(backend, name: str) -> bool:
    """Start `name` if it is not running; return whether anything happened."""
    if not check_action("start", name, backend.state(name).state):
        return False
    backend.start(name)
    return True


def stop(backend, name: str, timeout: float) -> str:
    """Press the power button, wait up to `timeout` s, then power off; return "graceful"/"forced"/"noop"."""
    state = backend.state(name).state
    if not check_action("stop", name, state):
        return "noop"
    if state == "paused":
        backend.resume(name)  # a paused guest cannot see the power button
    if timeout > 0:
        try:
            backend.shutdown(name)
        except ConflictError:
            pass  # it went down on its own between the two calls
        if backend.wait_state(name, {"stopped", "crashed"}, timeout) in {"stopped", "crashed"}:
            return "graceful"
    if backend.state(name).state in {"stopped", "crashed"}:
        return "graceful"
    backend.destroy(name)
    return "forced"


def kill(backend, name: str) -> None:
    check_action("kill", name, backend.state(name).state)
    backend.destroy(name)


def restart(backend, name: str, timeout: float) -> None:
    """Stop (gracefully within `timeout`, then forced) and start again."""
    check_action("restart", name, backend.state(name).state)
    stop(backend, name, timeout)
    backend.start(name)


def pause(backend, name: str) -> None:
    check_action("pause", name, backend.state(name).state)
    backend.suspend(name)


def resume(backend, name: str) -> None:
    check_action("resume", name, backend.state(name).state)
    backend.resume(name)


def serial_tail(log: Path, lines: int = 20) -> str:
    """The last `lines` lines of a serial console log ('' when there is none yet)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode(errors="replace").replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])


def follow(log: Path, out, *, stop_when=None, poll: float = 0.2) -> None:
    """Copy `log` to `out` as it grows (``logs -f``) until interrupted or `stop_when()` is true."""
    pos = 0
    while True:
        try:
            with open(log, "rb") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            out.write(chunk)
            out.flush()
        elif stop_when is not None and stop_when():
            return
        time.sleep(poll)
