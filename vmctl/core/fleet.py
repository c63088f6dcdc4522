"""Several libvirt hosts: ``vmctl host add/ls/rm/use/prune``, placement (``run --host auto``) and
``ls --all-hosts``.

The host table is the user's (`vmctl.hosts`); each host's own state is read from its libvirt
every time (node facts, its domains' records, the layers in its pool): vmctl keeps no cache of a
host that could go stale.
"""

from __future__ import annotations


from vmctl.backend import pools
from vmctl.backend.fleet import node_facts
from vmctl.core.hostplace import HostPlace
from vmctl.core.placement import capacity, table
from vmctl.core.records import list_records
from vmctl.core.session import Session
from vmctl.core.shared_storage import neighbours
from vmctl.errors import ConflictError, InUseError, LibvirtUnreachable, UsageError, VmctlError
from vmctl.hosts import Host


def add(session: Session, host: Host, *, make_default: bool = False, replace: bool = False) -> dict:
    """Check that `host` answers, prepare its data root (two storage pools) and remember it.
    Nothing is recorded when the host cannot be reached or prepared."""
    t = table()
    if host.name in t.hosts and not replace:
        raise UsageError(f"host {host.name} exists already (vmctl host rm {host.name}, or add it with --replace)")
    on = session.for_host(host)
    try:
        versions = on.backend.versions()
        HostPlace(on).ensure()
        facts = node_facts(on.backend)
    finally:
        on.close()
    t.hosts[host.name] = host
    if make_default:
        t.default = host.name
    t.write()
    return {**host.to_json(), "libvirt": versions["libvirt_daemon"], "cpus": facts.cpus,
            "memory_mib": host.memory_mib or facts.memory_bytes >> 20, "default": t.default == host.name}


def remove(session: Session, name: str, *, force: bool = False) -> None:
    """Forget host `name` (nothing on the host changes). Refused while vmctl VMs live there,
    unless `force` (or the host cannot be reached: then `force` is needed too)."""
    t = table()
    host = t.get(name)
    if not force:
        on = session.for_host(host)
        try:
            names = [r.name for r in HostPlace(on).records()]
        except LibvirtUnreachable as exc:
            raise LibvirtUnreachable(f"{exc.message}; 'vmctl host rm --force {name}' forgets it anyway") from None
        finally:
            on.close()
        if names:
            raise InUseError(f"host {name} still runs vmctl VMs: {', '.join(names)} (migrate or remove them, "
                             f"or forget the host with --force)")
    del t.hosts[name]
    if t.default == name:
        t.default = None
    t.write()


def use(name: str | None) -> None:
    """Make `name` the default host (None or "local": this machine's store)."""
    t = table()
    if name in (None, "local"):
        t.default = None
    else:
        t.get(name)
        t.default = name
    t.write()


def rows(session: Session) -> list[dict]:
    """``host ls``: every host with what its libvirt says now (unreachable ones say why)."""
    t = table()
    out = []
    for name, host in sorted(t.hosts.items()):
        row = {**host.to_json(), "default": t.default == name, "reachable": True, "error": None}
        on = session.for_host(host)
        try:
            cap = capacity(on)
            row.update(cap.to_json())
            row["layers"] = len([v for v in pools.volumes(on.backend, HostPlace(on).layers_pool)
                                 if v.endswith(".qcow2")])
        except VmctlError as exc:
            row.update(reachable=False, error=exc.message)
        finally:
            on.close()
        out.append(row)
    return out


def prune(session: Session) -> list[str]:
    """Remove the layers and kernels on `session`'s host that no vmctl VM stands on: none of its
    own, none of the hosts that share its storage (`shared_storage.neighbours`; refused while a
    host with the same data root does not answer, since its VMs may stand on them)."""
    place_ = HostPlace(session)
    near = neighbours(session)
    if near.unreachable:
        raise ConflictError(f"{', '.join(near.unreachable)} ha{'s' if len(near.unreachable) == 1 else 've'} the "
                            f"same data root as {session.host.name} and do{'es' if len(near.unreachable) == 1 else ''} "
                            "not answer: its VMs may stand on these layers; nothing was removed")
    used = set()
    for rec in [*place_.records(), *near.records]:
        used |= {f"{d.split(':', 1)[-1]}.qcow2" for d in rec.layers}
    # kernels and initrds are named in the domains' XML; keep every blob a domain names
    from vmctl.backend.fleet import domain_xmls  # lazy: one more bulk read, only for prune

    names = " ".join(xml for xml, _a in domain_xmls(session.backend).values()) + near.xml_text
    removed = []
    for vol in pools.volumes(session.backend, place_.layers_pool):
        if vol in used or (vol.endswith(".blob") and vol in names):
            continue
        pools.delete(session.backend, place_.layers_pool, vol)
        removed.append(vol)
    return removed


def listing_all(session: Session, listing, *, show_all: bool) -> tuple[list[dict], list[str]]:
    """``ls --all-hosts``: this machine's VMs and every host's, with a `host` column ("local" for
    this machine's); hosts that do not answer are named in the second list, not fatal."""
    rows_, errors = [], []
    local = session.for_host(None)
    if list_records(session.paths.instances):
        for row in listing(local, show_all=show_all):
            rows_.append({**row, "host": "local"})
    for name, host in sorted(table().hosts.items()):
        on = session.for_host(host)
        try:
            # two names for one daemon and root (as a host added twice) show its VMs once: under
            # the host each VM's record names
            rows_.extend({**row, "host": name} for row in listing(on, show_all=show_all)
                         if row.get("host") in (None, name))
        except VmctlError as exc:
            errors.append(f"{name}: {exc.message}")
        finally:
            on.close()
    return rows_, errors
