"""Host commands: ``vmctl host add/ls/rm/use/prune/drain`` and ``vmctl migrate``."""

from __future__ import annotations

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.output import emit_json, table
from vmctl.errors import UsageError

MODES = ("hosted", "system")       # vmctl.hosts.HOST_MODES (kept here so --help imports no core)
ACCELERATORS = ("auto", "kvm", "tcg")


@click.group(name="host")
def host_group():
    """Manage the libvirt hosts vmctl works on (vmctl --host NAME ...), and move VMs between them.

    A host is a libvirt daemon (qemu+ssh://, qemu+tls://, qemu+tcp://) and a data root on its
    machine; vmctl reaches it through libvirt alone: image layers go there as storage volumes,
    each VM's record lives in its domain."""


@host_group.command(name="add")
@click.argument("name")
@click.argument("uri")
@click.option("--root", metavar="DIR", help="vmctl's data root on the host (default /var/lib/vmctl).")
@click.option("--mode", type=click.Choice(MODES), help="hosted: user-mode networking, ports on the host's address (default); system: libvirt networks.")
@click.option("--address", metavar="IPV4", help="The host's address as this machine reaches it (default: the URI's host): forwarded ports listen there, migrations arrive there.")
@click.option("--memory", metavar="SIZE", help="Most memory vmctl gives VMs on this host (default: all of it).")
@click.option("--accelerator", type=click.Choice(ACCELERATORS), help="auto: KVM where the host's libvirt offers it; tcg for a host whose KVM does not run guests.")
@click.option("--jump", metavar="[USER@]HOST[:PORT]|none", help="Reach the host's guests through this SSH server of the host, as ssh -J (its key must be in ~/.ssh/known_hosts); default: a qemu+ssh:// URI's own, else none (guests reached directly).")
@click.option("--default", "make_default", is_flag=True, help="Make it the default host (as 'vmctl host use').")
@click.option("--replace", is_flag=True, help="Replace a host of that name.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def host_add(app: App, name, uri, root, mode, address, memory, accelerator, jump, make_default, replace, as_json):
    """Add host NAME at libvirt URI: checked to answer, its data root prepared (two storage pools)."""
    from vmctl.core import fleet
    from vmctl.hosts import make_host
    from vmctl.units import mib, parse_size

    memory_mib = mib(parse_size(memory, "memory", default_unit="m")) if memory else None
    host = make_host(name, uri, root=root, mode=mode, address=address, memory_mib=memory_mib,
                     accelerator=accelerator, jump=jump)
    row = fleet.add(app.session, host, make_default=make_default, replace=replace)
    if as_json or app.json:
        emit_json(row)
    else:
        click.echo(name)


@host_group.command(name="ls")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True, help="Names only.")
@pass_app
def host_ls(app: App, as_json, quiet):
    """List hosts with what their libvirt says now: VMs, memory free for VMs, layers held."""
    from vmctl.core import fleet

    rows = fleet.rows(app.session)
    if as_json or app.json:
        emit_json(rows)
        return
    if quiet:
        for r in rows:
            click.echo(r["name"])
        return
    table([(r["name"] + (" *" if r["default"] else ""), r["uri"], r["root"],
            f"{r['running']}/{r['vms']}" if r["reachable"] else "-",
            f"{r['free_mib']}/{r['memory_mib']} MiB" if r["reachable"] else "-",
            r.get("layers", "-") if r["reachable"] else "-",
            "ok" if r["reachable"] else f"unreachable: {r['error'][:60]}") for r in rows],
          ["NAME", "URI", "ROOT", "RUNNING/VMS", "FREE/MEMORY", "LAYERS", "STATUS"])


@host_group.command(name="rm")
@click.argument("name")
@click.option("--force", "-f", is_flag=True, help="Forget it even while vmctl VMs live there (they are left alone).")
@pass_app
def host_rm(app: App, name, force):
    """Forget host NAME (nothing on the host changes); refused while vmctl VMs live there."""
    from vmctl.core import fleet

    fleet.remove(app.session, name, force=force)
    click.echo(name)


@host_group.command(name="use")
@click.argument("name")
@pass_app
def host_use(app: App, name):
    """Make NAME the default host of VM commands ('local': this machine's own store)."""
    from vmctl.core import fleet

    fleet.use(name)
    click.echo(name)


@host_group.command(name="prune")
@click.argument("name")
@pass_app
def host_prune(app: App, name):
    """Remove the image layers on host NAME that no vmctl VM there uses."""
    from vmctl.core import fleet
    from vmctl.core.placement import table as host_table

    on = app.session.for_host(host_table().get(name))
    try:
        for vol in fleet.prune(on):
            click.echo(vol)
    finally:
        on.close()


@host_group.command(name="drain")
@click.argument("name")
@click.option("--to", metavar="HOST", help="Move every VM there (default: placement chooses for each).")
@click.option("--no-live", is_flag=True, help="Pause each VM while its memory moves (default: live).")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def host_drain(app: App, name, to, no_live, as_json):
    """Migrate every vmctl VM off host NAME (live, storage copied)."""
    from vmctl.core import migrate

    moved = migrate.drain(app.session, name, to=to, live=not no_live,
                          on_moved=None if as_json or app.json else
                          lambda m: click.echo(f"{m.name}: {m.source} -> {m.destination} ({m.seconds} s)"))
    if as_json or app.json:
        emit_json([m.to_json() for m in moved])


@click.command(name="migrate")
@click.argument("name")
@click.option("--to", "to", required=True, metavar="HOST", help="The host to move it to.")
@click.option("--live", is_flag=True, help="Keep it running while its memory and disk move (default: paused meanwhile).")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def migrate_cmd(app: App, name, to, live, as_json):
    """Move VM NAME to another host with libvirt's migration (--live: it keeps running).

    Its disk's own layer is copied (the image layers the target lacks go first), its record and
    pinned keys go along; if anything fails it stays where it was."""
    from vmctl.core import migrate

    if app.session.host is None:
        raise UsageError("migrate moves a VM of a host: name it with --host (vmctl --host SRC migrate NAME --to DST)")
    moved = migrate.migrate(app.session, name, to, live=live)
    if as_json or app.json:
        emit_json(moved.to_json())
    else:
        click.echo(f"{moved.name}: {moved.source} -> {moved.destination} ({moved.seconds} s)")


def register(group: click.Group) -> None:
    group.add_command(host_group)
    group.add_command(migrate_cmd)
