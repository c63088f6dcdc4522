"""``vmctl rm``: a VM and everything of it — domain (with its snapshots' metadata), disk, seed,
record, pinned host key, image holds. Nothing is left; a running VM needs ``--force``."""

from __future__ import annotations

from vmctl.core.session import Session
from vmctl.core.states import guard
from vmctl.core.teardown import finish_remove


def remove(session: Session, name: str, *, force: bool = False) -> None:
    with guard(session, name, "remove-force" if force else "remove") as g:
        finish_remove(g.instance)
