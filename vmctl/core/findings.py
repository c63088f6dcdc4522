"""What ``doctor`` finds, and how it looks without disturbing a live vmctl process: shared by the
check of this machine's store (`vmctl.core.doctor`) and of a vmctl host's (`vmctl.core.host_doctor`).

A finding is one leftover of a killed process; `quiet_lock` takes a VM's name lock only when no
live process holds it (doctor leaves that VM alone otherwise); `snapshot_findings` and
`stale_locks` are the checks both doctors run.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vmctl.backend import snapshots as bsnap
from vmctl.core import snapshot_records as records
from vmctl.core.instance import all_instances
from vmctl.core.session import Session
from vmctl.fsutil import lock_file, private_dirs


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str
    fixable: bool
    fixed: bool = False


@contextmanager
def quiet_lock(session: Session, name: str) -> Iterator[bool]:
    """VM `name`'s lock for doctor's own look: yields True while held, False when a live vmctl
    process holds it (doctor then leaves that VM alone).

    Unlike `name_lock` it leaves a stale lock file where it was (without --fix doctor changes
    nothing: `stale_locks` reports the file) and removes only a file it created itself; like
    `fsutil.lock_file` it checks, once locked, that the name still is the file it locked."""
    path = session.locks / f"vm-{name}.lock"   # name_lock's file (per host for a host's VMs)
    private_dirs(path.parent)
    while True:
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # a holder removed the file as it released it: lock the name afresh
    try:
        yield True
    finally:
        try:
            if created:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def snapshot_findings(session: Session, fix: bool) -> list[Finding]:
    """Half-made snapshots of each VM, and records or holds of snapshots that are gone."""
    found = []
    # a host's VMs have their layers there: this store holds nothing for them (and a local VM of
    # the same name has holds of its own, never theirs)
    on_host = session.host is not None
    holds = {} if on_host else session.store.all_holds()
    for inst in all_instances(session):
        if not session.backend.exists(inst.name):
            continue
        with quiet_lock(session, inst.name) as locked:
            if not locked:
                continue
            side = records.load_sidecar(inst)
            metas = {m.name for m in bsnap.list_snapshots(session.backend, inst.name)}
            table = records.table(inst)
            half = sorted({n for n, e in side.items() if e.get("pending")}
                          | {n for n in table if n.startswith(records.TEMP_PREFIX)})
            held = {h.split("/", 1)[1] for hs in holds.values() for h in hs
                    if h.startswith(f"snapshot:{inst.name}/")}
            stale = sorted(({n for n, e in side.items() if not e.get("pending")} | held)
                           - metas - set(half))
            for snap in half:
                if fix:
                    if snap in metas:
                        bsnap.delete(session.backend, inst.name, snap)
                    records.sweep_orphans(inst, inst.state())
                    records.sidecar_set(inst, snap, None)
                    if not on_host:
                        session.store.release(inst.record.image_id, records.holder(inst.name, snap))
                found.append(Finding("half-made-snapshot", f"{inst.name}/{snap}",
                                     "a snapshot create was interrupted", True, fix))
            for snap in stale:
                if fix:
                    records.sidecar_set(inst, snap, None)
                    if not on_host:
                        session.store.release(inst.record.image_id, records.holder(inst.name, snap))
                found.append(Finding("stale-snapshot", f"{inst.name}/{snap}",
                                     "vmctl's record or hold of a snapshot that is gone", True, fix))
    return found


def free(lock: Path) -> bool:
    """Whether nobody holds the flock on `lock` (a missing file is free)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def stale_locks(session: Session, fix: bool, candidates: list[Path] | None = None) -> list[Finding]:
    """Lock files whose holder was killed (a live lock is never touched): this store's, or `candidates`."""
    paths = session.settings.paths
    if candidates is None:
        candidates = [*paths.locks.glob("*.lock"), *(paths.cache / "registry" / "locks").glob("*.lock"),
                      *(paths.cache / "registry" / "partial").glob("*.lock"), *(paths.cache / "catalog").glob("*.lock")]
    found = []
    for lock in sorted(candidates):
        if not free(lock):
            continue
        if fix:
            try:
                with lock_file(lock, wait=False):
                    pass  # taken and removed: nobody was holding it
            except BlockingIOError:
                continue
        found.append(Finding("stale-lock", str(lock), "left by a vmctl process that was killed", True, fix))
    return found
