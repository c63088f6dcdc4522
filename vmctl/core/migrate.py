"""``vmctl migrate NAME --to HOST [--live]`` and ``vmctl host drain HOST``: a VM of one vmctl host
moved to another with libvirt's migration, its files, record and pinned keys along.

The order makes a failure harmless (the VM goes on where it was):
1. the destination is checked: it answers, has no domain of that name, has the memory (running VMs);
2. what the VM stands on is brought there: layers and kernel/initrd the destination lacks, copied
   from the source host through this process and checked against their digests; its seed; an
   empty overlay on the same top layer (libvirt's NBD copy fills it) -- unless both hosts see
   the same storage, which vmctl detects with a probe volume;
3. libvirt migrates the domain (live, or paused while its memory moves; offline for a stopped VM,
   whose overlay vmctl copies itself), with the XML retargeted to the destination's data root
   and address and the record (host, address, forwards) rewritten inside it;
4. only then are the VM's files removed from the source.
If 2 or 3 fails, what was made on the destination is removed and the error says so.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

from vmctl import faults
from vmctl.backend import pools
from vmctl.backend import snapshots as bsnap
from vmctl.backend.fleet import migratable_xml, migrate as libvirt_migrate
from vmctl.core.placement import capacity, place, require_memory, table
from vmctl.core.hostplace import HostPlace
from vmctl.core.namelock import name_lock
from vmctl.core.plan.edits import boot_files, copied_disks, retarget
from vmctl.core.session import Session
from vmctl.core.shared_storage import shares
from vmctl.core.states import guard
from vmctl.errors import ConflictError, UsageError, VmctlError

MAX_SEED = 64 << 20


@dataclass(frozen=True)
class Moved:
    name: str
    source: str
    destination: str
    live: bool
    state: str
    shared_storage: bool
    layers_sent: int
    seconds: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _bring(src: HostPlace, dst: HostPlace, rec, xml: str, say) -> int:
    """Copy to `dst` the layers and kernel/initrd blobs of the VM that it lacks; return how many."""
    have = pools.volumes(dst.backend, dst.layers_pool)
    there = pools.volumes(src.backend, src.layers_pool)
    wanted = [(f"{d.split(':', 1)[-1]}.qcow2", d) for d in rec.layers]
    for path in boot_files(xml):   # kernel and initrd: <hex>.blob in the layers pool
        vol = posixpath.basename(path)
        if posixpath.dirname(path) == src.layers_dir and vol.endswith(".blob"):
            wanted.append((vol, f"sha256:{vol[:-len('.blob')]}"))
    sent = 0
    for n, (vol, digest) in enumerate(wanted):
        if vol in have and vol in there and have[vol].physical == there[vol].physical:
            continue
        if vol not in there:
            raise ConflictError(f"{src.host.name} lacks {vol}, which {rec.name} stands on")
        if vol in have:
            pools.delete(dst.backend, dst.layers_pool, vol)   # cut short by an earlier copy
        say(f"{rec.name}: copying {vol[:19]} to {dst.host.name} ({n + 1}/{len(wanted)})", None)
        pools.copy_between(src.backend, src.layers_pool, dst.backend, dst.layers_pool, vol,
                           there[vol].physical, digest=digest, mode=0o440, owner=(0, dst.qemu_owner[1]))
        sent += 1
    return sent


def migrate(session: Session, name: str, to: str, *, live: bool = False) -> Moved:
    """Move VM `name` from `session`'s host to host `to` (see the module doc)."""
    import time  # lazy: only to time the move

    if session.host is None:
        raise UsageError("only VMs on a vmctl host migrate (vmctl --host HOST migrate ...); this machine's "
                         "store is not a host")
    dst_host = table().get(to)
    if dst_host.name == session.host.name:
        raise UsageError(f"{name} is on {to} already")
    t0 = time.monotonic()
    say = session.progress
    dst = session.for_host(dst_host)
    try:
        # the name is locked on the destination too: its doctor must not take the files staged
        # there (a long offline copy) for a killed create's leftovers
        with guard(session, name, "migrate") as g, name_lock(dst.locks, name):
            inst, state = g.instance, g.state
            rec = inst.record
            running = state in ("running", "paused")
            if dst.backend.exists(name):
                raise ConflictError(f"{to} has a domain named {name} already")
            snaps = [m.name for m in bsnap.list_snapshots(session.backend, name)]
            if snaps:
                # libvirt refuses a live move of a domain with snapshots, and an offline one would
                # leave their metadata behind (the data is inside the overlay): said here, first
                raise ConflictError(
                    f"{name} has {len(snaps)} snapshot(s) ({', '.join(snaps[:5])}), which libvirt does not "
                    f"migrate: remove them (vmctl --host {session.host.name} snapshot rm {name} SNAP), or "
                    f"keep one as an image first (vmctl --host {session.host.name} commit {name} IMAGE "
                    "--snapshot SNAP)")
            if running:
                require_memory(capacity(dst), rec.memory_mib, f"migrate {name} to {to}")
            src_place, dst_place = HostPlace(session), HostPlace(dst)
            dst_place.ensure()
            shared = shares(src_place, dst_place)
            xml = migratable_xml(session.backend, name, inactive=not running)
            persist = migratable_xml(session.backend, name, inactive=True)
            new_rec = replace(rec, host=dst_host.name, uri=dst_host.uri, ssh_host=dst_host.address,
                              ports=[{**p, "host": dst_host.address} for p in rec.ports])
            roots = ((src_place.instances_dir, dst_place.instances_dir), (src_place.layers_dir, dst_place.layers_dir))

            def fit(text: str) -> str:
                return retarget(text, roots=roots, old_address=session.host.address,
                                new_address=dst_host.address, record_json=new_rec.to_json())

            sent = 0
            try:
                if not shared:
                    sent = _bring(src_place, dst_place, rec, xml, say)
                    _stage_instance(src_place, dst_place, name, copy_disk=not running, say=say)
                    faults.point("migrate.after-stage")
                say(f"{name}: migrating to {to}{' (live)' if live and running else ''}", None)
                libvirt_migrate(session.backend, dst.backend, name, dest_xml=fit(xml), persist_xml=fit(persist),
                                uri=f"tcp://{dst_host.address}", live=live,
                                copy_disks=() if shared or not running else copied_disks(xml, src_place.instances_dir),
                                offline=not running)
            except BaseException as exc:
                if not shared:   # what was made there for it, the serial log a started QEMU opened too
                    try:
                        dst_place.remove_files(name)
                    except VmctlError:
                        pass
                if isinstance(exc, VmctlError):
                    raise type(exc)(f"cannot migrate {name} to {to}: {exc.message}; it stays on "
                                    f"{session.host.name}") from exc
                raise
            if not shared:
                src_place.remove_files(name)
        return Moved(name, session.host.name, to, live and running, state, shared, sent,
                     round(time.monotonic() - t0, 2))
    finally:
        dst.close()


def _stage_instance(src: HostPlace, dst: HostPlace, name: str, *, copy_disk: bool, say) -> None:
    """The VM's seed (and, for a stopped VM, its overlay: its backing name is relative, so the
    bytes fit the other data root) copied to `dst`; a running VM gets an empty overlay on the same
    top layer, for libvirt's NBD copy."""
    vols = pools.volumes(src.backend, src.instances_pool)
    disk, seed = posixpath.basename(src.disk(name)), posixpath.basename(src.seed(name))
    if copy_disk:
        say(f"{name}: copying its disk to {dst.host.name}", None)
        pools.copy_between(src.backend, src.instances_pool, dst.backend, dst.instances_pool, disk,
                           vols[disk].physical, mode=0o600, owner=dst.qemu_owner)
    else:
        rec = src.record(name)
        pools.create_overlay(dst.backend, dst.instances_pool, disk, dst.overlay_backing(rec.layers[-1]),
                             vols[disk].capacity, owner=dst.qemu_owner)
    if seed in vols:   # after the disk: the small file last, its age that of the move's end
        pools.copy_between(src.backend, src.instances_pool, dst.backend, dst.instances_pool, seed,
                           min(vols[seed].physical, MAX_SEED), mode=0o400, owner=dst.qemu_owner)


def drain(session: Session, host: str, *, to: str | None = None, live: bool = True, on_moved=None) -> list[Moved]:
    """Migrate every vmctl VM off host `host`: to `to`, or each where placement puts it. Stops at
    the first VM that cannot move (the ones moved stay moved; the error names the VM)."""
    src = session.for_host(table().get(host))
    moved = []
    try:
        for inst_rec in HostPlace(src).records():
            target = to
            if target is None:
                target = place(src, memory_mib=inst_rec.memory_mib, layers=tuple(inst_rec.layers),
                               exclude=(host,)).host.name
            try:
                m = migrate(src, inst_rec.name, target, live=live)
            except VmctlError as exc:
                raise type(exc)(f"drain of {host} stopped at {inst_rec.name}: {exc.message}") from exc
            moved.append(m)
            if on_moved:
                on_moved(m)
    finally:
        src.close()
    return moved
