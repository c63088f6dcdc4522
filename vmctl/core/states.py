"""The one state machine: which verb is legal in which VM state, decided in one place.

As Firecracker's API layer states for each action where it is legal, `RULES` is one table
(action × state): the states where an action runs, the states where it is a no-op (as
``docker start`` of a running container succeeds without doing anything), and whether it takes
the VM's name lock. Every state-dependent verb enters through `guard`: it resolves the instance
once, takes the lock, reads the state once and either lets the verb run, tells it that there is
nothing to do, or refuses with a `ConflictError` (exit code 4; a `UsageError` where the request
itself cannot apply to that state) that names the state and the way out. Nothing else in vmctl checks a VM's state to decide what is allowed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Iterator

from vmctl.core.instance import MISSING, Instance, resolve
from vmctl.core.namelock import name_lock
from vmctl.core.session import Session
from vmctl.errors import ConflictError, UsageError


class State(StrEnum):
    """A VM's state in vmctl's words (libvirt's, mapped by the backend; `MISSING`: no domain)."""
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"     # the guest is shutting down
    STOPPED = "stopped"
    CRASHED = "crashed"
    SUSPENDED = "suspended"   # suspended to RAM by the guest (ACPI S3)
    UNKNOWN = "unknown"
    MISSING = MISSING         # vmctl has the VM's files but libvirt has no domain of that name


ALL = frozenset(State)
# A crashed domain is one libvirt kept (``on_crash=preserve``): its QEMU still runs and holds the
# disk, so it counts as active. (vmctl's profiles destroy crashed guests: libvirt then reports
# them shut off, which is "stopped".)
ACTIVE = frozenset({State.RUNNING, State.PAUSED, State.STOPPING, State.SUSPENDED, State.CRASHED})
OFF = frozenset({State.STOPPED})
LIVE = frozenset({State.RUNNING, State.PAUSED})


@dataclass(frozen=True)
class Rule:
    legal: frozenset
    noop: frozenset = frozenset()
    lock: bool = True          # take the name lock (reaching the guest does not: execs run side by side)
    hint: str = ""
    refusal: type = ConflictError   # a wrong state is a conflict, unless the request itself makes no sense


RULES: dict[str, Rule] = {
    "start": Rule(OFF | {State.CRASHED}, noop=frozenset({State.RUNNING})),
    "stop": Rule(ACTIVE, noop=OFF),
    "kill": Rule(ACTIVE),
    "restart": Rule(ACTIVE | OFF),
    "pause": Rule(frozenset({State.RUNNING})),
    "resume": Rule(frozenset({State.PAUSED})),
    # a crashed VM does nothing a user would keep (docker rm takes a dead container): rm powers it off
    "remove": Rule(OFF | {State.CRASHED, State.UNKNOWN, State.MISSING}, hint=" (stop it first, or use rm -f)"),
    "remove-force": Rule(ALL),
    "snapshot-create": Rule(LIVE | OFF),
    # --memory of a VM that is not running asks for what cannot exist: a usage error, as it always was
    "snapshot-create-memory": Rule(LIVE, refusal=UsageError,
                                   hint=" (there is no memory to save; without --memory it gets a disk snapshot)"),
    "snapshot-revert": Rule(LIVE | OFF),
    "snapshot-remove": Rule(LIVE | OFF),
    "commit": Rule(LIVE | OFF),
    # a checkpoint saves a running machine (a paused one would be saved paused: resume it first)
    "checkpoint": Rule(frozenset({State.RUNNING}), refusal=UsageError,
                       hint=" (a checkpoint saves a running machine; start it, or commit without --checkpoint)"),
    "update": Rule(LIVE | OFF),
    # a running or paused VM moves with libvirt's migration, a stopped one offline
    "migrate": Rule(LIVE | OFF),
    "exec": Rule(frozenset({State.RUNNING}), lock=False),
    "cp": Rule(frozenset({State.RUNNING}), lock=False),
    "ssh": Rule(frozenset({State.RUNNING}), lock=False),
    "wait": Rule(frozenset({State.RUNNING}), lock=False),
    "address": Rule(frozenset({State.RUNNING}), lock=False),   # vmctl ip, ssh --print-command
}

_WAY_OUT = {State.STOPPED: "start it first", State.CRASHED: "start or remove it", State.PAUSED: "resume it first",
            State.MISSING: "its libvirt domain is gone; remove it with vmctl rm"}
_VERB = {"remove-force": "remove", "snapshot-create": "snapshot", "snapshot-create-memory": "save the memory of", "snapshot-revert": "revert a snapshot of",
         "snapshot-remove": "remove a snapshot of", "cp": "copy files with", "wait": "wait for",
         "address": "give the address of", "checkpoint": "checkpoint"}


def decide(action: str, name: str, state: str) -> bool:
    """True when `action` must run, False when it is a no-op; ConflictError when it is illegal."""
    rule = RULES[action]
    if state in rule.noop:
        return False
    if state in rule.legal:
        return True
    hint = rule.hint
    if not hint and state in _WAY_OUT and action not in ("start", "kill"):
        hint = f" ({_WAY_OUT[State(state)]})"
    raise rule.refusal(f"cannot {_VERB.get(action, action)} {name}: it is {state}{hint}")


@dataclass
class Guarded:
    """What `guard` hands the verb: the instance, the state read once, and whether to act."""
    instance: Instance
    state: str
    run: bool


@contextlib.contextmanager
def guard(session: Session, name: str, action: str, *, remote_ok: bool = False) -> Iterator[Guarded]:
    """Take VM `name`'s lock (if the action's rule says so), then resolve it, read its state once
    and check `action` against the table; the verb runs inside the block. Resolving under the
    lock means no other vmctl process can change the record between the read and the verb."""
    rule = RULES[action]
    held = name_lock(session.locks, name) if rule.lock else contextlib.nullcontext()
    with held:
        instance = resolve(session, name, remote_ok=remote_ok)
        state = instance.state()
        run = decide(action, name, state)
        yield Guarded(instance, state, run)
