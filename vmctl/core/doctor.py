"""Find, and with ``--fix`` mend, what a killed vmctl process can leave behind.

Every multi-step change is a transaction that undoes itself on failure, but SIGKILL or a power
cut stops the undo too. What can remain, and how each is recognised safely:
- a staging directory ``instances/.creating-NAME-*``: stale when NAME's lock can be taken (a live
  create holds it for its whole duration);
- a libvirt domain whose vmctl metadata still says ``creating`` and that has no instance
  directory: the define step ran, the rename/record did not finish;
- an image hold ``instance:NAME`` or ``snapshot:NAME/SNAP`` for a VM that no longer exists (it
  keeps the image from being removed);
- a VM record whose libvirt domain is gone (reported only: its disk may hold data).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from vmctl.core.namelock import name_lock
from vmctl.core.records import list_records
from vmctl.errors import ConflictError, VmctlError


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str
    fixable: bool
    fixed: bool = False


def _staging(app, fix: bool) -> list[Finding]:
    found = []
    instances = app.settings.paths.instances
    if not instances.is_dir():
        return found
    for entry in sorted(instances.iterdir()):
        if not entry.name.startswith(".creating-"):
            continue
        name = entry.name[len(".creating-"):].rsplit("-", 1)[0]
        try:
            with name_lock(app.settings.paths.locks, name):
                fixed = False
                if fix:
                    shutil.rmtree(entry, ignore_errors=True)
                    fixed = True
                found.append(Finding("staging-dir", str(entry), f"half-made files of a create of {name}", True, fixed))
        except ConflictError:
            continue  # a create of that name is running right now
        except VmctlError:
            continue
    return found


def _creating_domains(app, fix: bool) -> list[Finding]:
    from vmctl.xml.domain import Domain

    found = []
    known = {r.name for r in list_records(app.settings.paths.instances)}
    for name in sorted(app.backend.list_states()):
        if name in known:
            continue
        try:
            state = Domain.from_xml(app.backend.xml(name, inactive=True)).metadata.state
        except VmctlError:
            continue
        if state != "creating":
            continue
        try:
            with name_lock(app.settings.paths.locks, name):
                fixed = False
                if fix:
                    if app.backend.state(name).state != "stopped":
                        app.backend.destroy(name)
                    app.backend.undefine(name)
                    fixed = True
                found.append(Finding("creating-domain", name, "defined by a create that never finished", True, fixed))
        except ConflictError:
            continue
    return found


def _stale_holds(app, fix: bool) -> list[Finding]:
    found = []
    known = {r.name for r in list_records(app.settings.paths.instances)}
    for image_id, holders in app.store.all_holds().items():
        for holder in holders:
            kind, _, subject = holder.partition(":")
            # instance:NAME and snapshot:NAME/SNAP both die with VM NAME
            if kind not in ("instance", "snapshot") or subject.split("/", 1)[0] in known:
                continue
            fixed = False
            if fix:
                app.store.release(image_id, holder)
                fixed = True
            found.append(Finding("stale-hold", holder, f"keeps image {image_id[7:19]} in use but the VM is gone", True, fixed))
    return found


def _orphan_records(app) -> list[Finding]:
    states = app.backend.list_states()
    return [
        Finding("missing-domain", r.name, "vmctl has its files but libvirt has no such domain (rm it to clean up)", False)
        for r in list_records(app.settings.paths.instances) if r.name not in states
    ]


def diagnose(app, *, fix: bool = False) -> list[Finding]:
    """Everything found (and mended when `fix`), in a stable order."""
    return [*_staging(app, fix), *_creating_domains(app, fix), *_stale_holds(app, fix), *_orphan_records(app)]
