"""``vmctl down``: the stack's VMs (found by the stack label in their records, whether or not the
file still names them), its libvirt networks and its state removed; images are kept."""

from __future__ import annotations

from dataclasses import dataclass, field

from vmctl.backend import networks as libvirt_networks
from vmctl.core import remove
from vmctl.core.namelock import name_lock
from vmctl.core.session import Session
from vmctl.errors import NotFoundError
from vmctl.stack import state as stack_state
from vmctl.stack.up import mend, stack_vm_names


@dataclass
class DownReport:
    vms: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"vms_removed": self.vms, "networks_removed": self.networks}


def down(session: Session, stack: str) -> DownReport:
    """Remove stack `stack`'s VMs (powered off first), networks and state."""
    report = DownReport()
    with name_lock(session.locks, stack, what="stack"):
        st = stack_state.StackState.load(session.stacks, stack)
        # only what carries the stack's label is the stack's (a VM of the same name made otherwise
        # is left alone); a domain a killed create left without its directory is mended too (on a
        # host: a domain still "creating", which mend undoes)
        names = set(stack_vm_names(session, stack))
        listed = {f"{stack}-{short}" for short in st.vms} if st is not None else set()
        if session.host is None:
            names |= {n for n in listed if not (session.paths.instances / n).exists()}
            mend(session, names)   # half-made ones first: a killed up's leftovers
        else:   # a host's half-made ones are domains still "creating": mend undoes just those
            mend(session, names | listed)
        for name in sorted(names):
            try:
                remove.remove(session, name, force=True)
            except NotFoundError:
                continue
            session.progress(f"{name}: removed", None)
            report.vms.append(name)
        if st is not None:
            for net in st.networks.values():
                if net.libvirt and libvirt_networks.exists(session.backend, net.libvirt):
                    libvirt_networks.remove(session.backend, net.libvirt)
                    report.networks.append(net.libvirt)
            stack_state.remove(session.stacks, stack)
    return report
