"""``vmctl up``: make what is missing, start what is stopped, in dependency order; resumable.

Each VM of the file is found by its name (``<stack>-<vm>``) and carries, in its record, the digest
of the definition it was made from (`spec.definition_hash`): equal means nothing to do (start it if
it is stopped), different means the file changed it: reported, and replaced with ``recreate``. A
VM is made by `vmctl.core.create.run` (one transaction: nothing half-made), then waited for as
far as its dependants ask (``started``, ``ready``: SSH lets vmctl in, ``healthy``: the
healthcheck passes). The stack's allocations are saved before anything is made and the whole
``up`` holds the stack's lock, so an ``up`` killed at any point leaves what it made findable, and
the next ``up`` mends a half-made VM (`vmctl.core.doctor.mend`, or on a vmctl host
`vmctl.core.host_doctor.mend`) and goes on. On a host (``vmctl --host H up``) the VMs, their
records and the stack's libvirt networks are the host's; the stack's state and lock are this
machine's, per host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vmctl import faults
from vmctl.backend import networks as libvirt_networks
from vmctl.core import create, doctor, host_doctor, lifecycle, reach, remove
from vmctl.core.hostplace import HostPlace
from vmctl.core.instance import instance_dir, resolve
from vmctl.core.namelock import name_lock
from vmctl.core.records import RECORD, InstanceRecord, list_records
from vmctl.core.session import Session
from vmctl.perms import qemu_user
from vmctl.core.states import LIVE
from vmctl.errors import ConflictError, NotFoundError, Unhealthy, UsageError, VmctlError
from vmctl.seed.netconfig import hosts_command
from vmctl.stack.health import Tail, check_health
from vmctl.stack.networks import (host_xml, hosts_digest, hosts_entries, network_xml, reservations,
                                  reserved_macs, subnets_in_use)
from vmctl.stack.request import create_request
from vmctl.stack.spec import StackSpec, definition_hash
from vmctl.stack.state import StackState, all_states, allocate


@dataclass
class UpReport:
    """What `up` did to each VM: created, recreated, started, unchanged, changed (not replaced)."""
    actions: dict[str, str] = field(default_factory=dict)
    networks_created: list[str] = field(default_factory=list)
    health: dict[str, str] = field(default_factory=dict)
    hosts_updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)   # the stack's VMs the file no longer names, kept

    def to_json(self) -> dict:
        return {"vms": self.actions, "networks_created": self.networks_created, "health": self.health,
                "hosts_updated": self.hosts_updated, "removed": self.removed, "orphans": self.orphans}


def stack_record(session: Session, name: str) -> InstanceRecord | None:
    """The record of VM `name` when it exists (finished), else None."""
    if session.host is not None:   # in its domain on the host (half-made ones were mended first)
        try:
            return HostPlace(session).record(name)
        except NotFoundError:
            return None
    d = instance_dir(session, name)
    return InstanceRecord.load(d) if (d / RECORD).is_file() else None


def mend(session: Session, names: set[str]) -> None:
    """Finish what killed creates of VMs `names` left, here or on the session's host."""
    if session.host is not None:
        host_doctor.mend(session, names)
    else:
        doctor.mend(session, names)


class _Up:
    """One ``up`` of stack `spec` with its allocations `state` (saved as they change)."""

    def __init__(self, session: Session, spec: StackSpec, state: StackState, *, recreate: bool, timeout: float,
                 build: Callable[[str, Path, Path | None, dict], str] | None):
        self.session, self.spec, self.state, self.recreate, self.timeout = session, spec, state, recreate, timeout
        self.build = build
        self.say = lambda text: session.progress(text, None)
        self.report = UpReport()
        self.reached: dict[str, set[str]] = {}
        self.stale_hosts: list[str] = []

    # ---- networks ---------------------------------------------------------------------------
    def networks(self, st: StackState) -> None:
        if st.mode != "system":
            return   # hosted segments are multicast groups QEMU joins: nothing to make
        backend = self.session.backend
        for name, net in st.networks.items():
            if name not in self.spec.networks:
                continue
            hosts = reservations(self.spec, st, name)
            existing = libvirt_networks.xml(backend, net.libvirt)
            if existing is None:
                self.say(f"network {net.libvirt}: creating ({net.subnet})")
                libvirt_networks.define_and_start(backend, net.libvirt, network_xml(self.spec.networks[name], net, hosts))
                self.report.networks_created.append(net.libvirt)
                continue
            have = reserved_macs(existing)
            for mac, address, hostname in hosts:
                if mac not in have:   # a VM the file gained since the network was made
                    libvirt_networks.add_dhcp_host(backend, net.libvirt, host_xml(mac, address, hostname))
            libvirt_networks.start(backend, net.libvirt)

    # ---- images -----------------------------------------------------------------------------
    def image(self, short: str) -> tuple[str, str]:
        """(ref, id) of the image VM `short` is made from (built first when it has ``build:``)."""
        vm = self.spec.vms[short]
        if vm.build is not None:
            if self.build is None:
                raise UsageError(f"vms.{short}.build: this caller of up cannot build images")
            ref = f"{self.spec.vm_name(short)}:latest"
            self.say(f"{short}: building {vm.build.context}")
            self.build(ref, vm.build.context, vm.build.file, dict(vm.build.args))
        else:
            ref = vm.image
        return ref, self.session.store.resolve(ref).id

    # ---- conditions -------------------------------------------------------------------------
    def reach(self, short: str, condition: str) -> None:
        """Block until VM `short` is `condition` (started < ready < healthy, each implying the last)."""
        done = self.reached.setdefault(short, set())
        name = self.spec.vm_name(short)
        if condition in ("ready", "healthy") and "ready" not in done:
            self.say(f"{short}: waiting for SSH")
            reach.wait(self.session, name, self.timeout)
            done.add("ready")
        if condition == "healthy" and "healthy" not in done:
            self.say(f"{short}: waiting until healthy")
            try:
                check_health(self.session, name, self.spec.vms[short].healthcheck, self.say)
            except Unhealthy:
                self._health(short, "unhealthy")
                raise
            done.add("healthy")
            self._health(short, "healthy")

    def _health(self, short: str, verdict: str) -> None:
        """Record `verdict` in the report and in the stack's state (what ``ps`` shows)."""
        self.report.health[short] = verdict
        if short in self.state.vms:
            self.state.vms[short].health = verdict
            self.state.save(self.session.stacks)

    # ---- one VM -----------------------------------------------------------------------------
    def vm(self, st: StackState, short: str) -> None:
        spec, session = self.spec, self.session
        for dep, condition in spec.vms[short].depends_on:
            self.reach(dep, condition)
        name = spec.vm_name(short)
        ref, image_id = self.image(short)
        vs = st.vms[short]
        digest = definition_hash(spec.vms[short], image_id, vs.addresses, {"mode": st.mode, "macs": vs.macs})
        rec = stack_record(session, name)
        if rec is not None and rec.stack.get("name") != spec.name:
            raise ConflictError(f"VM {name} exists and is not stack {spec.name}'s: rename the stack (name:) or remove it")
        if rec is not None and rec.stack.get("definition") != digest:
            if not self.recreate:
                self.report.actions[short] = "changed"
                self.say(f"{short}: the file changes it: 'vmctl up --recreate' replaces it")
                self._ensure_started(short, name, rec, st)
                return
            self.say(f"{short}: replacing it (its definition changed)")
            remove.remove(session, name, force=True)
            faults.point("stack.after-remove")
            rec = None
            action = "recreated"
        else:
            action = "created"
        if rec is None:
            self.say(f"{short}: creating from {ref}")
            request = create_request(spec, st, short, ref, digest, qemu_user(session.settings.uri))
            create.run(session, request, wait=None)
            self.report.actions[short] = action
            faults.point("stack.after-create")
            return
        self._ensure_started(short, name, rec, st)

    def _ensure_started(self, short: str, name: str, rec: InstanceRecord, st: StackState) -> None:
        started = lifecycle.start(self.session, name)
        self.report.actions.setdefault(short, "started" if started else "unchanged")
        if rec.stack.get("hosts") != hosts_digest(hosts_entries(self.spec, st, short)):
            self.stale_hosts.append(short)   # the file gained or lost a peer: pushed once it is ready

    # ---- peers ------------------------------------------------------------------------------
    def push_hosts(self, st: StackState) -> None:
        """Give running VMs whose peers changed their new /etc/hosts (kept in the guest for its
        next boots too; see vmctl.seed.netconfig) and record it."""
        for short in self.stale_hosts:
            name, entries = self.spec.vm_name(short), hosts_entries(self.spec, st, short)
            self.reach(short, "ready")
            sink = Tail()
            code = reach.exec_(self.session, name, hosts_command(name, entries, push=True), stdout=sink,
                               stderr=sink, root=True)
            if code != 0:
                raise VmctlError(f"{name}: could not update /etc/hosts (exit {code}: {sink.text()})")
            with name_lock(self.session.locks, name):
                inst = resolve(self.session, name)
                inst.record.stack = {**inst.record.stack, "hosts": hosts_digest(entries)}
                inst.save_record(live=inst.state() in LIVE)   # on a host: the running domain's too
            self.say(f"{short}: /etc/hosts updated (its peers changed)")
            self.report.hosts_updated.append(short)

    def remove_orphans(self) -> None:
        """Remove the stack's VMs the file no longer names (``--remove-orphans``)."""
        wanted = {self.spec.vm_name(s) for s in self.spec.vms}
        for name in stack_vm_names(self.session, self.spec.name):
            if name not in wanted:
                remove.remove(self.session, name, force=True)
                self.say(f"{name}: removed (no longer in the file)")
                self.report.removed.append(name)


def up(session: Session, spec: StackSpec, *, recreate: bool = False, timeout: float = 600, wait: bool = True,
       build: Callable[[str, Path, Path | None, dict], str] | None = None,
       remove_orphans: bool = False) -> UpReport:
    """Bring the stack of `spec` up (see the module doc); with `wait`, until every VM lets vmctl
    in over SSH and every VM with a healthcheck is healthy, and VMs whose peers changed have the
    new /etc/hosts. `build(ref, context, file, args)` builds an image for ``build:`` VMs; with
    `remove_orphans`, the stack's VMs the file no longer names are removed first."""
    paths, stacks = session.paths, session.stacks
    session.backend.versions()   # libvirt reachable before anything is written
    with name_lock(session.locks, spec.name, what="stack"):
        previous = StackState.load(stacks, spec.name)
        others = [s for s in all_states(stacks) if s.name != spec.name]
        in_use = None
        if session.settings.mode == "system":
            own = {n.libvirt for n in (previous.networks.values() if previous else ())}
            in_use = subnets_in_use(libvirt_networks.definitions(session.backend), own)
        # the salt names the store (and on a host the daemon and root too: two host entries, or two
        # clients, running one stack name there get their own segments)
        salt = str(paths.root.resolve())
        if session.host is not None:
            salt += f"|{session.host.uri}|{session.host.root}"
        st = allocate(spec, session.settings.mode, previous, others, salt=salt, in_use=in_use)
        st.save(stacks)
        mend(session, {spec.vm_name(s) for s in spec.vms})
        job = _Up(session, spec, st, recreate=recreate, timeout=timeout, build=build)
        if remove_orphans:
            job.remove_orphans()
        else:
            wanted = {spec.vm_name(s) for s in spec.vms}
            job.report.orphans = [n for n in stack_vm_names(session, spec.name) if n not in wanted]
        job.networks(st)
        for short in spec.order():
            job.vm(st, short)
        if wait:
            for short in spec.order():
                vm = spec.vms[short]
                job.reach(short, "healthy" if vm.healthcheck else "ready")
            job.push_hosts(st)
        return job.report


def stack_vm_names(session: Session, stack: str) -> list[str]:
    """Every VM of this store (or of the session's host) that stack `stack` made (by the label in
    its record), finished or not."""
    records = (HostPlace(session).records() if session.host is not None
               else list_records(session.paths.instances, include_unfinished=True))
    return [r.name for r in records if r.stack.get("name") == stack]

