"""``vmctl ps`` in a stack's directory: the stack's VMs, by their short names, from one bulk
libvirt query."""

from __future__ import annotations

from vmctl.core.listing import listing
from vmctl.core.session import Session
from vmctl.stack.spec import StackSpec
from vmctl.stack.state import StackState


def rows(session: Session, spec: StackSpec) -> list[dict]:
    """One row per VM of the file (state ``missing`` when it is not made), plus the stack's VMs the
    file no longer names; each with its addresses on the stack's networks."""
    st = StackState.load(session.stacks, spec.name)
    by_name = {r["name"]: r for r in listing(session, show_all=True)}
    out = []
    shorts = list(spec.vms) + sorted(set(st.vms if st else ()) - set(spec.vms))
    for short in shorts:
        name = spec.vm_name(short)
        row = by_name.get(name)
        addresses = dict(st.vms[short].addresses) if st and short in st.vms else {}
        out.append({
            "vm": short, "name": name,
            "state": row["state"] if row else "missing",
            "image": row["image"] if row else (spec.vms[short].image if short in spec.vms else None),
            "ports": row["ports_text"] if row else [],
            "addresses": addresses,
            "health": st.vms[short].health if st and short in st.vms and spec.vms.get(short)
            and spec.vms[short].healthcheck else None,
            "in_file": short in spec.vms,
        })
    return out
