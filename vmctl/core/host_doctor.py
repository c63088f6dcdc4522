"""``vmctl --host HOST doctor [--fix]``: what killed vmctl processes left on a vmctl host.

Every multi-step change on a host undoes itself on failure, as on this machine; SIGKILL stops the
undo too. What can remain there, and how it is mended (through the host's libvirt, like all else):

- ``creating-domain``: a domain vmctl defined whose create never finished (its metadata still
  says ``creating``, its disks are in the host's instances directory): powered off, undefined,
  its files deleted;
- ``half-made-snapshot`` / ``stale-snapshot``: as on this machine (`findings.snapshot_findings`);
- ``orphan-host-file``: a file in the host's instances pool that belongs to no domain there (a
  create killed before it defined its domain, a migration killed before libvirt moved the domain
  or before the source's files were deleted, a probe volume): deleted, but only once it is older
  than `GRACE` by the host's clock. Locks are per client machine: another client's create may be
  writing that file right now and nothing here can tell, so a younger file is reported and left.
  The domains of hosts that share this storage count as the host's own (`shared_storage`), and
  while a host with the same data root does not answer, no file is deleted;
- ``stale-lock``: this machine's lock files for the host's VMs whose holder was killed.

The host's layers are not examined: a layer cut short is sent again by the next create that
needs it, and ``vmctl host prune`` removes those no VM stands on.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath

from vmctl.backend import pools
from vmctl.core.findings import Finding, quiet_lock, snapshot_findings, stale_locks
from vmctl.core.hostplace import HostPlace
from vmctl.core.session import Session
from vmctl.core.shared_storage import neighbours
from vmctl.core.states import OFF
from vmctl.errors import IntegrityError, VmctlError
from vmctl.xml.domain import Domain

GRACE = 15 * 60          # seconds: a file younger than this may be another client's work in progress
SUFFIXES = (".snapshots.json", ".serial.log", ".seed.iso", ".qcow2")   # a VM's files (HostPlace)
PROBES = (".vmctl-probe-", ".vmctl-clock-")                             # vmctl's own probe volumes


def _creating_domains(session: Session, place: HostPlace, fix: bool, only: set[str] | None = None) -> list[Finding]:
    found = []
    mine = place.instances_dir.rstrip("/") + "/"
    states = session.backend.list_states()
    for name in sorted(states):
        if only is not None and name not in only:
            continue
        try:
            dom = Domain.from_xml(session.backend.xml(name, inactive=True))
        except VmctlError:
            continue
        if dom.metadata.state != "creating" or not any((d.source_file or "").startswith(mine)
                                                       for d in dom.devices.disks):
            continue
        with quiet_lock(session, name) as locked:
            if not locked:
                continue
            if fix:
                if states[name].state not in OFF:
                    session.backend.destroy(name)
                session.backend.undefine(name)
                place.remove_files(name)
            found.append(Finding("creating-domain", f"{session.host.name}:{name}",
                                 "defined by a create that never finished", True, fix))
    return found


def _host_now(place: HostPlace) -> float:
    """The host's clock, as the modification time of a probe volume written now (file ages are
    compared with it, never with this machine's clock)."""
    probe = f"{PROBES[1]}{os.urandom(6).hex()}"
    pools.upload(place.backend, place.instances_pool, probe, io.BytesIO(b"now"), 3)
    try:
        now = pools.mtimes(place.backend, place.instances_pool)[probe]
        if now is None:
            raise IntegrityError(f"{place.host.name}'s libvirt reports no file times: its files' ages are unknown")
        return now
    finally:
        pools.delete(place.backend, place.instances_pool, probe)


def _owner(volume: str) -> str | None:
    """The VM a volume of the instances pool belongs to (None for a probe or a stranger's file)."""
    for suffix in SUFFIXES:
        if volume.endswith(suffix) and len(volume) > len(suffix):
            return volume[: -len(suffix)]
    return None


def _orphan_files(session: Session, place: HostPlace, fix: bool) -> list[Finding]:
    found = []
    # the VMs of hosts sharing this storage have their files here too (shared_storage)
    near = neighbours(session)
    domains = set(session.backend.list_states()) | near.domains
    ages = pools.mtimes(place.backend, place.instances_pool)
    now = _host_now(place) if ages else 0.0
    for volume in sorted(ages):
        probe = volume.startswith(PROBES)
        vm = _owner(volume)
        if not probe and (vm is None or vm in domains):
            continue
        age = now - ages[volume] if ages[volume] is not None else 0.0   # no time known: as if just written
        subject = f"{session.host.name}:{posixpath.join(place.instances_dir, volume)}"
        if age < GRACE or near.unreachable:
            why = (f"{', '.join(near.unreachable)}, with the same data root, does not answer"
                   if near.unreachable and age >= GRACE else
                   f"written {max(0, int(age))} s ago: left alone (another client's work may be under way) "
                   f"until it is {GRACE // 60} minutes old")
            found.append(Finding("orphan-host-file", subject, f"of no VM on the host; {why}", False))
            continue
        with quiet_lock(session, vm) if vm else contextlib.nullcontext(True) as locked:
            if not locked:
                continue
            if fix:
                pools.delete(place.backend, place.instances_pool, volume)
            what = "a probe volume of a killed vmctl" if probe else f"a file of VM {vm}, which the host has no domain of"
            found.append(Finding("orphan-host-file", subject, f"{what} (a killed create or migration)", True, fix))
    return found


def mend(session: Session, names: set[str]) -> list[Finding]:
    """Undo the creates of VMs `names` on the host that a killed process left half done: a domain
    still "creating", and files of a name that has no domain (a create killed before it defined
    one). ``vmctl up`` and ``down`` on a host start with it, holding the stack's lock: the names
    are that stack's VMs, so their files are not left to the age rule `diagnose` applies to
    files of any name."""
    place = HostPlace(session)
    found = _creating_domains(session, place, True, names)
    domains = set(session.backend.list_states())
    present = set(pools.volumes(place.backend, place.instances_pool))
    for name in sorted(set(names) - domains):
        files = [f for f in place.instance_files(name) if f in present]
        if not files:
            continue
        with quiet_lock(session, name) as locked:
            if not locked:
                continue
            place.remove_files(name)
            found += [Finding("orphan-host-file", f"{session.host.name}:{posixpath.join(place.instances_dir, f)}",
                              "a file of a create that was killed before it defined its domain", True, True)
                      for f in files]
    return found


def diagnose(session: Session, *, fix: bool = False) -> list[Finding]:
    """Everything found on `session`'s host (and mended when `fix`), in a stable order."""
    place = HostPlace(session)
    locks = sorted(session.locks.glob("*.lock")) if session.locks.is_dir() else []
    return [*stale_locks(session, fix, locks), *_creating_domains(session, place, fix),
            *snapshot_findings(session, fix), *_orphan_files(session, place, fix)]
