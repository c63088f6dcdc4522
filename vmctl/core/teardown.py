"""Taking a VM apart: what ``vmctl rm`` does, and what ``doctor --fix`` finishes after a killed rm
or undoes after a killed create. Below the operations, so both can use it."""

from __future__ import annotations

import shutil

from vmctl import faults
from vmctl.core import snapshot_records
from vmctl.core.instance import MISSING, Instance
from vmctl.core.records import REMOVING_MARK
from vmctl.core.states import OFF
from vmctl.errors import ConflictError
from vmctl.hostmount import release_under


def finish_remove(inst: Instance) -> None:
    """Remove VM `inst` whatever state it is in (the handle's, read once); the caller holds its
    name lock.

    Order matters: the marker first (a killed rm leaves a directory that says it is being
    removed), then the domain (so no QEMU holds the files), the image holds, and the directory
    last (so an interrupted remove can be repeated)."""
    backend = inst.session.backend
    if inst.on_host:
        _remove_on_host(inst)
        return
    (inst.directory / REMOVING_MARK).touch(mode=0o600)
    faults.point("rm.after-mark")
    state = inst.state()
    if state != MISSING:
        if state not in OFF:  # anything that may still have a QEMU (unknown included) is powered off
            try:
                backend.destroy(inst.name)
            except ConflictError:
                pass  # it was not running after all
        backend.undefine(inst.name)
    faults.point("rm.after-undefine")
    snapshot_records.forget_all(inst)
    if inst.record is not None:
        inst.session.store.release(inst.record.image_id, f"instance:{inst.name}")
    release_under(inst.directory)   # a volume's bind mount: never deleted through
    shutil.rmtree(inst.directory)


def _remove_on_host(inst: Instance) -> None:
    """rm of a VM on a vmctl host: power off, undefine (its record goes with the domain), then its
    overlay, seed and serial log on the host. The host's layers stay, as a cache for the next VM
    (``vmctl host prune`` removes those no VM uses)."""
    backend = inst.session.backend
    state = inst.state()
    if state != MISSING:
        if state not in OFF:
            try:
                backend.destroy(inst.name)
            except ConflictError:
                pass
        backend.undefine(inst.name)
    inst.place.remove_files(inst.name)
