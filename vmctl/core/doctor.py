"""Find, and with ``--fix`` mend, what a killed vmctl process can leave behind.

Every multi-step change is a transaction that undoes itself on failure, but SIGKILL or a power
cut stops the undo too. What can remain, how each is recognised safely (never while the process
that made it may still be alive: its name lock, work-dir lock or pid tells), and how it is mended:

- ``staging-dir``: ``instances/.creating-NAME-*`` of a create that died before its rename: removed;
- ``half-made-vm``: an instance dir still marked ``.creating`` (its domain, if defined, says
  ``creating``): the create is undone — domain, image hold, directory;
- ``half-removed-vm``: an instance dir marked ``.removing``: the rm is finished;
- ``creating-domain``: a domain whose vmctl metadata says ``creating`` and that has no instance
  dir: undefined;
- ``half-made-snapshot``: a snapshot whose create never finished (vmctl's intent record is still
  pending, or its data has no libvirt metadata): removed, as the create would have undone it;
- ``stale-snapshot``: vmctl's record or image hold of a snapshot that no longer exists: dropped;
- ``stale-hold``: an image hold of a VM that no longer exists: released;
- ``missing-domain``: a VM record whose libvirt domain is gone (reported only: its disk may
  hold data; ``vmctl rm`` removes it);
- the store's ``stale-work-dir``, ``temp-file`` and ``orphan-blob`` (see `ImageStore.leftovers`);
- ``cache-leftover``: interrupted downloads and compression files of dead pulls and pushes;
- ``stale-lock``: a lock file whose lock nobody holds (its holder was killed): removed;
- ``warm-leftover``: a warm start's save file (the checkpoint's memory, copied for libvirt) that
  a killed ``run`` or ``start`` left in the instance dir, or the clone's identity file of a VM
  that has started since: removed.

After ``--fix`` a second ``doctor`` finds nothing, except what it reports for the user to decide.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from vmctl.core.findings import Finding, free, quiet_lock, snapshot_findings, stale_locks
from vmctl.core.instance import Instance
from vmctl.core.records import CREATING_MARK, REMOVING_MARK, InstanceRecord, list_records
from vmctl.core.session import Session
from vmctl.core.states import OFF
from vmctl.core.teardown import finish_remove
from vmctl.core.warm import RESTORE_FILE, WARM_KEYS
from vmctl.errors import VmctlError
from vmctl.xml.domain import Domain
from vmctl.hostmount import release_under


def _dirs(session: Session) -> list[Path]:
    instances = session.settings.paths.instances
    try:
        return sorted(instances.iterdir())
    except FileNotFoundError:
        return []


def _staging(session: Session, fix: bool) -> list[Finding]:
    found = []
    for entry in _dirs(session):
        if not entry.name.startswith(".creating-"):
            continue
        name = entry.name[len(".creating-"):].rsplit("-", 1)[0]
        with quiet_lock(session, name) as locked:
            if not locked:
                continue  # a create of that name is running right now
            if fix:
                shutil.rmtree(entry, ignore_errors=True)
            found.append(Finding("staging-dir", str(entry), f"half-made files of a create of {name}", True, fix))
    return found


def _unfinished(session: Session, fix: bool, only: set[str] | None = None) -> list[Finding]:
    """Instance dirs whose create or rm a killed process left half done (of `only` VMs)."""
    found = []
    for entry in _dirs(session):
        creating, removing = (entry / CREATING_MARK).exists(), (entry / REMOVING_MARK).exists()
        if entry.name.startswith(".") or not (creating or removing) or (only is not None and entry.name not in only):
            continue
        with quiet_lock(session, entry.name) as locked:
            if not locked:
                continue
            try:
                rec = InstanceRecord.load(entry)
            except VmctlError:
                rec = None
            kind = "half-removed-vm" if removing else "half-made-vm"
            detail = "a vmctl rm was interrupted" if removing else "a vmctl create was interrupted"
            if fix:
                if rec is not None:
                    finish_remove(Instance(session, entry.name, rec, entry))
                else:
                    release_under(entry)
                    shutil.rmtree(entry, ignore_errors=True)
            found.append(Finding(kind, entry.name, detail, True, fix))
    return found


def _creating_domains(session: Session, fix: bool, only: set[str] | None = None) -> list[Finding]:

    found = []
    known = {p.name for p in _dirs(session)}
    states = session.backend.list_states()
    for name in sorted(states):
        if name in known or (only is not None and name not in only):
            continue
        try:
            dom = Domain.from_xml(session.backend.xml(name, inactive=True))
        except VmctlError:
            continue
        if dom.metadata.state != "creating":
            continue
        # another store's create on the same daemon (its disks are under its own data root) is
        # that store's business, and its name lock is not in this store
        mine = str(session.paths.instances) + os.sep
        if not any((d.source_file or "").startswith(mine) for d in dom.devices.disks):
            continue
        with quiet_lock(session, name) as locked:
            if not locked:
                continue
            if fix:
                if states[name].state not in OFF:
                    session.backend.destroy(name)
                session.backend.undefine(name)
            found.append(Finding("creating-domain", name, "defined by a create that never finished", True, fix))
    return found


def _stale_holds(session: Session, fix: bool) -> list[Finding]:
    found = []
    known = {r.name for r in list_records(session.settings.paths.instances, include_unfinished=True)}
    for image_id, holders in session.store.all_holds().items():
        for holder in holders:
            kind, _, subject = holder.partition(":")
            # instance:NAME and snapshot:NAME/SNAP both die with VM NAME
            if kind not in ("instance", "snapshot") or subject.split("/", 1)[0] in known:
                continue
            if fix:
                session.store.release(image_id, holder)
            found.append(Finding("stale-hold", holder, f"keeps image {image_id[7:19]} in use but the VM is gone",
                                 True, fix))
    return found


def _orphan_records(session: Session) -> list[Finding]:
    states = session.backend.list_states()
    return [
        Finding("missing-domain", r.name, "vmctl has its files but libvirt has no such domain (rm it to clean up)", False)
        for r in list_records(session.settings.paths.instances) if r.name not in states
    ]


def _store(session: Session, fix: bool) -> list[Finding]:
    found = [Finding(kind, subject, detail, kind != "damaged-image", fix and kind != "damaged-image")
             for kind, subject, detail in session.store.leftovers()]
    if fix and found:
        session.store.mend()
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _caches(session: Session, fix: bool) -> list[Finding]:
    """Downloads and compression files that dead pulls and pushes left in the caches."""
    cache = session.settings.paths.cache
    registry = cache / "registry"
    found = []
    if not any(not free(lock) for lock in (registry / "locks").glob("*.lock")):  # no pull is running
        for f in sorted((registry / "partial").glob("*")):
            if f.suffix in (".partial", ".verified") and free(f.with_suffix(".lock")):
                found.append(Finding("cache-leftover", str(f), "an interrupted download", True, fix))
    for f in sorted((registry / "tmp").glob("*")):
        m = re.search(r"\.(\d+)\.[0-9a-f]+\.(?:zst|disk)$", f.name)
        if m is None or not _pid_alive(int(m.group(1))):
            found.append(Finding("cache-leftover", str(f), "a file of an interrupted push or pull", True, fix))
    for f in sorted((cache / "catalog").glob("*.partial")):
        if free(f.with_suffix(".lock")):
            found.append(Finding("cache-leftover", str(f), "an interrupted cloud image download", True, fix))
    if fix:
        for f in found:
            Path(f.subject).unlink(missing_ok=True)
    return found


def _warm_leftovers(session: Session, fix: bool) -> list[Finding]:
    """Files of warm starts that a killed process did not remove (vmctl.core.warm)."""
    found = []
    for entry in _dirs(session):
        if entry.name.startswith(".") or not (entry / RESTORE_FILE).exists() and not (entry / WARM_KEYS).exists():
            continue
        with quiet_lock(session, entry.name) as locked:
            if not locked:
                continue   # a start of that VM is running right now
            try:
                pending = InstanceRecord.load(entry).warm.get("pending")
            except VmctlError:
                continue
            leftovers = [entry / RESTORE_FILE] + ([] if pending else [entry / WARM_KEYS])
            for path in leftovers:
                if path.exists():
                    if fix:
                        path.unlink(missing_ok=True)
                    found.append(Finding("warm-leftover", str(path), "left by a warm start that was killed", True, fix))
    return found


def mend(session: Session, names: set[str]) -> list[Finding]:
    """Finish what killed creates and removes of VMs `names` left (``vmctl up`` resumes with it)."""
    return _unfinished(session, True, names) + _creating_domains(session, True, names)


def diagnose(session: Session, *, fix: bool = False) -> list[Finding]:
    """Everything found (and mended when `fix`), in a stable order; with `fix`, each check runs
    after the previous ones' mends (so a hold released with its half-made VM is not listed twice).
    This machine's store only: a vmctl host's are `host_doctor.diagnose`."""
    return [*stale_locks(session, fix), *_staging(session, fix), *_unfinished(session, fix), *_creating_domains(session, fix),
            *snapshot_findings(session, fix), *_stale_holds(session, fix), *_orphan_records(session), *_store(session, fix),
            *_caches(session, fix), *_warm_leftovers(session, fix)]
