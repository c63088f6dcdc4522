"""``vmctl up``, ``down`` and ``ps``: a stack of VMs from ``vmctl.yaml`` (see vmctl.stack).

Inside a stack's directory ``ps`` lists the stack's VMs and ``logs``, ``exec``, ``ssh``, ``ip`` and
``wait`` take their short names (`short_name`); elsewhere ``ps`` is ``ls``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from vmctl.cli.context import App, pass_app
from vmctl.cli.listing_view import show_listing
from vmctl.cli.output import emit_json, table
from vmctl.cli.stackfile import load_spec
from vmctl.errors import NotFoundError

_FILE = click.option("--file", "-f", "file", type=click.Path(dir_okay=False),
                     help="The stack file (default: vmctl.yaml in the current directory).")


def _builder(app: App):
    def build(ref: str, context: Path, file: Path | None, args: dict) -> None:
        from vmctl.userfiles import read_text
        from vmctl.vmfile.build import build as run_build
        from vmctl.vmfile.parse import parse

        path = file or context / "Vmfile"
        parsed = parse(read_text(str(path), "build file"), path=str(path), build_args=args)
        _ensure_image(app, parsed.base)
        run_build(app.session, parsed, context, ref, output=sys.stderr.buffer,
                  say=(lambda _line: None) if app.quiet else app.say)
    return build


def _ensure_image(app: App, ref: str) -> None:
    try:
        app.store.resolve(ref)
    except NotFoundError:
        from vmctl.core import distribution
        from vmctl.storage.refs import looks_like_path

        if "/" not in ref or looks_like_path(ref):
            raise
        app.say(f"{ref}: pulling")
        distribution.pull(app.session, ref, progress=app.byte_progress())


@click.command()
@_FILE
@click.option("--detach", "-d", is_flag=True, help="Return once the stack is up (else follow its consoles until Ctrl-C, then stop it).")
@click.option("--recreate", is_flag=True, help="Replace VMs whose definition in the file changed.")
@click.option("--remove-orphans", is_flag=True, help="Remove the stack's VMs the file no longer names.")
@click.option("--no-wait", is_flag=True, help="Do not wait for SSH and healthchecks beyond what depends_on asks.")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait for each VM.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@pass_app
def up(app: App, file, detach, recreate, remove_orphans, no_wait, timeout, as_json):
    """Create and start the stack's VMs (and networks) in dependency order; idempotent."""
    from vmctl.stack.up import up as run_up

    spec = load_spec(file)
    for vm in spec.vms.values():
        if vm.image:
            _ensure_image(app, vm.image)
    report = run_up(app.session, spec, recreate=recreate, timeout=timeout, wait=not no_wait, build=_builder(app),
                    remove_orphans=remove_orphans)
    if as_json or app.json:
        emit_json({"stack": spec.name, **report.to_json()})
    elif not app.quiet:
        for short in spec.order():
            click.echo(f"{spec.vm_name(short)}: {report.actions.get(short, 'unchanged')}")
    changed = [s for s, a in report.actions.items() if a == "changed"]
    if changed:
        app.say(f"vmctl: warning: changed in the file and kept as they were: {', '.join(changed)} "
                "(vmctl up --recreate replaces them)")
    if report.orphans:
        app.say(f"vmctl: warning: the stack's VMs {', '.join(report.orphans)} are no longer in the file "
                "(vmctl up --remove-orphans removes them)")
    if not detach and not (as_json or app.json):
        _foreground(app, spec)


def _foreground(app: App, spec) -> None:
    """Follow the consoles until Ctrl-C, then stop the stack's VMs (as ``docker compose up``)."""
    from vmctl.core import lifecycle
    from vmctl.core.instance import instance_dir
    from vmctl.core.records import SERIAL_LOG
    from vmctl.stack.logs import follow

    app.end_progress()
    click.echo("following the consoles; Ctrl-C stops the stack", err=True)
    try:
        if app.session.host is not None:   # the serial logs are on the host: read there
            from vmctl.core.hostplace import HostPlace
            from vmctl.stack.logs import follow_host

            follow_host(HostPlace(app.session), {s: spec.vm_name(s) for s in spec.vms}, click.echo)
        else:
            follow({s: instance_dir(app.session, spec.vm_name(s)) / SERIAL_LOG for s in spec.vms}, click.echo)
    except KeyboardInterrupt:
        click.echo("stopping...", err=True)
        for short in reversed(spec.order()):
            lifecycle.stop(app.session, spec.vm_name(short), 60)


@click.command()
@_FILE
@click.option("--volumes", "-v", is_flag=True, help="Also delete the host directories the stack's volumes name under its directory's .vmctl/.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def down(app: App, file, volumes, as_json):
    """Remove the stack's VMs (disks, seeds) and networks; images are kept."""
    from vmctl.stack.down import down as run_down

    spec = load_spec(file)
    report = run_down(app.session, spec.name)
    if volumes:
        report.volumes = _remove_volumes(spec)
    if as_json or app.json:
        emit_json({"stack": spec.name, **report.to_json(), "volumes_removed": getattr(report, "volumes", [])})
    elif not app.quiet:
        for name in report.vms + report.networks:
            click.echo(f"{name}: removed")


def _remove_volumes(spec) -> list[str]:
    """The stack's own volume directories (``.vmctl/volumes/*`` in its directory), never others."""
    base = spec.directory / ".vmctl" / "volumes"
    removed = []
    if base.is_dir() and not base.is_symlink():
        for d in sorted(base.iterdir()):
            shutil.rmtree(d) if d.is_dir() and not d.is_symlink() else d.unlink()
            removed.append(str(d))
    return removed


@click.command()
@_FILE
@click.option("--all", "-a", "show_all", is_flag=True, help="Outside a stack: show stopped VMs too.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True, help="Names only.")
@click.pass_context
def ps(ctx: click.Context, file, show_all, as_json, quiet):
    """List the stack's VMs (in a stack's directory or with -f); elsewhere, VMs as ls does."""
    from vmctl.stack.locate import find_file

    app: App = ctx.obj
    if file is None and find_file(Path.cwd()) is None:
        return show_listing(app, show_all=show_all, as_json=as_json, quiet=quiet)
    from vmctl.stack.status import rows as stack_rows

    spec = load_spec(file)
    rows = stack_rows(app.session, spec)
    if as_json or app.json:
        emit_json(rows)
    elif quiet:
        for r in rows:
            click.echo(r["name"])
    else:
        table([(r["vm"], r["name"], r["state"] + (f" ({r['health']})" if r["health"] else ""), r["image"] or "",
                ", ".join(r["ports"]), ", ".join(f"{n}={a}" for n, a in r["addresses"].items())) for r in rows],
              ["VM", "NAME", "STATE", "IMAGE", "PORTS", "ADDRESSES"])


def register(group: click.Group) -> None:
    for command in (up, down, ps):
        group.add_command(command)
